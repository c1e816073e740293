"""Generated image sets for the tests: one folder per class, images any size and format."""

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
"""The two real Omniglot subsets, when this checkout sits next to them."""


def class_image(label: int, index: int, size: int = 28) -> np.ndarray:
    """A grey image whose class shows as a bright bar (its position and direction) and whose
    index shifts it by a pixel or two, so that classes are learnable and images differ."""
    image = np.full((size, size), 20, dtype=np.uint8)
    place = 3 + (label * 5) % (size - 8) + index % 3
    if label % 2:
        image[:, place : place + 3] = 230
    else:
        image[place : place + 3, :] = 230
    return image


def write_image_folders(
    root: Path, classes: dict[str, int], *, size: int = 28, suffix: str = ".png"
) -> Path:
    """Writes ``classes`` (folder path -> number of images) under ``root``: image ``i`` of the
    ``c``-th class is ``class_image(c, i)``, as PNG (or JPEG, by ``suffix``), and every third
    one at twice the size in RGB, to be resized and converted."""
    for label, (folder, count) in enumerate(classes.items()):
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
