"""Where an image set's files are: a directory or a zip of one folder per class.

A *class folder* is a folder that holds image files; its path under the root is the class's
name and the folder above it is its *group*. Omniglot's ``alphabet/characterNN/*.png`` gives
one class per character, grouped by alphabet; a plain ``class/*.jpg`` layout gives classes
whose group is the root.
"""

import dataclasses
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from metajax.data.decoding import IMAGE_SUFFIXES, is_image
from metajax.data.image_set import DataError
from metajax.data.reading import read_folder_file, read_zip_members, walk_folder, zip_entries


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """The image files of a directory or zip, by class folder (see :func:`scan`)."""

    path: Path
    files: dict[str, list[str]]  # class name -> file names (paths under the root), both sorted

    def read_all(self) -> Iterator[tuple[str, bytes]]:
        """Every image file's name and bytes, class by class, in the order of :attr:`files`
        (see :mod:`metajax.data.reading` for what is refused)."""
        names = [name for files in self.files.values() for name in files]
        if self.path.is_dir():
            for name in names:
                yield name, read_folder_file(self.path / name)
            return
        yield from read_zip_members(self.path, names)


def group_of(class_name: str) -> str:
    """A class's group: the name of its class folder's parent (``""`` at the root)."""
    parent = PurePosixPath(class_name).parent
    return "" if str(parent) == "." else parent.name


def scan(path: Path) -> ImageSource:
    """Finds the class folders of a directory or zip, with their image files."""
    if not path.exists():
        raise DataError(
            f"the image data '{path}' does not exist; give a directory or a zip with one folder "
            "of images per class (metajax data omniglot DIR downloads Omniglot)"
        )
    if path.is_dir():
        entries = walk_folder(path)
    else:
        entries = [entry for entry in zip_entries(path) if not entry[0].startswith("__MACOSX")]
    files: dict[str, list[str]] = {}
    folders = set()
    for name, is_dir in entries:
        parent = str(PurePosixPath(name).parent)
        if is_dir:
            folders.add(name)
        elif is_image(name):
            files.setdefault(parent, []).append(name)
        if parent != ".":
            folders.update(str(p) for p in PurePosixPath(parent).parents if str(p) != ".")
            folders.add(parent)
    if not files:
        raise DataError(
            f"'{path}' holds no class folders: expected one folder of images per class (files "
            f"ending in {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    if "." in files:
        raise DataError(
            f"'{path}' holds images outside any class folder ('{files['.'][0]}'); put each "
            "class's images in a folder of their own"
        )
    parents = {str(PurePosixPath(folder).parent) for folder in folders}
    empty = sorted(folder for folder in folders if folder not in files and folder not in parents)
    if empty:
        raise DataError(f"the class folder '{path}/{empty[0]}' holds no images; remove it")
    # Sorted by class, whatever order a zip lists its members in: labels are given in this order.
    return ImageSource(path, {name: sorted(files[name]) for name in sorted(files)})
