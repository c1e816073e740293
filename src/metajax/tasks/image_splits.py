"""An image set's classes split into training, validation and test classes, for the image
families (see :mod:`metajax.tasks.images`)."""

import dataclasses
import functools
from typing import Any

from metajax.data.image_set import DataError, ImageSet
from metajax.data.loading import load_image_set
from metajax.data.overlap import Overlap, find_overlap

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class DataSplits:
    """The classes of each split, and what the run's ``data.json`` records of them.

    Attributes:
      train, validation, test: the splits.
      overlaps: for a held-out split (``validation``, ``test``) that shared classes with the
        training data, what it shared, and whether those classes were kept or dropped.
    """

    train: ImageSet
    validation: ImageSet
    test: ImageSet
    overlaps: tuple[tuple[str, Overlap, str], ...] = ()  # (split, overlap, "kept" or "dropped")

    def record(self) -> dict[str, Any]:
        splits = {name: getattr(self, name) for name in SPLITS}
        overlaps = {
            f"{name}_overlap": {**overlap.record(), "policy": policy}
            for name, overlap, policy in self.overlaps
        }
        return {
            **{f"{name}_classes": list(s.classes) for name, s in splits.items()},
            **{f"{name}_images": len(s.labels) for name, s in splits.items()},
            **overlaps,
        }

    def kept_overlap(self, split: str) -> Overlap | None:
        """What the held-out ``split`` shares with the training data and was kept, if any."""
        return next((o for name, o, p in self.overlaps if name == split and p == "kept"), None)


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
    overlap: str = "refuse",
) -> DataSplits:
    """The image set ``data`` split into training, validation and test classes (loaded once per
    process, then cached).

    Args:
      data: the image set's folder or zip.
      test_data: a second image set whose classes are the test split; ``None``: the test
        split comes from ``data``.
      by: ``"classes"`` or ``"groups"``: what is sorted by name and divided, the last
        ``test_count`` (without ``test_data``) for testing, the ``validation_count`` before
        them for validation, the rest for training.
      validation_count, test_count: how many classes or groups are held out.
      decoding: ``(image_size, channels, invert)``, how images are decoded.
      overlap: what to do when a held-out split shares classes with the data before it (the
        validation split with the training split; the test split with the training and
        validation splits, or with all of ``data``), by name path or by any image in any
        rotation (:mod:`metajax.data.overlap`): ``"refuse"`` the data, ``"keep"`` the shared
        classes (the record says so), or ``"drop"`` them from the held-out split.

    Raises:
      DataError: if the set has too few classes or groups to hold that many out, or, with
        ``overlap="refuse"``, a held-out split shares classes with the training data (the
        message names them).
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

    splits = {
        "train": image_set.subset(classes_of(names[:train_end])),
        "validation": image_set.subset(classes_of(names[train_end:validation_end])),
        "test": (
            image_set.subset(classes_of(names[validation_end:]))
            if test_data is None
            else _image_set(test_data, *decoding)
        ),
    }
    before = {
        "validation": splits["train"],
        "test": image_set.subset(classes_of(names[:validation_end])),
    }
    found = []
    for name, earlier in before.items():
        shared = find_overlap(earlier, splits[name])
        if not shared.shared:
            continue
        if overlap == "refuse":
            raise DataError(_refusal(name, shared, data, test_data))
        if overlap == "drop":
            dropped = {c.name for c in shared.shared}
            kept = [i for i, c in enumerate(splits[name].classes) if c not in dropped]
            splits[name] = splits[name].subset(kept)
        found.append((name, shared, "kept" if overlap == "keep" else "dropped"))
    return DataSplits(**splits, overlaps=tuple(found))


def _refusal(split: str, overlap: Overlap, data: str, test_data: str | None) -> str:
    if split == "test" and test_data is not None:
        where = f"the test data '{test_data}' share {overlap.amount()} with the data '{data}'"
        fix = "give --test-data whose classes --data does not have"
    else:
        earlier = "training split" if split == "validation" else "training and validation splits"
        where = f"the {split} split of '{data}' shares {overlap.amount()} with the {earlier}"
        fix = "remove the duplicates from the data"
    return (
        f"{where}: {overlap.named()}; a model scored on them is not tested on held-out "
        f"classes. {fix.capitalize()}, or give --test-overlap drop to leave them out of the "
        f"{split} split, or --test-overlap keep to use them anyway (data.json and eval.json then "
        "say how much is shared); test_overlap= in Python"
    )
