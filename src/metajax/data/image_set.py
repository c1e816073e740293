"""An image set: decoded images, their classes and the classes' groups."""

import dataclasses
from collections.abc import Iterable

import numpy as np


class DataError(ValueError):
    """Image data that cannot be used; the message names the file or class and the fix."""


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSet:
    """Decoded images with their classes.

    Attributes:
      images: ``uint8 [num_images, size, size, channels]``, sorted by class.
      labels: ``int32 [num_images]``, each image's index into ``classes``.
      classes: the class names (class folders' paths under the root), sorted.
      groups: each class's group (the name of its class folder's parent; ``""`` at the root).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    groups: tuple[str, ...]

    def class_sizes(self) -> np.ndarray:
        """``int [num_classes]``: the number of images of each class."""
        return np.bincount(self.labels, minlength=len(self.classes))

    def subset(self, class_indices: Iterable[int]) -> "ImageSet":
        """The images of the given classes (in that order), relabelled ``0..len - 1``."""
        chosen = list(class_indices)
        parts = [np.flatnonzero(self.labels == c) for c in chosen]
        order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        labels = np.repeat(np.arange(len(chosen), dtype=np.int32), [len(p) for p in parts])
        return ImageSet(
            images=self.images[order],
            labels=labels,
            classes=tuple(self.classes[c] for c in chosen),
            groups=tuple(self.groups[c] for c in chosen),
        )
