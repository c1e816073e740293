"""Writing files: whole or not at all (written under a temporary name, flushed to disk, then
renamed over the old one), and into folders checked before any work; and where metajax keeps
its caches. It imports no other part of metajax."""

import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def cache_dir() -> Path:
    """Where metajax keeps what it can make again (decoded images, compiled programs):
    ``$METAJAX_CACHE``, else ``$XDG_CACHE_HOME/metajax``, else ``~/.cache/metajax``."""
    if "METAJAX_CACHE" in os.environ:
        return Path(os.environ["METAJAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "metajax"


def write_synced(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Creates ``path`` with ``write(file)`` and flushes and fsyncs it before returning."""
    with open(path, "wb") as file:
        _write_and_sync(file, write)


def _write_and_sync(file: BinaryIO, write: Callable[[BinaryIO], object]) -> None:
    write(file)
    file.flush()
    os.fsync(file.fileno())


def replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Writes ``path`` with ``write(file)``: readers see the old file or the new one, whole,
    and two processes writing it at once each rename a file of their own over it. A write that
    fails leaves the old file and no temporary one."""
    # A name of its own in the same folder (a rename across file systems is not atomic),
    # created with the umask's permissions, as open() creates the file it replaces.
    temporary = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:
            _write_and_sync(file, write)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class FolderError(OSError):
    """A folder that output cannot be written to; ``reason`` says why, after its path."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"'{self.path}' {reason}")


def check_writable_folder(path: str | os.PathLike) -> None:
    """Checks, before any work, that a folder can be written at ``path``: an existing folder
    that takes new files, or a missing one whose nearest existing ancestor is a folder that
    takes new folders. Creates nothing (a probe file, if any, is removed at once).

    Raises:
      FolderError: if ``path`` is empty, is a file, lies under a file, or cannot be written.
    """
    if not os.fspath(path).strip():
        raise FolderError(path, "is an empty name; name a folder")
    path = Path(path)
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent  # Path("x").parent is Path("."), which exists
    if ancestor == path and not path.is_dir():
        raise FolderError(path, "is a file, not a folder; choose a folder")
    if not ancestor.is_dir():
        raise FolderError(path, f"cannot be created: '{ancestor}' is a file, not a folder")
    try:  # os.access would say yes to root on a read-only file system, or in /proc
        tempfile.TemporaryFile(dir=ancestor).close()
    except OSError as error:
        where = "" if ancestor == path else f" in '{ancestor}'"
        verb = "cannot be written" if ancestor == path else "cannot be created"
        raise FolderError(path, f"{verb}{where}: {error.strerror or error}") from None
