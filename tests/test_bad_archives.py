"""Damaged, encrypted, unsupported and oversized zip members: an error that names the archive
and the member, and memory bounded whatever a member inflates to."""

import io
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from bad_input import refused
from PIL import Image

from metajax.data.image_set import DataError
from metajax.data.loading import load_image_set
from metajax.data.source import scan

MEMBER = "set/a/000.png"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 200).save(buffer, format="PNG")
    return buffer.getvalue()


def one_member_zip(path: Path, data: bytes, method: int = zipfile.ZIP_STORED) -> Path:
    """A zip of one class folder holding one image, ``MEMBER``."""
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr(MEMBER, data)
    return path


def patched(path: Path, change) -> Path:
    """``path`` after ``change(bytes, local_header, central_header)`` edits its bytes."""
    data = bytearray(path.read_bytes())
    change(data, data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02"))
    path.write_bytes(bytes(data))
    return path


def data_offset(data: bytearray, local: int) -> int:
    """Where a member's data starts: after its local header and its name and extra field."""
    name_length = int.from_bytes(data[local + 26 : local + 28], "little")
    extra_length = int.from_bytes(data[local + 28 : local + 30], "little")
    return local + 30 + name_length + extra_length


def set_flag(data, local, central):  # general purpose bit 0: encrypted
    data[local + 6] |= 1
    data[central + 8] |= 1


def deflate64(data, local, central):  # compression method 9
    data[local + 8 : local + 10] = (9).to_bytes(2, "little")
    data[central + 10 : central + 12] = (9).to_bytes(2, "little")


def flip_a_data_byte(data, local, central):
    data[data_offset(data, local) + 40] ^= 0xFF


def garble_the_stream(data, local, central):
    start = data_offset(data, local)
    data[start : start + 8] = b"\xff" * 8  # a deflate block type that does not exist


BAD_MEMBERS = [
    (zipfile.ZIP_STORED, set_flag, "is encrypted; give an archive without a password"),
    (
        zipfile.ZIP_STORED,
        deflate64,
        "is compressed with method 9 (deflate64, say), which Python cannot decompress; "
        "re-create the archive with stored, deflate, bzip2, lzma compression",
    ),
    (zipfile.ZIP_STORED, flip_a_data_byte, "is damaged (Bad CRC-32 for file"),
    (zipfile.ZIP_DEFLATED, garble_the_stream, "is damaged (error: Error -3 while decompress"),
]


@pytest.mark.parametrize("method, change, message", BAD_MEMBERS)
def test_a_bad_member_is_named_with_its_archive(tmp_path, method, change, message):
    archive = patched(one_member_zip(tmp_path / "set.zip", png(), method), change)
    scan(archive)  # the central directory is intact: the member is listed
    with pytest.raises(DataError) as error:
        load_image_set(archive, image_size=28, cache=False)
    assert str(error.value).startswith(f"the member '{MEMBER}' of '{archive}' {message}")


@pytest.mark.parametrize("method, change, message", BAD_MEMBERS)
def test_the_command_line_names_a_bad_member_and_writes_nothing(
    tmp_path, method, change, message, capsys
):
    archive = patched(one_member_zip(tmp_path / "set.zip", png(), method), change)
    out = tmp_path / "run"
    status, error = refused(["train", "images", "--data", str(archive), "--out", str(out)], capsys)
    assert status == 1
    assert error.startswith(f"metajax: error: the member '{MEMBER}' of '{archive}' {message}")
    assert not out.exists()


def test_a_truncated_archive_is_named(tmp_path):
    archive = one_member_zip(tmp_path / "set.zip", png())
    archive.write_bytes(archive.read_bytes()[:-30])  # part of the central directory gone
    with pytest.raises(DataError, match=r"'.*set.zip' is not a zip archive \(File is not a zip"):
        load_image_set(archive, image_size=28, cache=False)


@pytest.fixture(scope="module")
def gibibyte_member(tmp_path_factory) -> Path:
    """A 1 MB zip whose one member inflates to 1 GiB."""
    path = tmp_path_factory.mktemp("bomb") / "set.zip"
    zeros = bytes(2**20)
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open(MEMBER, "w", force_zip64=True) as member,
    ):
        for _ in range(1024):
            member.write(zeros)
    return path


def test_a_member_that_inflates_to_a_gibibyte_is_refused_in_bounded_memory(gibibyte_member):
    assert gibibyte_member.stat().st_size < 2 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as error:
            load_image_set(gibibyte_member, image_size=28, cache=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(error.value) == (
        f"the member '{MEMBER}' of '{gibibyte_member}' is 1,073,741,824 bytes, more than the "
        "67,108,864 an image file may be (metajax.data.reading.MAX_IMAGE_BYTES); it is no "
        "image of a class folder: remove it"
    )
    assert peak < 16 * 2**20, peak
