"""The image-set loader: folders and zips, decoding, the cache, and its errors."""

import re
import zipfile

import numpy as np
import pytest
from images import alphabets, class_image, write_image_folders, zip_folder
from PIL import Image

from metajax.data import loading
from metajax.data.image_set import DataError
from metajax.data.loading import load_folder_images, load_image_set


def test_a_folder_and_its_zip_load_the_same_images(tmp_path):
    root = alphabets(tmp_path / "set", groups=2, characters=3, images=5)
    from_dir = load_image_set(root, image_size=28, cache=False)
    from_zip = load_image_set(zip_folder(root, tmp_path / "set.zip"), image_size=28, cache=False)
    assert from_dir.images.shape == (30, 28, 28, 1) and from_dir.images.dtype == np.uint8
    assert from_dir.classes == ("alphabet0/character00", "alphabet0/character01",
                                "alphabet0/character02", "alphabet1/character00",
                                "alphabet1/character01", "alphabet1/character02")  # fmt: skip
    assert from_dir.groups == ("alphabet0",) * 3 + ("alphabet1",) * 3
    np.testing.assert_array_equal(from_dir.labels, np.repeat(np.arange(6), 5))
    np.testing.assert_array_equal(from_zip.images, from_dir.images)
    np.testing.assert_array_equal(from_zip.labels, from_dir.labels)
    # In the zip the classes sit under the archive's top folder.
    assert from_zip.classes == tuple(f"set/{c}" for c in from_dir.classes)
    assert from_zip.groups == from_dir.groups
    # A PNG at full size is its pixels; a larger RGB one is resized with Lanczos.
    np.testing.assert_array_equal(from_dir.images[0, ..., 0], class_image(0, 0))
    resized = np.asarray(
        Image.fromarray(class_image(0, 2)).resize((56, 56)).resize((28, 28), Image.LANCZOS)
    )
    np.testing.assert_array_equal(from_dir.images[2, ..., 0], resized)


def test_plain_class_folders_rgb_inversion_and_sizes(tmp_path):
    root = write_image_folders(tmp_path / "pets", {"cat": 3, "dog": 4}, size=20, suffix=".jpg")
    grey = load_image_set(root, image_size=12, cache=False)
    assert grey.classes == ("cat", "dog") and grey.groups == ("", "")
    np.testing.assert_array_equal(grey.class_sizes(), [3, 4])
    rgb = load_image_set(root, image_size=12, channels=3, cache=False)
    assert rgb.images.shape == (7, 12, 12, 3)
    inverted = load_image_set(root, image_size=12, invert=True, cache=False)
    np.testing.assert_array_equal(inverted.images, 255 - grey.images)
    dog = grey.subset([1])
    assert dog.classes == ("dog",) and dog.labels.tolist() == [0] * 4
    np.testing.assert_array_equal(dog.images, grey.images[3:])


def test_the_second_load_reads_the_cache_and_a_changed_file_is_decoded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("METAJAX_CACHE", str(tmp_path / "cache"))
    root = write_image_folders(tmp_path / "set", {"a": 3, "b": 3})
    first = load_image_set(root, image_size=16)
    assert len(list((tmp_path / "cache" / "images").glob("*.npz"))) == 1
    decoded = []
    original = loading.decode_image
    monkeypatch.setattr(
        loading, "decode_image", lambda *args: decoded.append(args[1]) or original(*args)
    )
    second = load_image_set(root, image_size=16)
    assert decoded == []
    np.testing.assert_array_equal(second.images, first.images)
    assert second.classes == first.classes and second.groups == first.groups
    # Other settings, or a changed file, are another cache entry.
    load_image_set(root, image_size=8)
    assert len(decoded) == 6
    Image.fromarray(class_image(5, 0)).save(root / "a" / "000.png")
    changed = load_image_set(root, image_size=16)
    assert len(decoded) == 12
    assert not np.array_equal(changed.images[0], first.images[0])


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    root = write_image_folders(tmp_path / "set", {"a": 2, "b": 2})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".DS_Store").write_bytes(b"\0")
    (root / ".hidden").mkdir()
    assert load_image_set(root, image_size=8, cache=False).class_sizes().tolist() == [2, 2]


def test_a_corrupt_image_is_named(tmp_path):
    root = write_image_folders(tmp_path / "set", {"a": 2, "b": 2})
    (root / "b" / "001.png").write_bytes(b"not a png")
    message = f"cannot read image '{root}/b/001.png' (cannot identify image file"
    with pytest.raises(DataError, match=re.escape(message)):
        load_image_set(root, image_size=8, cache=False)
    archive = zip_folder(root, tmp_path / "set.zip")
    with pytest.raises(DataError, match=re.escape(f"cannot read image '{archive}/set/b/001.png'")):
        load_image_set(archive, image_size=8, cache=False)


def test_an_empty_class_folder_is_named(tmp_path):
    root = write_image_folders(tmp_path / "set", {"a": 2, "b": 2})
    (root / "c").mkdir()
    with pytest.raises(DataError, match=re.escape(f"the class folder '{root}/c' holds no images")):
        load_image_set(root, image_size=8, cache=False)


def test_a_file_that_is_not_a_zip_is_named(tmp_path):
    path = tmp_path / "data.zip"
    path.write_bytes(b"PK but not really")
    with pytest.raises(DataError, match=re.escape(f"'{path}' is not a zip archive")):
        load_image_set(path, image_size=8)


def test_missing_data_and_a_set_without_classes(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"the image data '{tmp_path}/nope' does not")):
        load_image_set(tmp_path / "nope", image_size=8)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("")
    with pytest.raises(DataError, match="holds no class folders"):
        load_image_set(tmp_path / "empty", image_size=8)
    loose = write_image_folders(tmp_path / "loose", {"a": 1})
    Image.fromarray(class_image(0, 0)).save(loose / "stray.png")
    with pytest.raises(DataError, match=re.escape("holds images outside any class folder")):
        load_image_set(loose, image_size=8)
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    with pytest.raises(DataError, match="holds no class folders"):
        load_image_set(tmp_path / "empty.zip", image_size=8)


def test_a_folder_of_query_images(tmp_path):
    root = write_image_folders(tmp_path, {"query": 3})
    names, images = load_folder_images(root / "query", image_size=10)
    assert names == ["000.png", "001.png", "002.png"] and images.shape == (3, 10, 10, 1)
    with pytest.raises(DataError, match=re.escape(f"'{tmp_path}' holds no images")):
        load_folder_images(tmp_path, image_size=10)
    with pytest.raises(DataError, match=re.escape(f"'{tmp_path}/x' is not a folder of images")):
        load_folder_images(tmp_path / "x", image_size=10)
