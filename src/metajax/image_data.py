"""Image sets with one folder per class, from a directory or a zip, decoded once and cached.

A *class folder* is a folder that holds image files; its path under the root is the class's
name and the folder above it is its *group*. Omniglot's ``alphabet/characterNN/*.png`` gives
one class per character, grouped by alphabet; a plain ``class/*.jpg`` layout gives classes
whose group is the root. Images are decoded with Pillow, converted to grey or RGB, resized to a
square with Lanczos filtering and kept as ``uint8``; the decoded set is cached as ``.npz`` (in
``$METAJAX_CACHE``, else ``$XDG_CACHE_HOME/metajax``, else ``~/.cache/metajax``) under a key of
the source's files, sizes and modification times and the decoding settings, so the second load
reads one file.
"""

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from metajax.run_dir import replace_atomically

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
"""File name endings read as images (in any letter case); other files are ignored."""

_CACHE_FORMAT = 1  # bump when the decoding changes, so that old caches are not used


class DataError(ValueError):
    """Image data that cannot be used; the message names the file or class and the fix."""


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSet:
    """Decoded images with their classes.

    Attributes:
      images: ``uint8 [num_images, size, size, channels]``, sorted by class.
      labels: ``int32 [num_images]``, each image's index into ``classes``.
      classes: the class names (class folders' paths under the root), sorted.
      groups: each class's group (the name of its class folder's parent; ``""`` at the root).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    groups: tuple[str, ...]

    def class_sizes(self) -> np.ndarray:
        """``int [num_classes]``: the number of images of each class."""
        return np.bincount(self.labels, minlength=len(self.classes))

    def subset(self, class_indices: Iterable[int]) -> "ImageSet":
        """The images of the given classes (in that order), relabelled ``0..len - 1``."""
        chosen = list(class_indices)
        parts = [np.flatnonzero(self.labels == c) for c in chosen]
        order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        labels = np.repeat(np.arange(len(chosen), dtype=np.int32), [len(p) for p in parts])
        return ImageSet(
            images=self.images[order],
            labels=labels,
            classes=tuple(self.classes[c] for c in chosen),
            groups=tuple(self.groups[c] for c in chosen),
        )


@dataclasses.dataclass(frozen=True)
class _Source:
    """The image files of a directory or zip, by class folder."""

    path: Path
    files: dict[str, list[str]]  # class name -> file names (paths under the root), sorted

    def read(self, name: str) -> bytes:
        if self.path.is_dir():
            return (self.path / name).read_bytes()
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(name)

    def read_all(self) -> Iterator[tuple[str, bytes]]:
        names = [name for files in self.files.values() for name in files]
        if self.path.is_dir():
            for name in names:
                yield name, (self.path / name).read_bytes()
            return
        with zipfile.ZipFile(self.path) as archive:
            for name in names:
                yield name, archive.read(name)


def load_image_set(
    path: str | os.PathLike,
    *,
    image_size: int,
    channels: int = 1,
    invert: bool = False,
    cache: bool = True,
) -> ImageSet:
    """Loads every image of a one-folder-per-class image set.

    Args:
      path: a directory or a zip archive.
      image_size: the side of the square images are resized to, in pixels.
      channels: 1 for grey, 3 for RGB.
      invert: store ``255 - value``, so that dark strokes on white (Omniglot) become bright on
        black, as the MAML paper's code does.
      cache: read and write the decoded set in the cache directory.

    Raises:
      DataError: the path is missing or not a zip; it holds no class folders; a class folder
        is empty; an image cannot be decoded. The message names the file or folder.
    """
    source = _scan(Path(path))
    settings = {"image_size": image_size, "channels": channels, "invert": invert}
    cache_file = _cache_file(source, settings) if cache else None
    if cache_file is not None and cache_file.exists():
        try:
            with np.load(cache_file) as saved:
                return ImageSet(
                    images=saved["images"],
                    labels=saved["labels"],
                    classes=tuple(str(c) for c in saved["classes"]),
                    groups=tuple(str(g) for g in saved["groups"]),
                )
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged cache file is decoded again and replaced
    classes = sorted(source.files)
    labels = np.repeat(
        np.arange(len(classes), dtype=np.int32), [len(source.files[c]) for c in classes]
    )
    images = np.stack(
        [
            decode_image(data, f"{source.path}/{name}", image_size, channels, invert)
            for name, data in source.read_all()
        ]
    )
    image_set = ImageSet(images, labels, tuple(classes), tuple(_group(c) for c in classes))
    if cache_file is not None:
        _write_cache(cache_file, image_set)
    return image_set


def decode_image(
    data: bytes, name: str, image_size: int, channels: int = 1, invert: bool = False
) -> np.ndarray:
    """One image file's bytes as ``uint8 [image_size, image_size, channels]``.

    Raises:
      DataError: if Pillow cannot decode it; ``name`` says which file it was.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            # Converting first makes Lanczos apply to 1-bit images too (Pillow resizes those
            # with the nearest pixel only).
            converted = image.convert("L" if channels == 1 else "RGB")
            resized = converted.resize((image_size, image_size), Image.Resampling.LANCZOS)
            array = np.asarray(resized, dtype=np.uint8).reshape(image_size, image_size, channels)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(
            f"cannot read image '{name}' ({error}); replace or remove the file"
        ) from None
    return 255 - array if invert else array


