"""Plugins: packages that add task families and algorithms to the ``metajax`` command by
naming their modules as entry points of the group :data:`GROUP`. The registry imports them
(:func:`load`); the command's help reads their names and files without importing them, so this
module imports nothing but the standard library."""

from importlib.metadata import EntryPoint, entry_points

GROUP = "metajax.plugins"
"""The entry-point group of metajax's plugins."""

_loaded = False


class PluginError(ImportError):
    """A plugin named by an entry point of the group ``metajax.plugins`` that failed to load."""


def entry_points_of_plugins() -> list[EntryPoint]:
    """The installed plugins' entry points, by name."""
    return sorted(entry_points(group=GROUP), key=lambda entry_point: entry_point.name)


def load() -> None:
    """Imports the modules named by the entry points of the group ``metajax.plugins``, once.

    Raises:
      PluginError: naming the plugin, if one fails to load (and again at the next call).
    """
    global _loaded
    if _loaded:
        return
    for entry_point in entry_points(group=GROUP):
        try:
            entry_point.load()
        except Exception as error:
            raise PluginError(
                f"the metajax plugin {entry_point.name!r} ({entry_point.value}) failed to "
                f"load: {error}"
            ) from error
    _loaded = True
