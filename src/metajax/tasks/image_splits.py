"""An image set's classes split into training, validation and test classes, for the image
families (see :mod:`metajax.tasks.images`)."""

import dataclasses
import functools
from typing import Any

from metajax.data.image_set import DataError, ImageSet
from metajax.data.loading import load_image_set

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class DataSplits:
    """The classes of each split, and what the run's ``data.json`` records of them."""

    train: ImageSet
    validation: ImageSet
    test: ImageSet
    dropped_groups: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        splits = {name: getattr(self, name) for name in SPLITS}
        return {
            **{f"{name}_classes": list(s.classes) for name, s in splits.items()},
            **{f"{name}_images": len(s.labels) for name, s in splits.items()},
            "test_groups_dropped": list(self.dropped_groups),
        }


@functools.lru_cache(maxsize=4)
def _image_set(path: str, image_size: int, channels: int, invert: bool) -> ImageSet:
    return load_image_set(path, image_size=image_size, channels=channels, invert=invert)


@functools.lru_cache(maxsize=4)
def split_image_set(
    data: str,
    test_data: str | None,
    by: str,
    validation_count: int,
    test_count: int,
    decoding: tuple[int, int, bool],
) -> DataSplits:
    """The image set ``data`` split into training, validation and test classes (loaded once per
    process, then cached).

    Args:
      data: the image set's folder or zip.
      test_data: a second image set whose classes outside ``data``'s groups are the test split;
        ``None``: the test split comes from ``data``.
      by: ``"classes"`` or ``"groups"``: what is sorted by name and divided, the last
        ``test_count`` (without ``test_data``) for testing, the ``validation_count`` before
        them for validation, the rest for training.
      validation_count, test_count: how many classes or groups are held out.
      decoding: ``(image_size, channels, invert)``, how images are decoded.

    Raises:
      DataError: if the set has too few classes or groups to hold that many out.
    """
    image_set = _image_set(data, *decoding)
    units = image_set.classes if by == "classes" else image_set.groups
    names = sorted(set(units))
    held_out = validation_count + (0 if test_data else test_count)
    if held_out >= len(names):
        raise DataError(
            f"'{data}' has {len(names)} {by}, too few to hold out {held_out} for validation "
            "and testing and train on the rest; lower --validation-count or --test-count"
        )
    train_end = len(names) - held_out
    validation_end = train_end + validation_count

    def classes_of(chosen: list[str]) -> list[int]:
        wanted = set(chosen)
        return [i for i, unit in enumerate(units) if unit in wanted]

    train = image_set.subset(classes_of(names[:train_end]))
    validation = image_set.subset(classes_of(names[train_end:validation_end]))
    dropped: list[str] = []
    if test_data is None:
        test = image_set.subset(classes_of(names[validation_end:]))
    else:
        second = _image_set(test_data, *decoding)
        seen = set(image_set.groups)
        dropped = sorted(set(second.groups) & seen)
        test = second.subset([i for i, g in enumerate(second.groups) if g not in seen])
    return DataSplits(train, validation, test, tuple(dropped))
