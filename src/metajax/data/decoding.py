"""Image files decoded with Pillow into the arrays the networks take."""

import io
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from metajax.data.image_set import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
"""File name endings read as images (in any letter case); other files are ignored."""


def is_image(name: str) -> bool:
    """Whether a file name (a path under the root) is read as an image: not hidden, and ending
    in one of :data:`IMAGE_SUFFIXES`."""
    path = PurePosixPath(name)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
"""Pillow's grey modes of more than 8 bits: scaled to [0, 1] by their real bit depth, then
resized, then rounded to 8 bits (Pillow's own conversion to ``L`` clips them at 255)."""


def decode_image(
    data: bytes, name: str, image_size: int, channels: int = 1, invert: bool = False
) -> np.ndarray:
    """One image file's bytes as ``uint8 [image_size, image_size, channels]``.

    Every mode Pillow opens is read by what its values mean: 8-bit modes (1, L, P, RGB, CMYK,
    ...) by Pillow's conversion to grey or RGB, modes with transparency (LA, RGBA, P with a
    transparent colour, ...) composited over white first, as a viewer shows them, and grey
    modes of 16 or 32 bits and floats (:data:`HIGH_DEPTH_MODES`) scaled by their bit depth.

    Raises:
      DataError: if Pillow cannot decode it, or its mode or values have no reading as an
        image of intensities; ``name`` says which file it was.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode in HIGH_DEPTH_MODES:
                array = _high_depth(image, name, image_size)
                if channels == 3:
                    array = np.repeat(array, 3, axis=-1)
            else:
                array = _eight_bit(image, name, image_size, channels)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(
            f"cannot read image '{name}' ({error}); replace or remove the file"
        ) from None
    return 255 - array if invert else array


def _eight_bit(image: Any, name: str, image_size: int, channels: int) -> np.ndarray:
    from PIL import Image

    mode = image.mode
    if image.has_transparency_data:  # an alpha band, or a transparent colour
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    target = "L" if channels == 1 else "RGB"
    try:
        # Converting first makes Lanczos apply to 1-bit images too (Pillow resizes those
        # with the nearest pixel only).
        try:
            converted = image.convert(target)
        except ValueError:  # some modes (LAB) convert to grey only by way of RGB
            converted = image.convert("RGB").convert(target)
    except ValueError:
        raise DataError(
            f"cannot read image '{name}': Pillow has no conversion of its mode {mode} to "
            f"{'grey' if channels == 1 else 'RGB'}; save it as 8-bit grey or RGB"
        ) from None
    resized = converted.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8).reshape(image_size, image_size, channels)


def _high_depth(image: Any, name: str, image_size: int) -> np.ndarray:
    """A grey image of 16 or 32 bits or of floats: scaled to [0, 1] by its bit depth (a float
    image is read as intensities in [0, 1] already), resized in floating point, then rounded
    to ``uint8 [image_size, image_size, 1]``."""
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        full_scale = 1.0
    elif image.mode.startswith("I;16"):
        full_scale = 2.0**16 - 1
    else:  # signed 32-bit integers: a 16-bit PNG in older Pillows, or a TIFF of its bits
        bits = 16 if image.format == "PNG" else _tiff_bits(image)
        full_scale = 2.0 ** min(bits, 31) - 1
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > full_scale:
        range_text = "[0, 1]" if image.mode == "F" else f"[0, {full_scale:.0f}]"
        raise DataError(
            f"cannot read image '{name}': its mode {image.mode} values lie in [{low:g}, "
            f"{high:g}], outside {range_text}, the range of its bit depth; rescale it into "
            "that range, or save it as 8-bit grey"
        )
    scaled = Image.fromarray((values / full_scale).astype(np.float32), mode="F")
    resized = np.asarray(scaled.resize((image_size, image_size), Image.Resampling.LANCZOS))
    # Lanczos rings a little past the ends of the range, as in 8 bits.
    eight_bit = np.rint(np.clip(resized, 0.0, 1.0) * 255).astype(np.uint8)
    return eight_bit.reshape(image_size, image_size, 1)


def _tiff_bits(image: Any) -> int:
    """The bits per sample a 32-bit integer image was stored with (32 unless a TIFF says)."""
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    bits = bits[0] if isinstance(bits, tuple) else bits
    return int(bits) if isinstance(bits, int) and 1 <= bits <= 32 else 32
