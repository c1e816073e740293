"""Image files decoded with Pillow into the arrays the networks take."""

import io
from pathlib import PurePosixPath

import numpy as np

from metajax.data.image_set import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
"""File name endings read as images (in any letter case); other files are ignored."""


def is_image(name: str) -> bool:
    """Whether a file name (a path under the root) is read as an image: not hidden, and ending
    in one of :data:`IMAGE_SUFFIXES`."""
    path = PurePosixPath(name)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


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
