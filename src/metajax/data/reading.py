"""The one place that reads the files of an image set, from a folder or a zip archive.

Whatever a file or an archive holds or claims, reading it ends in its bytes or in a
:class:`~metajax.data.image_set.DataError` that names the file (and the archive's member): a
damaged compressed stream, a wrong CRC-32, encryption, a compression method that Python does
not have, a truncated archive, a FIFO or device where an image should be, a folder or file
without read permission. No file is read past :data:`MAX_IMAGE_BYTES`, so memory stays
bounded by it, whatever size a member inflates to.
"""

import errno
import os
import stat
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from metajax.data.image_set import DataError

MAX_IMAGE_BYTES = 64 * 2**20
"""The largest image file read, 64 MiB: more than an uncompressed 4096 x 4096 RGBA image, and
far more than a few-shot learner's images (resized to at most a few hundred pixels a side)
need; a larger file is refused before it is read whole."""

_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
"""The compression methods Python's zipfile decompresses."""


def zip_entries(path: Path) -> list[tuple[str, bool]]:
    """The names of a zip's members (without a trailing ``/``) and whether each is a folder."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [(info.filename.rstrip("/"), info.is_dir()) for info in archive.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise DataError(
            f"'{path}' is not a zip archive ({error}); give a directory or a zip with one "
            "folder of images per class"
        ) from None


def read_zip_members(path: Path, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """Each named member's name and bytes, in order, from the zip ``path``."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise DataError(f"'{path}' could not be read as a zip archive ({error})") from None
    with archive:
        for name in names:
            yield name, _read_member(archive, path, name)


def _read_member(archive: zipfile.ZipFile, path: Path, name: str) -> bytes:
    where = f"the member '{name}' of '{path}'"
    info = archive.getinfo(name)
    if info.flag_bits & 0x1:
        raise DataError(f"{where} is encrypted; give an archive without a password")
    if info.compress_type not in _METHODS:
        raise DataError(
            f"{where} is compressed with method {info.compress_type} (deflate64, say), which "
            f"Python cannot decompress; re-create the archive with {', '.join(_METHODS.values())}"
            " compression (zip -r, or Python's zipfile)"
        )
    if info.file_size > MAX_IMAGE_BYTES:
        raise _too_large(where, info.file_size)
    try:
        with archive.open(info) as member:
            data = member.read(MAX_IMAGE_BYTES + 1)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError) as error:
        # zlib.error and lzma.LZMAError are subclasses of none of these: they are named below.
        raise DataError(f"{where} is damaged ({error}); replace the archive") from None
    except Exception as error:  # zlib.error, lzma.LZMAError, struct.error: a damaged stream
        raise DataError(
            f"{where} is damaged ({type(error).__name__}: {error}); replace the archive"
        ) from None
    if len(data) > MAX_IMAGE_BYTES:  # a member whose header understates its size
        raise _too_large(where, len(data))
    return data


def walk_folder(root: Path) -> list[tuple[str, bool]]:
    """The entries under ``root``, as paths relative to it, and whether each is a folder;
    hidden ones (a part starting with ``.``) left out. Folders linked to are followed, once."""

    def unreadable(error: OSError) -> None:
        raise _os_error(Path(error.filename or root), error, "folder")

    entries: list[tuple[str, bool]] = []
    seen = {_identity(root)}  # every folder walked or to be walked
    for folder, folders, files in os.walk(root, onerror=unreadable, followlinks=True):
        here = Path(folder)
        kept = []
        for name in sorted(folders):
            identity = _identity(here / name)
            if not name.startswith(".") and identity not in seen:  # not a link back, say
                seen.add(identity)
                kept.append(name)
                entries.append(((here / name).relative_to(root).as_posix(), True))
        folders[:] = kept
        for name in sorted(files):
            if not name.startswith("."):
                entries.append(((here / name).relative_to(root).as_posix(), False))
    return sorted(entries)


def _identity(folder: Path) -> tuple[int, int]:
    status = folder.stat()
    return status.st_dev, status.st_ino


def read_folder_file(path: Path) -> bytes:
    """The bytes of one image file of a folder: a regular file no larger than
    :data:`MAX_IMAGE_BYTES`, opened only once it is known to be one."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            kind = _kinds.get(stat.S_IFMT(status.st_mode), "not a regular file")
            raise DataError(
                f"'{path}' is {kind}, not an image file; remove it from the class folder"
            )
        if status.st_size > MAX_IMAGE_BYTES:
            raise _too_large(f"'{path}'", status.st_size)
        with open(path, "rb") as file:
            data = file.read(MAX_IMAGE_BYTES + 1)
    except OSError as error:
        raise _os_error(path, error, "file") from None
    if len(data) > MAX_IMAGE_BYTES:  # it grew while being read
        raise _too_large(f"'{path}'", len(data))
    return data


_kinds = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


def _too_large(where: str, size: int) -> DataError:
    return DataError(
        f"{where} is {size:,} bytes, more than the {MAX_IMAGE_BYTES:,} an image file may be "
        "(metajax.data.reading.MAX_IMAGE_BYTES); it is no image of a class folder: remove it"
    )


def _os_error(path: Path, error: OSError, kind: str) -> DataError:
    if error.errno in (errno.EACCES, errno.EPERM):
        fix = "chmod -R u+rX" if kind == "folder" else "chmod u+r"
        return DataError(
            f"permission denied: '{path}' (the {kind} cannot be read); give read permission "
            f"({fix} '{path}') or remove it"
        )
    return DataError(f"cannot read the {kind} '{path}' ({error.strerror or error})")
