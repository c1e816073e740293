"""Decoded image sets, with their content hashes, cached as ``.npz`` files, so that a set is
decoded and hashed once.

The cache lives in ``$METAJAX_CACHE``, else ``$XDG_CACHE_HOME/metajax``, else
``~/.cache/metajax``. A set's file is named by a hash of its source's files, sizes and
modification times and of the decoding settings, so a changed source or setting is decoded
afresh; a damaged or unwritable cache only costs a decoding.
"""

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from metajax._files import cache_dir, replace_atomically
from metajax.data.image_set import ImageSet
from metajax.data.source import ImageSource

_CACHE_FORMAT = 3  # bump when the decoding or what is stored changes: old caches are not used


def cache_file(source: ImageSource, settings: dict[str, Any]) -> Path:
    """The cache file of a source's decoded images: a hash of the files and the settings."""
    if source.path.is_dir():
        names = [name for files in source.files.values() for name in files]
        stats = [(name, *_stat(source.path / name)) for name in names]
    else:
        stats = [(str(source.path.resolve()), *_stat(source.path))]
    key = json.dumps([_CACHE_FORMAT, str(source.path.resolve()), stats, settings])
    return cache_dir() / "images" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npz"


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def write_cache(path: Path, image_set: ImageSet) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(
            path,
            lambda file: np.savez(
                file,
                images=image_set.images,
                labels=image_set.labels,
                classes=np.asarray(image_set.classes),
                groups=np.asarray(image_set.groups),
                hashes=image_set.hashes,
            ),
        )
    except OSError:
        pass  # a read-only cache directory only costs the next load its decoding


def read_cache(path: Path) -> ImageSet | None:
    """The image set cached in ``path``, or ``None`` if there is none or it is damaged."""
    if not path.exists():
        return None
    try:
        with np.load(path) as saved:
            return ImageSet(
                images=saved["images"],
                labels=saved["labels"],
                classes=tuple(str(c) for c in saved["classes"]),
                groups=tuple(str(g) for g in saved["groups"]),
                hashes=saved["hashes"],
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # a damaged cache file is decoded again and replaced
