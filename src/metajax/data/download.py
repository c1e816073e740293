"""Omniglot's official archives: downloaded, checked and unpacked, never left half done.

:func:`fetch` makes sure that each archive's folder is in a directory, fully unpacked
(``metajax data omniglot DIR`` calls it). For each archive, the first of these that applies:

1. its folder is already there: either metajax unpacked it (the folder holds a ``.complete``
   file with the archive's MD5), or someone unpacked it by hand (it holds
   ``Alphabet/character/*.png`` files; metajax cannot check such a folder and uses it as it is);
2. the archive itself is already there with the right MD5 (downloaded before, or by hand): it is
   unpacked;
3. otherwise it is downloaded, checked and unpacked. The archive is kept, next to its folder.

Atomicity: a download is written to a hidden ``.NAME.part`` file, renamed to ``NAME`` only once
its size and MD5 are right; an archive is unpacked into a hidden ``.metajax-unpack-*``
directory, its folder gets the ``.complete`` file last and is then renamed into place. So a
process stopped at any moment leaves every file and folder complete or absent, plus perhaps a
hidden one, which the next :func:`fetch` deletes.

Only the standard library downloads and unpacks (and ``tqdm``, a dependency anyway, shows the
progress): there are two files to fetch from one fixed place, and nothing to configure.
"""

import hashlib
import http.client
import os
import shlex
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath
from typing import NamedTuple

from tqdm import tqdm

from metajax._files import check_writable_folder

MARKER = ".complete"
"""The file that marks a folder metajax unpacked completely; it holds the archive's MD5."""

_UNPACK_PREFIX = ".metajax-unpack-"
_CHUNK_BYTES = 1 << 16


class Archive(NamedTuple):
    """A zip archive to download and unpack.

    Attributes:
      name: its file name in the destination directory, e.g. ``"images_background.zip"``.
      url: where to download it from.
      md5: the MD5 of its bytes, as 32 lowercase hexadecimal digits.
      folder: the one top folder it holds, which it unpacks to, e.g. ``"images_background"``.
    """

    name: str
    url: str
    md5: str
    folder: str


_OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
OMNIGLOT = (
    Archive(
        "images_background.zip",
        _OMNIGLOT_URL + "images_background.zip",
        "68d2efa1b9178cc56df9314c21c6e718",
        "images_background",
    ),
    Archive(
        "images_evaluation.zip",
        _OMNIGLOT_URL + "images_evaluation.zip",
        "6b91aef0f799c5bb55b94e3f2daec811",
        "images_evaluation",
    ),
)
"""Omniglot's background and evaluation alphabets, from the dataset's own repository, with the
MD5 sums that torchvision checks."""


class DownloadError(Exception):
    """Data that could not be downloaded or unpacked; the message says why and what to do."""


