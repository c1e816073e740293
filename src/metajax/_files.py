"""Files written so that an interrupted write never leaves half a file: written whole under a
temporary name, flushed to disk, then renamed over the old one. It imports no other part of
metajax."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_synced(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Creates ``path`` with ``write(file)`` and flushes and fsyncs it before returning."""
    with open(path, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())


def replace_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Writes ``path`` with ``write(file)``: readers see the old file or the new one, whole."""
    temporary = path.with_name(path.name + ".tmp")
    write_synced(temporary, write)
    os.replace(temporary, path)
