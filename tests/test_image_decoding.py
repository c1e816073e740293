"""Every mode Pillow opens is decoded by what its values mean: generated images of known mean
in each mode, saved and decoded as a class folder's files are, keep their mean."""

import io

import numpy as np
import pytest
from PIL import Image

from metajax.data.decoding import decode_image
from metajax.data.image_set import DataError

SIZE = 16
RAMP = np.linspace(0.0, 1.0, SIZE * SIZE).reshape(SIZE, SIZE)
"""Intensities from black to white: mean 0.5, and every bit of a deep mode in use."""


def encoded(image: Image.Image, format: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save)
    return buffer.getvalue()


def grey(scale: float, dtype: str, fraction: float) -> Image.Image:
    """The ramp times ``fraction`` of full scale ``scale``, as an image of ``dtype``."""
    return Image.fromarray(np.rint(RAMP * fraction * scale).astype(dtype))


def sixteen_bit(fraction: float, byte_order: str) -> Image.Image:
    values = np.rint(RAMP * fraction * 65535).astype(f"{byte_order}u2")
    mode = {"<": "I;16", ">": "I;16B"}[byte_order]
    return Image.frombytes(mode, (SIZE, SIZE), values.tobytes())


def decoded_mean(data: bytes, channels: int = 1) -> float:
    return float(decode_image(data, "set/a/x.png", SIZE, channels).mean()) / 255


@pytest.mark.parametrize("fraction", [0.25, 0.4375, 0.625])
@pytest.mark.parametrize(
    "mode, make, format",
    [
        ("L", lambda f: grey(255, "uint8", f), "PNG"),
        # The 16-bit greyscale PNGs (true means 64, 112 and 160 of 255): white before.
        ("I;16", lambda f: sixteen_bit(f, "<"), "PNG"),
        ("I;16B", lambda f: sixteen_bit(f, ">"), "TIFF"),
        ("I;16", lambda f: sixteen_bit(f, "<"), "TIFF"),
        ("I", lambda f: grey(2**31 - 1, "int32", f), "TIFF"),
        ("F", lambda f: Image.fromarray((RAMP * f).astype(np.float32), "F"), "TIFF"),
        ("1", lambda f: Image.fromarray(f > RAMP).convert("1"), "PNG"),
        ("RGB", lambda f: grey(255, "uint8", f).convert("RGB"), "PNG"),
        ("CMYK", lambda f: grey(255, "uint8", f).convert("CMYK"), "TIFF"),
        ("P", lambda f: grey(255, "uint8", f).convert("P"), "PNG"),
        ("LA", lambda f: grey(255, "uint8", f).convert("LA"), "PNG"),
        ("RGBA", lambda f: grey(255, "uint8", f).convert("RGBA"), "PNG"),
    ],
)
def test_each_mode_keeps_its_mean(mode, make, format, fraction):
    data = encoded(make(fraction), format)
    with Image.open(io.BytesIO(data)) as opened:  # the mode the file is read in
        assert opened.mode == mode
    # The ramp's mean times the fraction; "1": the fraction of pixels set.
    expected = fraction if mode == "1" else fraction * RAMP.mean()
    assert decoded_mean(data) == pytest.approx(expected, abs=1 / 255)
    assert decoded_mean(data, channels=3) == pytest.approx(expected, abs=1 / 255)


@pytest.mark.parametrize("format", ["PNG", "GIF"])
def test_transparent_pixels_are_white_as_a_viewer_shows_them(format):
    # Black strokes (the top quarter of the rows) on a transparent background whose hidden
    # colour is black: mean 0 if the transparency were dropped, 0.75 over white.
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[: SIZE // 4, :, 3] = 255
    image = Image.fromarray(rgba, "RGBA")
    if format == "GIF":  # a palette image with a transparent colour
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
        index = int(np.asarray(image)[-1, -1])
        image.info["transparency"] = index
        data = encoded(image, format, transparency=index)
    else:
        data = encoded(image, format)
    assert decoded_mean(data) == pytest.approx(0.75, abs=1 / 255)
    half = rgba.copy()  # half-transparent black over white: grey 0.5
    half[..., 3] = 128
    assert decoded_mean(encoded(Image.fromarray(half, "RGBA"))) == pytest.approx(0.5, abs=1 / 255)


@pytest.mark.parametrize(
    "values, mode, message",
    [
        (
            RAMP.astype(np.float32) * 3 - 1,
            "F",
            "its mode F values lie in [-1, 2], outside [0, 1], the range of its bit depth",
        ),
        (
            (RAMP * 100 - 50).astype(np.int32),
            "I",
            "its mode I values lie in [-50, 50], outside [0, 2147483647], the range of its "
            "bit depth",
        ),
    ],
)
def test_values_outside_their_modes_range_are_refused_by_name(values, mode, message):
    data = encoded(Image.fromarray(values, mode), "TIFF")
    with pytest.raises(DataError) as error:
        decode_image(data, "set/a/x.tif", SIZE)
    assert str(error.value) == (
        f"cannot read image 'set/a/x.tif': {message}; rescale it into that range, or save it "
        "as 8-bit grey"
    )


def test_a_colour_mode_without_a_conversion_to_grey_goes_by_way_of_rgb():
    lab = Image.new("LAB", (SIZE, SIZE), (int(0.6 * 255), 128, 128))  # 60% lightness, no hue
    expected = np.asarray(lab.convert("RGB").convert("L"), np.float64).mean() / 255
    data = encoded(lab, "TIFF")
    assert decoded_mean(data) == pytest.approx(expected, abs=1e-12)
    assert 0.5 < expected < 0.7


@pytest.mark.parametrize("channels, into", [(1, "grey"), (3, "RGB")])
def test_a_mode_without_any_conversion_is_refused_by_name(monkeypatch, channels, into):
    data = encoded(Image.new("LAB", (SIZE, SIZE)), "TIFF")

    def no_conversion(self, mode=None, *args, **kwargs):
        raise ValueError(f"conversion from {self.mode} to {mode} not supported")

    monkeypatch.setattr(Image.Image, "convert", no_conversion)  # as a mode Pillow maps nowhere
    with pytest.raises(DataError) as error:
        decode_image(data, "set/a/x.tif", SIZE, channels)
    assert str(error.value) == (
        f"cannot read image 'set/a/x.tif': Pillow has no conversion of its mode LAB to {into}; "
        "save it as 8-bit grey or RGB"
    )
