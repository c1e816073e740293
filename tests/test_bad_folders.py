"""Class folders holding what is not an image file, or what cannot be read: refused by name,
never opened, never reported as empty."""

import errno
import os
import threading
from pathlib import Path

import pytest
from bad_input import refused
from images import write_image_folders

from metajax.data import reading
from metajax.data.image_set import DataError
from metajax.data.loading import load_folder_images, load_image_set


@pytest.fixture
def image_set(tmp_path) -> Path:
    return write_image_folders(tmp_path / "set", {"a": 3, "b": 3})


def loaded_or_error(load, *args, **kwargs) -> BaseException | None:
    """``load(...)``'s error, or ``None``; fails instead of waiting if it blocks (a FIFO)."""
    outcome: list = []

    def target():
        try:
            load(*args, **kwargs)
            outcome.append(None)
        except BaseException as error:  # handed to the test
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert outcome, "loading blocked"
    return outcome[0]


@pytest.mark.parametrize("load", ["set", "folder"])
def test_a_fifo_named_like_an_image_is_refused_without_opening_it(image_set, load):
    fifo = image_set / "a" / "x.png"
    os.mkfifo(fifo)
    if load == "set":
        error = loaded_or_error(load_image_set, image_set, image_size=28, cache=False)
    else:  # metajax adapt's --support and --query folders
        error = loaded_or_error(load_folder_images, image_set / "a", image_size=28)
    assert isinstance(error, DataError)
    assert str(error) == (
        f"'{fifo}' is a FIFO (named pipe), not an image file; remove it from the class folder"
    )


def test_the_command_line_names_a_fifo_and_writes_nothing(image_set, tmp_path, capsys):
    fifo = image_set / "a" / "x.png"
    os.mkfifo(fifo)
    out = tmp_path / "run"
    command = ["train", "images", "--data", str(image_set), "--out", str(out)]
    outcome: list = []
    assert loaded_or_error(lambda: outcome.append(refused(command, capsys))) is None
    assert outcome[0] == (
        1,
        f"metajax: error: '{fifo}' is a FIFO (named pipe), not an image file; remove it from "
        "the class folder",
    )
    assert not out.exists()


def test_an_image_file_larger_than_any_image_is_refused_unread(image_set, monkeypatch):
    big = image_set / "b" / "big.png"
    with open(big, "wb") as file:  # sparse: 65 MiB that take no disk
        file.truncate(reading.MAX_IMAGE_BYTES + 2**20)

    def open_but_big(path, *args, **kwargs):
        assert Path(path) != big, "opened"
        return open(path, *args, **kwargs)

    monkeypatch.setattr(reading, "open", open_but_big, raising=False)
    with pytest.raises(DataError) as error:
        load_image_set(image_set, image_size=28, cache=False)
    assert str(error.value) == (
        f"'{big}' is 68,157,440 bytes, more than the 67,108,864 an image file may be "
        "(metajax.data.reading.MAX_IMAGE_BYTES); it is no image of a class folder: remove it"
    )


def denied(path: Path):
    """A PermissionError for ``path``, as a user without read permission gets (the tests may
    run as root, whom permissions do not stop)."""
    return PermissionError(errno.EACCES, "Permission denied", str(path))


def test_a_folder_without_read_permission_is_named_not_called_empty(image_set, monkeypatch):
    locked = image_set / "b"
    scandir = os.scandir

    def scandir_as_a_user(path="."):
        if Path(path) == locked:
            raise denied(locked)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", scandir_as_a_user)
    with pytest.raises(DataError) as error:
        load_image_set(image_set, image_size=28, cache=False)
    assert str(error.value) == (
        f"permission denied: '{locked}' (the folder cannot be read); give read permission "
        f"(chmod -R u+rX '{locked}') or remove it"
    )


def test_a_file_without_read_permission_is_named(image_set, monkeypatch):
    locked = image_set / "a" / "001.png"

    def open_as_a_user(path, mode="r", *args, **kwargs):
        if Path(path) == locked:
            raise denied(locked)
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(reading, "open", open_as_a_user, raising=False)
    with pytest.raises(DataError) as error:
        load_image_set(image_set, image_size=28, cache=False)
    assert str(error.value) == (
        f"permission denied: '{locked}' (the file cannot be read); give read permission "
        f"(chmod u+r '{locked}') or remove it"
    )


def test_class_folders_linked_to_are_followed_once(image_set, tmp_path):
    elsewhere = write_image_folders(tmp_path / "elsewhere", {"c": 2})
    (image_set / "c").symlink_to(elsewhere / "c")
    (image_set / "a" / "loop").symlink_to(image_set)  # a link back up is not walked again
    loaded = load_image_set(image_set, image_size=28, cache=False)
    assert loaded.classes == ("a", "b", "c") and len(loaded.images) == 8
