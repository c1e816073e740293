"""The task families and algorithms metajax knows, by name.

Configs, the run machinery and the command line find families and algorithms here and nowhere
else, so a new one is a module that registers itself:

- a task family: a :class:`~metajax.TaskFamily` dataclass decorated with
  :func:`register_family`;
- an algorithm: an :class:`~metajax.Algorithm` dataclass decorated with
  :func:`register_algorithm`.

metajax's own (:data:`BUILT_IN`) are imported by module name, as plugins are, when the
registry is first asked for its names or before a family or algorithm of yours is registered
(so that a clash with one of them is found there). A package of yours can make the ``metajax``
command load its modules by naming them as entry points of the group ``metajax.plugins`` (in
``pyproject.toml``: ``[project.entry-points."metajax.plugins"] mine = "mypackage.tasks"``; see
:mod:`metajax.config.plugins`).
"""

import dataclasses
import importlib
from typing import Any, TypeVar

from metajax._validation import OptionError
from metajax.config import plugins
from metajax.config.algorithm import Algorithm
from metajax.config.family import TaskFamily
from metajax.config.training_settings import TrainSettings
from metajax.options import declared

BUILT_IN = ("metajax.algorithms", "metajax.tasks")
"""The modules that register metajax's own algorithms and task families, in that order."""

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
_built_in_loaded = False

T = TypeVar("T", bound=type[TaskFamily] | type[Algorithm])
F = TypeVar("F", bound=type[TaskFamily])
A = TypeVar("A", bound=type[Algorithm])


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _load_built_in() -> None:
    global _built_in_loaded
    if not _built_in_loaded:
        _built_in_loaded = True  # first: their modules register while they are imported
        for module in BUILT_IN:
            importlib.import_module(module)


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


def _before_registering(cls: type) -> None:
    # Not for metajax's own: one imported on its own (metajax.tasks.sinusoid, say) is
    # registering while its package, which the built-in modules import, is half imported.
    if not cls.__module__.startswith("metajax."):
        _load_built_in()


def register_family(cls: F) -> F:
    """Registers a task family, a :class:`~metajax.TaskFamily` dataclass, under its ``name``.

    Every field must be declared with :mod:`metajax.options`, and no name may be one of the
    training settings', an algorithm's hyper-parameters' or the command line's own
    (``preset``, ``out``, ...). Registering the same class again (a module imported twice)
    changes nothing.

    Raises:
      ValueError: for a missing name, a name already taken, or a clash of settings.
    """
    _before_registering(cls)
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
    _before_registering(cls)
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


def _load_all() -> None:
    """Registers metajax's own families and algorithms, then the plugins'
    (:func:`metajax.config.plugins.load`), once.

    Raises:
      PluginError: naming the plugin, if one fails to load (and again at the next call).
    """
    _load_built_in()
    plugins.load()


def families() -> dict[str, type[TaskFamily]]:
    """The registered task families by name, in the order they were registered."""
    _load_all()
    return dict(_FAMILIES)


def algorithms() -> dict[str, type[Algorithm]]:
    """The registered algorithms by name, in the order they were registered."""
    _load_all()
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
