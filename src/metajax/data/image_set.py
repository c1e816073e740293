"""An image set: decoded images, their classes and the classes' groups, and a content hash of
each image that is the same for the image in any of its four rotations."""

import dataclasses
import hashlib
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
      hashes: ``uint64 [num_images]``, each image's :func:`content_hashes` (computed from
        ``images`` when not given).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    groups: tuple[str, ...]
    hashes: np.ndarray = None  # type: ignore[assignment]  # filled in by __post_init__

    def __post_init__(self) -> None:
        if self.hashes is None:
            object.__setattr__(self, "hashes", content_hashes(self.images))

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
            hashes=self.hashes[order],
        )


def content_hashes(images: np.ndarray) -> np.ndarray:
    """``uint64 [num_images]``: a hash of each decoded image's pixels that is the same for the
    image turned by 90, 180 or 270 degrees (the smallest of its four rotations' hashes), so
    that byte-identical files, the same image saved again, and rotated copies share it.

    Args:
      images: ``uint8 [num_images, size, size, channels]``.
    """

    def digest(image: np.ndarray) -> int:
        return int.from_bytes(hashlib.blake2b(image.tobytes(), digest_size=8).digest(), "little")

    return np.array(
        [
            min(digest(np.ascontiguousarray(np.rot90(image, turns))) for turns in range(4))
            for image in images
        ],
        dtype=np.uint64,
    )