def fetch(
    dest: str | os.PathLike[str],
    archives: Sequence[Archive] = OMNIGLOT,
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> list[Path]:
    """Makes sure that each archive is unpacked in ``dest``, downloading only what is missing.

    Example::

      background, evaluation = fetch("data/omniglot")
      # data/omniglot/images_background/Alphabet_of_the_Magi/character01/0709_01.png, ...

    Args:
      dest: the directory to put the archives and their folders in; created if missing.
      archives: the archives to fetch; Omniglot's two by default.
      progress: whether to show each download's progress (bytes received) on stderr.
      timeout: seconds to wait for a server to answer, and then for each next piece of data.

    Returns:
      The unpacked folders, ``dest/<folder>`` of each archive, in the order of ``archives``.

    Raises:
      DownloadError: if an archive could not be downloaded (no network, an HTTP error, a
        truncated download, a wrong MD5; the message then says which files to download by hand
        and where to put them), if a file or folder already in ``dest`` is not what its name
        says, or if an archive is not a zip file or has members outside its folder.
      FolderError: if ``dest`` is empty, lies under a file, or cannot be written.
    """
    if os.path.isfile(dest):
        raise DownloadError(f"'{dest}' is a file; choose a directory to put the data in")
    check_writable_folder(dest)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _remove_partial(dest, archives)
    for archive in archives:
        if _is_unpacked(dest, archive, archives):
            continue
        path = dest / archive.name
        if path.exists():
            _check_placed(path, archive, archives)
        else:
            _download(dest, archive, archives, progress=progress, timeout=timeout)
        _unpack(path, archive, archives)
    return [dest / archive.folder for archive in archives]


def _remove_partial(dest: Path, archives: Sequence[Archive]) -> None:
    """Deletes what an earlier fetch left when it was killed (only names of its own)."""
    for entry in dest.glob(_UNPACK_PREFIX + "*"):
        shutil.rmtree(entry)
    for archive in archives:
        _part_path(dest, archive).unlink(missing_ok=True)


def _part_path(dest: Path, archive: Archive) -> Path:
    return dest / f".{archive.name}.part"


def _is_unpacked(dest: Path, archive: Archive, archives: Sequence[Archive]) -> bool:
    """Whether ``archive``'s folder is in ``dest``; refuses a folder that is not its unpacking."""
    folder = dest / archive.folder
    if not folder.exists():
        return False
    marker = folder / MARKER
    if marker.is_file():
        found = marker.read_text().strip()
        if found == archive.md5:
            return True
        raise DownloadError(
            f"'{folder}' was unpacked from an archive with MD5 {found}, not from "
            f"{archive.name} (MD5 {archive.md5}); delete it, then {_again(dest, archives)}"
        )
    if folder.is_dir() and any(folder.glob("*/*/*.png")):
        return True
    raise DownloadError(
        f"'{folder}' exists but does not hold what {archive.name} unpacks to "
        f"({archive.folder}/Alphabet/character/*.png files); delete or move it, then "
        f"{_again(dest, archives)}"
    )


def _check_placed(path: Path, archive: Archive, archives: Sequence[Archive]) -> None:
    """Refuses an archive found in the destination whose MD5 is not the expected one."""
    with open(path, "rb") as file:
        found = hashlib.file_digest(file, _md5).hexdigest()
    if found != archive.md5:
        raise DownloadError(
            f"'{path}' has MD5 {found}, not {archive.md5}: it is damaged or another file. "
            f"Delete it (metajax then downloads it) or replace it with {archive.url}, then "
            f"{_again(path.parent, archives)}"
        )


def _md5() -> "hashlib._Hash":
    # MD5 identifies files here, it protects nothing: allowed where FIPS mode forbids MD5.
    return hashlib.md5(usedforsecurity=False)


def _download(
    dest: Path, archive: Archive, archives: Sequence[Archive], *, progress: bool, timeout: float
) -> None:
    """Downloads ``archive`` to ``dest/<name>``, or leaves no file if it is not all there."""
    part = _part_path(dest, archive)
    try:
        try:
            md5, received, announced = _stream(archive, part, progress, timeout)
        except (
            urllib.error.URLError,
            http.client.HTTPException,
            ConnectionError,
            TimeoutError,
        ) as error:
            if isinstance(error, urllib.error.HTTPError):
                error.close()  # it holds the connection, with the error page still unread
            raise DownloadError(
                f"could not download {archive.url} ({_reason(error)}); {_by_hand(dest, archives)}"
            ) from None
        if announced is not None and received != announced:
            raise DownloadError(
                f"the download of {archive.url} stopped after {received} of its {announced} "
                f"bytes; {_by_hand(dest, archives)}"
            )
        if md5 != archive.md5:
            raise DownloadError(
                f"the download of {archive.url} has MD5 {md5}, not the expected {archive.md5}: "
                f"it was damaged on the way or the file on the server changed; "
                f"{_by_hand(dest, archives)}"
            )
        os.replace(part, dest / archive.name)
    finally:
        part.unlink(missing_ok=True)


def _stream(
    archive: Archive, part: Path, progress: bool, timeout: float
) -> tuple[str, int, int | None]:
    """Writes the bytes at ``archive.url`` to ``part``.

    Returns:
      Their MD5, their number, and the number the server announced (``None`` if it did not).
    """
    with urllib.request.urlopen(archive.url, timeout=timeout) as response:
        length = response.headers.get("Content-Length", "")
        announced = int(length) if length.isdigit() else None
        md5 = _md5()
        received = 0
        with (
            open(part, "wb") as file,
            tqdm(
                total=announced,
                desc=archive.name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not progress,
            ) as bar,
        ):
            # A connection closed early ends this loop like a complete download does;
            # comparing `received` with `announced` tells them apart.
            while chunk := response.read(_CHUNK_BYTES):
                md5.update(chunk)
                file.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    return md5.hexdigest(), received, announced


def _reason(error: Exception) -> str:
    # A URLError's own text wraps its reason in "<urlopen error ...>"; an HTTPError's is fine.
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _by_hand(dest: Path, archives: Sequence[Archive]) -> str:
    """What to do instead: download the archives not yet in ``dest`` by hand."""
    missing = [
        archive
        for archive in archives
        if not (dest / archive.folder).exists() and not (dest / archive.name).exists()
    ]
    urls = " and ".join(archive.url for archive in missing)
    them = "it" if len(missing) == 1 else "them"
    return (
        f"download {urls} by hand and put {them}, unpacked or not, in '{dest}', then "
        f"{_again(dest, archives)}"
    )


def _again(dest: Path, archives: Sequence[Archive]) -> str:
    if tuple(archives) == OMNIGLOT:
        return f"run `metajax data omniglot {shlex.quote(str(dest))}` again"
    return "call fetch() again"


def _unpack(path: Path, archive: Archive, archives: Sequence[Archive]) -> None:
    """Unpacks ``path`` so that ``archive``'s folder appears complete, or not at all."""
    dest = path.parent
    temporary = Path(tempfile.mkdtemp(prefix=_UNPACK_PREFIX, dir=dest))
    try:
        try:
            with zipfile.ZipFile(path) as zip_file:
                members = zip_file.infolist()
                for member in members:
                    if _escapes(member.filename):
                        raise DownloadError(
                            f"'{path}' holds a member '{member.filename}' that would be "
                            f"written outside '{dest}', though its MD5 is the expected "
                            f"{archive.md5}; refusing to unpack it: the archive's url or md5 "
                            "is wrong"
                        )
                for member in members:
                    zip_file.extract(member, temporary)
        except zipfile.BadZipFile as error:
            raise DownloadError(
                f"'{path}' is not a valid zip file ({error}), though its MD5 is the expected "
                f"{archive.md5}: the archive's url or md5 is wrong"
            ) from None
        unpacked = temporary / archive.folder
        if not unpacked.is_dir():
            raise DownloadError(
                f"'{path}' holds no folder '{archive.folder}', though its MD5 is the expected "
                f"{archive.md5}: the archive's folder is wrong"
            )
        (unpacked / MARKER).write_text(archive.md5 + "\n")
        os.replace(unpacked, dest / archive.folder)
    finally:
        shutil.rmtree(temporary)


def _escapes(name: str) -> bool:
    """Whether a zip member's name is absolute or climbs out with ``..`` (a "zip slip")."""
    # Windows paths understand both separators and drive letters, so this catches every form.
    path = PureWindowsPath(name)
    return bool(path.drive or path.root) or ".." in path.parts