def load_folder_images(
    path: str | os.PathLike, *, image_size: int, channels: int = 1, invert: bool = False
) -> tuple[list[str], np.ndarray]:
    """The images directly in the folder ``path``, sorted by name: their file names and
    ``uint8 [num_images, image_size, image_size, channels]``.

    Raises:
      DataError: if the folder is missing or holds no images, or an image cannot be decoded.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"'{folder}' is not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p.name))
    if not files:
        raise DataError(
            f"'{folder}' holds no images (files ending in {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    images = [decode_image(p.read_bytes(), str(p), image_size, channels, invert) for p in files]
    return [p.name for p in files], np.stack(images)


def _is_image(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _group(class_name: str) -> str:
    parent = PurePosixPath(class_name).parent
    return "" if str(parent) == "." else parent.name


def _scan(path: Path) -> _Source:
    """Finds the class folders of a directory or zip, with their image files."""
    if not path.exists():
        raise DataError(
            f"the image data '{path}' does not exist; give a directory or a zip with one folder "
            "of images per class (metajax data omniglot DIR downloads Omniglot)"
        )
    if path.is_dir():
        entries = [
            (p.relative_to(path).as_posix(), p.is_dir())
            for p in sorted(path.rglob("*"))
            if not any(part.startswith(".") for part in p.relative_to(path).parts)
        ]
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                entries = [
                    (info.filename.rstrip("/"), info.is_dir()) for info in archive.infolist()
                ]
        except (zipfile.BadZipFile, OSError) as error:
            raise DataError(
                f"'{path}' is not a zip archive ({error}); give a directory or a zip with one "
                "folder of images per class"
            ) from None
        entries = [(name, is_dir) for name, is_dir in entries if not name.startswith("__MACOSX")]
    files: dict[str, list[str]] = {}
    folders = set()
    for name, is_dir in entries:
        parent = str(PurePosixPath(name).parent)
        if is_dir:
            folders.add(name)
        elif _is_image(name):
            files.setdefault(parent, []).append(name)
        if parent != ".":
            folders.update(str(p) for p in PurePosixPath(parent).parents if str(p) != ".")
            folders.add(parent)
    if not files:
        raise DataError(
            f"'{path}' holds no class folders: expected one folder of images per class (files "
            f"ending in {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    if "." in files:
        raise DataError(
            f"'{path}' holds images outside any class folder ('{files['.'][0]}'); put each "
            "class's images in a folder of their own"
        )
    parents = {str(PurePosixPath(folder).parent) for folder in folders}
    empty = sorted(folder for folder in folders if folder not in files and folder not in parents)
    if empty:
        raise DataError(f"the class folder '{path}/{empty[0]}' holds no images; remove it")
    return _Source(path, {name: sorted(names) for name, names in files.items()})


def cache_dir() -> Path:
    """Where decoded image sets are cached."""
    if "METAJAX_CACHE" in os.environ:
        return Path(os.environ["METAJAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "metajax"


def _cache_file(source: _Source, settings: dict[str, Any]) -> Path:
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


def _write_cache(path: Path, image_set: ImageSet) -> None:
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
            ),
        )
    except OSError:
        pass  # a read-only cache directory only costs the next load its decoding
