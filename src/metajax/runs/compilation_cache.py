"""JAX's persistent compilation cache, so that a program compiled by one run is loaded, not
compiled again, by the next run that needs it (the same config, say, or its evaluation).

The ``metajax`` command turns it on by default (:func:`enable_compilation_cache`), in
``compiled/`` of metajax's cache folder (``$METAJAX_CACHE``, else ``$XDG_CACHE_HOME/metajax``,
else ``~/.cache/metajax``); ``METAJAX_COMPILATION_CACHE=DIR`` moves it, and ``=off`` turns it
off. A cache that JAX was already told to use (``JAX_COMPILATION_CACHE_DIR``, or
``jax_compilation_cache_dir`` in code) is left as it is. JAX keys each entry by the program,
its compile options, the device and the versions of jax and jaxlib, so a changed program or an
upgrade compiles afresh. The cache holds at most :data:`MAX_BYTES`, the least recently used
entries evicted first, under a file lock, so processes that share it never read an entry
another is writing. An entry that cannot be read (damaged, or cut short by a killed process)
costs one compilation: JAX warns and compiles, and :func:`remove_unreadable` deletes the entry
so that the next run writes it anew.
"""

import contextlib
import glob
import os
import re
from pathlib import Path

import jax

from metajax._files import cache_dir, check_writable_folder

MAX_BYTES = 2 * 2**30
"""The most the compilation cache holds on disk, 2 GiB."""

_OFF = ("off", "0", "false", "no", "none")
UNREADABLE = re.compile(r"Error reading persistent compilation cache entry for '([^']+)'")
"""What JAX warns when an entry cannot be read; the group is the entry's program name."""


def default_dir() -> Path | None:
    """The compilation cache's folder by the environment; ``None`` if it is turned off."""
    chosen = os.environ.get("METAJAX_COMPILATION_CACHE")
    if chosen is None:
        return cache_dir() / "compiled"
    if chosen.strip().lower() in (*_OFF, ""):
        return None
    return Path(chosen)


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache for this process, before its first
    compilation.

    Args:
      path: the cache's folder; by default :func:`default_dir`'s.

    Returns:
      The folder in use: JAX's own, if one was set already; ``None`` if the cache is off.

    Raises:
      FolderError: if the folder cannot be created or written (the cache is then left off).
    """
    configured = _configured_dir()
    if configured:
        return Path(configured)
    folder = Path(path) if path is not None else default_dir()
    if folder is None:
        return None
    check_writable_folder(folder)  # JAX would warn of every entry instead, and compile them
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every program, however quick to compile: a run's dozen small ones add up to seconds.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)  # LRU, under a file lock
    return folder


def remove_unreadable(warning: str) -> Path | None:
    """If ``warning`` is JAX's that a cache entry could not be read, deletes the entries of
    that program (JAX names an entry ``<program>-<hash>-cache``) and returns the folder."""
    found = UNREADABLE.search(warning)
    folder = _configured_dir()
    if found is None or not folder:
        return None
    for entry in Path(folder).glob(f"{glob.escape(found.group(1))}-*"):
        # Another process may have removed it, or the folder be read-only: compiled again.
        with contextlib.suppress(OSError):
            entry.unlink()
    return Path(folder)


def _configured_dir() -> str | None:
    """The cache folder JAX uses now, if any (a config option JAX defines at run time)."""
    return jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]
