"""The task families and algorithms metajax knows, by name.

Configs, the run machinery and the command line find families and algorithms here and nowhere
else, so a new one is a module that registers itself:

- a task family: a :class:`~metajax.TaskFamily` dataclass decorated with
  :func:`register_family`;
- an algorithm: an :class:`~metajax.Algorithm` dataclass decorated with
  :func:`register_algorithm`.

metajax registers its own when it is imported. A package of yours can make the ``metajax``
command load its modules by naming them as entry points of the group ``metajax.plugins`` (in
``pyproject.toml``: ``[project.entry-points."metajax.plugins"] mine = "mypackage.tasks"``).
"""

import dataclasses
from importlib.metadata import entry_points
from typing import Any, TypeVar

from metajax._validation import OptionError
from metajax.config.algorithm import Algorithm
from metajax.config.family import TaskFamily
from metajax.config.training_settings import TrainSettings
from metajax.options import declared

PLUGIN_GROUP = "metajax.plugins"

COMMAND_LINE_NAMES = frozenset(
    {
        *("preset", "algorithm", "resume", "config", "help", "version"),
        *("out", "name", "overwrite", "devices", "tensorboard", "no_plots", "no_progress"),
        *("distributed", "coordinator_address", "num_processes", "process_id"),
        "coordinator_timeout",
    }
)
"""The names of the command line's own options of ``metajax train`` (``--preset``, ``--out``,
``--num-processes``, ...), which no setting may take: every setting becomes a flag of its own
name. The command line's tests check that these are its options."""

_FAMILIES: dict[str, type[TaskFamily]] = {}
_ALGORITHMS: dict[str, type[Algorithm]] = {}
_plugins_loaded = False

T = TypeVar("T", bound=type[TaskFamily] | type[Algorithm])
F = TypeVar("F", bound=type[TaskFamily])
A = TypeVar("A", bound=type[Algorithm])


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _register(table: dict[str, Any], cls: T, what: str, reserved: dict[str, str]) -> T:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name != name.strip() or name.startswith("-"):
        raise ValueError(f"a {what} needs a class attribute `name`, a plain word; got {name!r}")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{what} {name!r}: {cls.__name__} must be a dataclass")
    known = table.get(name)
    if known is not None and _origin(known) != _origin(cls):  # the same class, imported again
        raise ValueError(f"a {what} named {name!r} is already registered ({_origin(known)})")
    undeclared = [f.name for f in dataclasses.fields(cls) if f.name not in declared(cls)]
    if undeclared:
        raise ValueError(
            f"{what} {name!r}: declare {', '.join(undeclared)} with metajax.options (integer, "
            "number, flag, ...), so that configs and the command line know them"
        )
    for field in declared(cls):
        if field in reserved:
            raise ValueError(
                f"{what} {name!r} declares {field}, which {reserved[field]}; rename it"
            )
    table[name] = cls
    return cls


def _reserved(others: dict[str, Any], what: str) -> dict[str, str]:
    """The setting names a new family or algorithm may not take, and who has them."""
    reserved = {field: "the training settings own" for field in declared(TrainSettings)}
    reserved.update({field: "the command line uses" for field in COMMAND_LINE_NAMES})
    for other_name, other in others.items():
        for field in declared(other):
            reserved.setdefault(field, f"{what} {other_name!r} declares too")
    return reserved


def register_family(cls: F) -> F:
    """Registers a task family, a :class:`~metajax.TaskFamily` dataclass, under its ``name``.

    Every field must be declared with :mod:`metajax.options`, and no name may be one of the
    training settings', an algorithm's hyper-parameters' or the command line's own
    (``preset``, ``out``, ...). Registering the same class again (a module imported twice)
    changes nothing.

    Raises:
      ValueError: for a missing name, a name already taken, or a clash of settings.
    """
    return _register(_FAMILIES, cls, "task family", _reserved(_ALGORITHMS, "algorithm"))


def register_algorithm(cls: A) -> A:
    """Registers an algorithm, an :class:`~metajax.Algorithm` dataclass, under its ``name``.

    Every field must be declared with :mod:`metajax.options`, and no name may be one of the
    training settings', a task family's or the command line's own. A name it shares with
    another algorithm's hyper-parameter must be the same kind of setting (both step sizes, say),
    since the command line has one flag for both.

    Raises:
      ValueError: for a missing name, a name already taken, or a clash of settings.
    """
    for other in _ALGORITHMS.values():
        theirs = declared(other)
        for field, kind in declared(cls).items():
            if field in theirs and type(theirs[field]) is not type(kind):
                raise ValueError(
                    f"algorithm {getattr(cls, 'name', '?')!r} declares {field} as "
                    f"{type(kind).__name__}, but "
                    f"algorithm {other.name!r} declares it as {type(theirs[field]).__name__}"
                )
    return _register(_ALGORITHMS, cls, "algorithm", _reserved(_FAMILIES, "task family"))


class PluginError(ImportError):
    """A plugin named by an entry point of the group ``metajax.plugins`` that failed to load."""


def load_plugins() -> None:
    """Imports the modules named by the entry points of the group ``metajax.plugins``, once.

    Raises:
      PluginError: naming the plugin, if one fails to load (and again at the next call).
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    for entry_point in entry_points(group=PLUGIN_GROUP):
        try:
            entry_point.load()
        except Exception as error:
            raise PluginError(
                f"the metajax plugin {entry_point.name!r} ({entry_point.value}) failed to "
                f"load: {error}"
            ) from error
    _plugins_loaded = True


def families() -> dict[str, type[TaskFamily]]:
    """The registered task families by name, in the order they were registered."""
    load_plugins()
    return dict(_FAMILIES)


def algorithms() -> dict[str, type[Algorithm]]:
    """The registered algorithms by name, in the order they were registered."""
    load_plugins()
    return dict(_ALGORITHMS)


def _lookup(known: dict[str, Any], option: str, name: Any) -> Any:
    if not isinstance(name, str) or name not in known:
        raise OptionError(option, f"one of {sorted(known)}", name)
    return known[name]


def family(name: Any) -> type[TaskFamily]:
    """The task family registered as ``name``.

    Raises:
      OptionError: naming ``family`` and the registered names, if there is none.
    """
    return _lookup(families(), "family", name)


def algorithm(name: Any) -> type[Algorithm]:
    """The algorithm registered as ``name``.

    Raises:
      OptionError: naming ``algorithm`` and the registered names, if there is none.
    """
    return _lookup(algorithms(), "algorithm", name)
