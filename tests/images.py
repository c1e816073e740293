"""Generated image sets for the tests: one folder per class, images any size and format."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metajax

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
"""The two real Omniglot subsets, when this checkout sits next to them."""


def class_image(label: int, index: int, size: int = 28) -> np.ndarray:
    """A grey image whose class shows as a bright bar (its position and direction) and whose
    index shifts it by a pixel or two, so that classes are learnable and images differ. The
    first 11 pixels of the top row spell ``label + 1`` in binary (60 and 180 on a background of
    20 and bars of 230), so that no two classes (below 2047) share an image, even turned by 90
    degrees; ``size`` is at least 12."""
    image = np.full((size, size), 20, dtype=np.uint8)
    place = 3 + (label * 5) % (size - 8) + index % 3
    if label % 2:
        image[:, place : place + 3] = 230
    else:
        image[place : place + 3, :] = 230
    image[0, :11] = [180 if (label + 1) >> bit & 1 else 60 for bit in range(11)]
    return image


def write_image_folders(
    root: Path,
    classes: dict[str, int],
    *,
    size: int = 28,
    suffix: str = ".png",
    first_label: int = 0,
) -> Path:
    """Writes ``classes`` (folder path -> number of images) under ``root``: image ``i`` of the
    ``c``-th class is ``class_image(first_label + c, i)``, as PNG (or JPEG, by ``suffix``),
    and every third one at twice the size in RGB, to be resized and converted. Sets written
    with different ``first_label`` ranges share no image."""
    for label, (folder, count) in enumerate(classes.items(), start=first_label):
        path = root / folder
        path.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image = Image.fromarray(class_image(label, index, size))
            if index % 3 == 2:
                image = image.resize((2 * size, 2 * size)).convert("RGB")
            image.save(path / f"{index:03d}{suffix}")
    return root


def zip_folder(folder: Path, archive: Path) -> Path:
    """``folder``'s files in a zip, under the folder's name."""
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.rglob("*")):
            out.write(path, path.relative_to(folder.parent).as_posix())
    return archive


def alphabets(root: Path, groups: int = 3, characters: int = 4, images: int = 6) -> Path:
    """An Omniglot-like ``alphabet/characterNN/*.png`` tree."""
    classes = {
        f"alphabet{g}/character{c:02d}": images for g in range(groups) for c in range(characters)
    }
    return write_image_folders(root, classes)


def small_config(data, **changes):
    """A run of the images family that trains in seconds: 3-way tasks of 16-pixel images."""
    config = metajax.presets("images")["default"].replace(
        data=str(data),
        validation_count=3,
        test_count=3,
        image_size=16,
        filters=8,
        ways=3,
        meta_batch_size=2,
        meta_steps=30,
        steps_per_call=10,
        checkpoint_every=10,
        log_every=3,
        validation_tasks=4,
    )
    return config.replace(**changes)


def train_image_run(
    tmp_path_factory: pytest.TempPathFactory, plots: bool = True
) -> tuple[metajax.RunConfig, Path]:
    """A finished :func:`small_config` run on 3 alphabets of 4 characters, with its figures
    unless ``plots`` is false; its config and directory."""
    root = alphabets(tmp_path_factory.mktemp("data") / "set", groups=3, characters=4)
    config = small_config(root)
    out = tmp_path_factory.mktemp("run") / "images"
    metajax.train(config, out, progress=False, plots=plots)
    return config, out


def write_task(root, labels, images_per_class, query_per_class, size=40):
    """A support folder of one folder per class and a query folder, as JPEGs of another size
    (bars at places no training class had)."""
    for name, label in labels.items():
        folder = root / "support" / name
        folder.mkdir(parents=True)
        for i in range(images_per_class):
            Image.fromarray(class_image(label, i, size)).save(folder / f"{i}.jpg")
    (root / "query").mkdir()
    for name, label in labels.items():
        for i in range(query_per_class):
            image = Image.fromarray(class_image(label, i + 1, size)).convert("RGB")
            image.save(root / "query" / f"{name}_{i}.png")
