"""Image sets loaded from a one-folder-per-class directory or zip, decoded once and cached.

Images are decoded with Pillow, converted to grey or RGB, resized to a square with Lanczos
filtering and kept as ``uint8`` (see :mod:`metajax.data.decoding`); the decoded set is cached
(see :mod:`metajax.data.cache`), so the second load reads one file.
"""

import os
from pathlib import Path

import numpy as np

from metajax.data import cache as image_cache
from metajax.data.decoding import IMAGE_SUFFIXES, decode_image, is_image
from metajax.data.image_set import DataError, ImageSet
from metajax.data.reading import read_folder_file
from metajax.data.source import group_of, scan


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
    source = scan(Path(path))
    settings = {"image_size": image_size, "channels": channels, "invert": invert}
    cached = image_cache.cache_file(source, settings) if cache else None
    found = None if cached is None else image_cache.read_cache(cached)
    if found is not None:
        return found
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
    image_set = ImageSet(images, labels, tuple(classes), tuple(group_of(c) for c in classes))
    if cached is not None:
        image_cache.write_cache(cached, image_set)
    return image_set


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
    files = sorted(p for p in folder.iterdir() if not p.is_dir() and is_image(p.name))
    if not files:
        raise DataError(
            f"'{folder}' holds no images (files ending in {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    images = [
        decode_image(read_folder_file(p), str(p), image_size, channels, invert) for p in files
    ]
    return [p.name for p in files], np.stack(images)
