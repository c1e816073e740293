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
from typing import TYPE_CHECKING, Any, TypeVar

from metajax._validation import OptionError
from metajax.options import Options, declared

if TYPE_CHECKING:
    from metajax.algorithms.algorithm import Algorithm
    from metajax.tasks.family import TaskFamily

PLUGIN_GROUP = "metajax.plugins"

_FAMILIES: dict[str, type["TaskFamily"]] = {}
_ALGORITHMS: dict[str, type["Algorithm"]] = {}
_plugins_loaded = False

T = TypeVar("T", bound=type[Options])


def _register(table: dict[str, Any], cls: T, what: str, reserved: set[str]) -> T:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name != name.strip() or name.startswith("-"):
        raise ValueError(f"a {what} needs a class attribute `name`, a plain word; got {name!r}")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{what} {name!r}: {cls.__name__} must be a dataclass")
    known = table.get(name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"a {what} named {name!r} is already registered ({known.__qualname__})")
    clashes = sorted(set(declared(cls)) & reserved)
    if clashes:
        raise ValueError(
            f"{what} {name!r} declares {', '.join(clashes)}, which the training settings own; "
            "rename them"
        )
    table[name] = cls
    return cls


def _training_settings() -> set[str]:
    from metajax.config import TrainSettings  # the config module imports this one

    return set(declared(TrainSettings))


def register_family(cls: T) -> T:
    """Registers a task family, a :class:`~metajax.TaskFamily` dataclass, under its ``name``.

    Its settings may not share names with the training settings. Registering the same class
    again (a module imported twice) changes nothing.

    Raises:
      ValueError: for a missing name, a name already taken, or a clash of settings.
    """
    return _register(_FAMILIES, cls, "task family", _training_settings())


def register_algorithm(cls: T) -> T:
    """Registers an algorithm, an :class:`~metajax.Algorithm` dataclass, under its ``name``.

    Its hyper-parameters may not share names with the training settings, and a name it shares
    with another algorithm's hyper-parameter must be the same kind of setting (both step sizes,
    say), since the command line has one flag for both.

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
    return _register(_ALGORITHMS, cls, "algorithm", _training_settings())


class PluginError(ImportError):
    """A plugin named by an entry point of the group ``metajax.plugins`` that failed to load."""


def load_plugins() -> None:
    """Imports the modules named by the entry points of the group ``metajax.plugins``, once.

    Raises:
      PluginError: naming the plugin, if one fails to load.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry_point in entry_points(group=PLUGIN_GROUP):
        try:
            entry_point.load()
        except Exception as error:
            raise PluginError(
                f"the metajax plugin {entry_point.name!r} ({entry_point.value}) failed to "
                f"load: {error}"
            ) from error


def families() -> dict[str, type["TaskFamily"]]:
    """The registered task families by name, in the order they were registered."""
    load_plugins()
    return dict(_FAMILIES)


def algorithms() -> dict[str, type["Algorithm"]]:
    """The registered algorithms by name, in the order they were registered."""
    load_plugins()
    return dict(_ALGORITHMS)


def family(name: Any) -> type["TaskFamily"]:
    """The task family registered as ``name``.

    Raises:
      OptionError: naming ``family`` and the registered names, if there is none.
    """
    known = families()
    if not isinstance(name, str) or name not in known:
        raise OptionError("family", f"one of {sorted(known)}", name)
    return known[name]


def algorithm(name: Any) -> type["Algorithm"]:
    """The algorithm registered as ``name``.

    Raises:
      OptionError: naming ``algorithm`` and the registered names, if there is none.
    """
    known = algorithms()
    if not isinstance(name, str) or name not in known:
        raise OptionError("algorithm", f"one of {sorted(known)}", name)
    return known[name]
