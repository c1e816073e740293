"""Held-out classes that the training data has, found by name, by image and by rotated image;
refused by default, kept or dropped when told; and zips whose members come in any order."""

import re
import shutil
import zipfile

import numpy as np
import pytest
from images import OMNIGLOT, alphabets, class_image, write_image_folders
from PIL import Image

from metajax import DataError, ImageClassification, SettingWarning
from metajax.cli import main
from metajax.data.loading import load_image_set
from metajax.data.overlap import find_overlap, name_paths
from metajax.tasks.image_splits import split_image_set

FIX = (
    "a model scored on them is not tested on held-out classes. {fix}, or give --test-overlap "
    "drop to leave them out of the {split} split, or --test-overlap keep to use them anyway "
    "(data.json and eval.json then say how much is shared); test_overlap= in Python"
)


def family(data, **changes):
    settings = {"validation_count": 3, "test_count": 0, "image_size": 28, "filters": 8, "ways": 3}
    return ImageClassification(data=str(data), **{**settings, **changes})


@pytest.fixture
def train(tmp_path):
    """Two alphabets of four characters: classes 0 to 7 of :func:`class_image`."""
    return alphabets(tmp_path / "train", groups=2, characters=4)


def new_classes(root, *extra, first_label=20):
    """Three classes training never saw, and ``extra`` class folders, 6 images each."""
    names = [*extra, "new/character00", "new/character01", "new/character02"]
    return write_image_folders(root, dict.fromkeys(names, 6), first_label=first_label)


def test_a_test_class_named_as_a_training_class_is_refused_naming_it(train, tmp_path, capsys):
    test = new_classes(tmp_path / "test", "alphabet1/character02")
    message = (
        f"the test data '{test}' share 1 of 4 classes (0 of 24 images) with the data '{train}': "
        "'alphabet1/character02' (training class 'alphabet1/character02': the same name); "
        + FIX.format(fix="Give --test-data whose classes --data does not have", split="test")
    )
    with pytest.raises(DataError, match=re.escape(message) + "$"):
        family(train, test_data=str(test)).prepare()
    # metajax train refuses it before writing anything.
    out = tmp_path / "run"
    command = ["train", "images", "--data", str(train), "--test-data", str(test), "--ways", "3"]
    command += ["--validation-count", "3", "--image-size", "28", "--out", str(out)]
    assert main([*command, "--no-progress"]) == 1
    assert capsys.readouterr().err == f"metajax: error: {message}\n"
    assert not out.exists()


def test_a_renamed_or_rotated_copy_of_a_training_image_is_found_by_its_content(train, tmp_path):
    test = new_classes(tmp_path / "test", "copy/a", "copy/b")
    shutil.copy(train / "alphabet0/character01/004.png", test / "copy/a/001.png")  # same bytes
    turned = np.rot90(np.asarray(Image.open(train / "alphabet1/character03/000.png")))
    Image.fromarray(turned).save(test / "copy/b/005.png")  # another file, turned 90 degrees
    splits = split_image_set(str(train), str(test), "classes", 3, 0, (28, 1, False), "drop")
    assert splits.test.classes == ("new/character00", "new/character01", "new/character02")
    ((split, overlap, policy),) = splits.overlaps
    assert (split, policy, overlap.amount()) == (
        "test",
        "dropped",
        "2 of 5 classes (2 of 30 images)",
    )
    assert [(c.name, c.training_class, c.same_name, c.images) for c in overlap.shared] == [
        ("copy/a", "alphabet0/character01", False, 1),
        ("copy/b", "alphabet1/character03", False, 1),
    ]
    assert splits.record()["test_overlap"]["shared"][1] == {
        "name": "copy/b",
        "training_class": "alphabet1/character03",
        "same_name": False,
        "images": 1,
    }
    # Without the copies, nothing is shared: the generated classes differ in every rotation.
    clean = new_classes(tmp_path / "clean")
    assert split_image_set(str(train), str(clean), "classes", 3, 0, (28, 1, False)).overlaps == ()


def test_name_paths_are_the_class_folder_and_the_one_above_it():
    from metajax.data.image_set import ImageSet

    images = np.stack([class_image(i, 0) for i in range(3)])[..., None]
    names = ("images_background_small2/Greek/character01", "Greek/character02", "cat")
    image_set = ImageSet(images, np.arange(3, dtype=np.int32), names, ("Greek", "Greek", ""))
    assert name_paths(image_set) == ["Greek/character01", "Greek/character02", "cat"]
    other = ImageSet(images[:1], np.zeros(1, np.int32), ("Latin/character01",), ("Latin",))
    renamed = ImageSet(images[:1], np.zeros(1, np.int32), ("x/Greek/character01",), ("Greek",))
    assert find_overlap(image_set, other).shared[0].same_name is False  # found by its image
    assert find_overlap(image_set.subset([1, 2]), renamed).shared == ()


