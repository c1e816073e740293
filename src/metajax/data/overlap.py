"""Classes that held-out data shares with training data, found by name and by content.

A held-out class is *shared* when its name path is a training class's, or when any of its
images is, once decoded, a training image or a training image turned by 90, 180 or 270
degrees (:func:`~metajax.data.image_set.content_hashes`). A class's *name path* is its class
folder and the folder above it (Omniglot's ``alphabet/character``): so
``images_background_small2/Greek/character01`` and ``images_background_small1/Greek/character01``
are one class, while ``Greek/character01`` and ``Latin/character01`` are two.
"""

import dataclasses
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from metajax.data.image_set import ImageSet

POLICIES = ("refuse", "keep", "drop")
"""What to do with held-out classes that are training classes: refuse the data, keep them (and
say so), or drop them from the held-out split."""

SHOWN = 3
"""How many shared classes a message names before it counts the rest."""


@dataclasses.dataclass(frozen=True)
class SharedClass:
    """A held-out class that is a training class.

    Attributes:
      name: the held-out class.
      training_class: the training class it is: the one of the same name path, else the one
        its first shared image comes from.
      same_name: whether the two share their name path.
      images: how many of the held-out class's images are training images (in any rotation).
    """

    name: str
    training_class: str
    same_name: bool
    images: int

    def describe(self) -> str:
        reasons = ["the same name"] if self.same_name else []
        if self.images:
            reasons.append(f"{self.images} identical image{'s' * (self.images != 1)}")
        return f"'{self.name}' (training class '{self.training_class}': {' and '.join(reasons)})"


@dataclasses.dataclass(frozen=True)
class Overlap:
    """What a held-out split shares with the training data (see :func:`find_overlap`)."""

    shared: tuple[SharedClass, ...]
    classes: int  # the held-out split's classes and images, shared or not
    images: int

    @property
    def shared_images(self) -> int:
        return sum(c.images for c in self.shared)

    def amount(self) -> str:
        """How much is shared: ``"2 of 8 classes (20 of 80 images)"``."""
        return (
            f"{len(self.shared)} of {self.classes} classes ({self.shared_images} of "
            f"{self.images} images)"
        )

    def named(self) -> str:
        """The first :data:`SHOWN` shared classes, and how many more there are."""
        text = ", ".join(c.describe() for c in self.shared[:SHOWN])
        rest = len(self.shared) - SHOWN
        return text + (f", and {rest} more" if rest > 0 else "")

    def record(self) -> dict[str, Any]:
        """What ``data.json`` and ``eval.json`` say of it."""
        return {
            "classes": len(self.shared),
            "of_classes": self.classes,
            "images": self.shared_images,
            "of_images": self.images,
            "shared": [dataclasses.asdict(c) for c in self.shared],
        }


def name_paths(image_set: ImageSet) -> list[str]:
    """Each class's name path: its class folder and the folder above it."""
    return ["/".join(PurePosixPath(c).parts[-2:]) for c in image_set.classes]


def find_overlap(training: ImageSet, held_out: ImageSet) -> Overlap:
    """The classes of ``held_out`` that are classes of ``training``, by name path or by the
    content of any image, in ``held_out``'s order."""
    by_name = dict(zip(name_paths(training), training.classes, strict=True))
    by_image = dict(
        zip(training.hashes.tolist(), (training.classes[i] for i in training.labels), strict=True)
    )
    seen = np.isin(held_out.hashes, training.hashes)
    shared = []
    for label, (name, path) in enumerate(zip(held_out.classes, name_paths(held_out), strict=True)):
        mine = held_out.labels == label
        found = held_out.hashes[mine & seen]
        if path in by_name or len(found):
            training_class = by_name.get(path) or by_image[int(found[0])]
            shared.append(SharedClass(name, training_class, path in by_name, len(found)))
    return Overlap(tuple(shared), len(held_out.classes), len(held_out.labels))