def test_kept_shared_classes_are_warned_of_and_recorded(train, tmp_path):
    test = new_classes(tmp_path / "test", "alphabet0/character00")
    shutil.copy(train / "alphabet0/character00/001.png", test / "alphabet0/character00/002.png")
    with pytest.warns(SettingWarning) as caught:
        record = family(train, test_data=str(test), test_overlap="keep").prepare()
    assert [str(w.message) for w in caught] == [
        "the test split shares 1 of 4 classes (1 of 24 images) with the training data "
        "('alphabet0/character00' (training class 'alphabet0/character00': the same name and 1 "
        "identical image)), kept by `test_overlap` keep: its scores are not on held-out classes "
        "alone"
    ]
    assert record["test_classes"][0] == "alphabet0/character00"
    assert {k: v for k, v in record["test_overlap"].items() if k != "shared"} == {
        "classes": 1,
        "of_classes": 4,
        "images": 1,
        "of_images": 24,
        "policy": "kept",
    }


def test_a_duplicate_across_the_splits_of_one_folder_is_refused(tmp_path):
    root = alphabets(tmp_path / "set", groups=3, characters=4)
    # alphabet1/character02 is a validation class (see test_images' split test).
    shutil.copy(root / "alphabet0/character00/000.png", root / "alphabet1/character02/003.png")
    message = (
        f"the validation split of '{root}' shares 1 of 3 classes (1 of 18 images) with the "
        "training split: 'alphabet1/character02' (training class 'alphabet0/character00': 1 "
        "identical image); "
        + FIX.format(fix="Remove the duplicates from the data", split="validation")
    )
    with pytest.raises(DataError, match=re.escape(message) + "$"):
        family(root, test_count=3).splits()
    kept = family(root, test_count=3, test_overlap="drop").splits()
    assert "alphabet1/character02" not in kept.validation.classes
    assert len(kept.validation.classes) == 2 and len(kept.test.classes) == 3
    # A test class is compared with the validation classes too.
    other = alphabets(tmp_path / "other", groups=3, characters=4)
    shutil.copy(other / "alphabet1/character03/001.png", other / "alphabet2/character03/000.png")
    message = (
        f"the test split of '{other}' shares 1 of 3 classes (1 of 18 images) with the training "
        "and validation splits: 'alphabet2/character03' (training class 'alphabet1/character03'"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        family(other, test_count=3).splits()


def test_zip_members_in_any_order_keep_their_classes(tmp_path):
    # Classes of unequal sizes, listed out of order: the labels once followed the sorted
    # classes while the images followed the zip's order, so classes were cut at wrong places.
    root = write_image_folders(tmp_path / "set", {"a": 5, "b": 3, "c": 4})
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for folder in ("c", "a", "b"):
            for path in sorted((root / folder).iterdir(), reverse=True):
                out.write(path, f"set/{folder}/{path.name}")
    from_zip = load_image_set(archive, image_size=28, cache=False)
    from_dir = load_image_set(root, image_size=28, cache=False)
    assert from_zip.classes == ("set/a", "set/b", "set/c")
    np.testing.assert_array_equal(from_zip.labels, from_dir.labels)
    np.testing.assert_array_equal(from_zip.images, from_dir.images)
    np.testing.assert_array_equal(from_zip.hashes, from_dir.hashes)


@pytest.mark.skipif(
    not OMNIGLOT.is_dir(), reason="the Omniglot subsets are not next to this checkout"
)
def test_small2_without_its_shared_alphabets_is_the_held_out_zip():
    small1, small2, held_out = (
        str(OMNIGLOT / f"images_background_{name}.zip")
        for name in ("small1", "small2", "small2_heldout")
    )
    decoding = (28, 1, True)
    with pytest.raises(DataError, match=re.escape("share 50 of 156 classes (1000 of 3120 images)")):
        split_image_set(small1, small2, "classes", 20, 0, decoding)
    dropped = split_image_set(small1, small2, "classes", 20, 0, decoding, "drop")
    ((_, overlap, _),) = dropped.overlaps
    assert {c.name.split("/")[1] for c in overlap.shared} == {"Greek", "Latin"}
    assert all(c.same_name and c.images == 20 for c in overlap.shared)
    unseen = split_image_set(small1, held_out, "classes", 20, 0, decoding)
    assert unseen.overlaps == () and len(unseen.test.classes) == 106
    # The same test pool, image for image: figures on either are the same figures.
    np.testing.assert_array_equal(dropped.test.images, unseen.test.images)
    np.testing.assert_array_equal(dropped.test.labels, unseen.test.labels)
