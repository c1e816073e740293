"""Few-shot image classification: N-way K-shot tasks from a one-folder-per-class image set.

Two families share this module. ``images`` takes any image set with one folder of images per
class (see :mod:`metajax.data`); ``omniglot`` is the same with Omniglot's settings and
the MAML paper's presets. The classes are split into training, validation and test classes
(or whole groups, such as Omniglot's alphabets); the split is written to the run's
``data.json``. The model is the MAML paper's Conv4 (:func:`metajax.models.conv4`), the loss
the cross-entropy, and accuracy the primary metric.
"""

import dataclasses
import functools
import warnings
from pathlib import Path
from typing import Any, ClassVar

import equinox as eqx
import jax
import numpy as np
from jax import Array

from metajax import options
from metajax.algorithms.maml import MAML
from metajax.config import registry
from metajax.config.algorithm import SettingWarning
from metajax.config.family import Metric, TaskFamily, TrainedRun
from metajax.config.run_config import RunConfig
from metajax.core.linear_head import LinearHead
from metajax.core.task import Task
from metajax.data.image_set import DataError, ImageSet
from metajax.data.overlap import POLICIES as OVERLAP_POLICIES
from metajax.models import Conv4, conv4, cross_entropy
from metajax.tasks.class_sampler import (
    ClassificationSampler,
    ClassPool,
    class_pool,
    sample_classification_tasks,
)
from metajax.tasks.image_splits import SPLITS, DataSplits, split_image_set
from metajax.tasks.omniglot_presets import algorithm_presets, maml_presets, training_settings


@registry.register_family
@dataclasses.dataclass(frozen=True)
class ImageClassification(TaskFamily):
    """Few-shot classification of the images in one folder per class.

    The classes (or, with ``split="groups"``, the groups: the folders above the class folders)
    are sorted by name; the last ``test_count`` of them are the test split, the
    ``validation_count`` before them the validation split and the rest the training split.
    With ``test_data``, the test split is instead every class of that second image set (held-out
    alphabets, say). A held-out class that is a training class, by name or by any image in any
    rotation, stops the run unless ``test_overlap`` says to keep or drop it
    (:mod:`metajax.data.overlap`).
    """

    name: ClassVar[str] = "images"
    description: ClassVar[str] = (
        "Few-shot classification of your own images: DATA is a folder or zip with one folder "
        "of images per class. Each task draws N classes and K support and Q query images of "
        "each; the model, the MAML paper's Conv4, adapts on the support images and is scored "
        "by its accuracy on the query images. Classes are split into training, validation and "
        "test classes, recorded in the run's data.json."
    )
    metrics: ClassVar[dict[str, Metric]] = {
        "loss": Metric("cross-entropy"),
        "accuracy": Metric("accuracy", higher_is_better=True),
    }
    primary_metric: ClassVar[str | None] = "accuracy"
    eval_shots: ClassVar[tuple[int, ...]] = (1, 5)
    steps_per_draw: ClassVar[int | None] = 1
    eval_batch_size: ClassVar[int | None] = 25

    data: str | None = options.text(
        None,
        "folder or zip of images, one folder per class",
        metavar="PATH",
        optional=True,
        default_text="none: required",
    )
    test_data: str | None = options.text(
        None,
        "a second image set for the test split, of classes --data does not have",
        metavar="PATH",
        optional=True,
        default_text="none: the test classes come from --data",
    )
    test_overlap: str = options.choice(
        "refuse",
        OVERLAP_POLICIES,
        "what to do with test (and validation) classes that are training classes, by name "
        "(alphabet/character) or by any image in any rotation: refuse the data, keep them "
        "(data.json and eval.json say how many), or drop them from the test split",
    )
    split: str = options.choice(
        "classes", ("classes", "groups"), "split the data by class, or by group (alphabet)"
    )
    validation_count: int = options.integer(
        20, "classes (or groups) held out for validation", minimum=0
    )
    test_count: int = options.integer(
        40, "classes (or groups) held out for testing, without --test-data", minimum=0
    )
    image_size: int = options.integer(28, "side of the square images are resized to, in pixels")
    channels: int = options.choice(1, (1, 3), "1 for grey images, 3 for RGB")
    invert: bool = options.flag(False, "invert the images (dark strokes on white become bright)")
    rotations: bool = options.flag(
        False, "add each training class rotated by 90, 180 and 270 degrees as new classes"
    )
    ways: int = options.integer(5, "classes per task, the N of N-way")
    shots: int = options.integer(1, "support images per class, the K of K-shot", metavar="K")
    query_shots: int = options.integer(1, "query images per class in training", metavar="Q")
    train_ways: int | None = options.integer(
        None,
        "classes per training task, if not --ways: Prototypical Networks train with more "
        "classes than they are tested with",
        optional=True,
        default_text="--ways",
    )
    train_shots: int | None = options.integer(
        None,
        "support images per class of a training task, if not --shots (Reptile trains on 10)",
        metavar="K",
        optional=True,
        default_text="--shots",
    )
    filters: int = options.integer(64, "filters of each convolution of the Conv4")
    pooling: str = options.choice(
        "stride", ("stride", "max"), "stride-2 convolutions, or 2x2 max-pooling after each block"
    )
    conv: str = options.choice(
        "auto",
        ("auto", "slices", "lax"),
        "how convolutions are computed: slices (fastest on CPU), lax (lax.conv), auto",
    )

    @classmethod
    def presets(cls) -> dict[str, RunConfig]:
        return {
            "default": RunConfig(
                task=cls(),
                algorithm=MAML(inner_lr=0.4, inner_steps=1),
                training=training_settings(meta_steps=10000, meta_batch_size=8),
                preset="default",
            )
        }

    def prepare(self) -> dict[str, Any]:
        splits = self.splits()
        ways, shots = self.training_sizes()
        self._check_split("train", splits.train, shots + self.query_shots, ways)
        for name in SPLITS[1:]:
            image_set = getattr(splits, name)
            if image_set.classes:  # no validation or test split is allowed
                self._check_split(name, image_set, self.shots + self.query_shots)
        for name, overlap, policy in splits.overlaps:
            if policy == "kept":
                text = (
                    f"the {name} split shares {overlap.amount()} with the training data "
                    f"({overlap.named()}), kept by `test_overlap` keep: its scores are not on "
                    "held-out classes alone"
                )
            else:
                text = (
                    f"left out of the {name} split, by `test_overlap` drop: {overlap.amount()} "
                    f"that the training data has ({overlap.named()})"
                )
            warnings.warn(text, SettingWarning, stacklevel=2)
        return splits.record()

    def training_sizes(self) -> tuple[int, int]:
        """``(ways, shots)`` of the training tasks: ``train_ways`` and ``train_shots`` where
        set, else those of the tasks the model is tested on."""
        return self.train_ways or self.ways, self.train_shots or self.shots

    def splits(self) -> DataSplits:
        """The image set's classes by split (loaded once per process, then cached)."""
        if self.data is None:
            raise DataError(
                f"the {self.name} family needs its images: give --data PATH (data='PATH' in "
                "Python), a folder or zip with one folder of images per class"
            )
        return split_image_set(
            self.data,
            self.test_data,
            self.split,
            self.validation_count,
            self.test_count,
            self.image_set_settings(),
            self.test_overlap,
        )

    def test_overlap_record(self) -> dict[str, Any] | None:
        """What the test split shares with the training data and was kept
        (``test_overlap="keep"``), as ``eval.json`` records it; ``None`` if nothing."""
        kept = self.splits().kept_overlap("test")
        return None if kept is None else {**kept.record(), "policy": "kept"}

    def pool(self, split: str) -> ClassPool:
        """The images of a split (``train``, ``validation`` or ``test``) on the device."""
        return _pool(self, split)

    def _check_split(
        self, name: str, image_set: ImageSet, needed: int, ways: int | None = None
    ) -> None:
        ways = ways or self.ways
        count = len(image_set.classes) * (4 if name == "train" and self.rotations else 1)
        if count < ways:
            where = "" if name == "train" else f" (set with --{name}-count)"
            # prepare() passes an empty validation split; only asking for validation tasks
            # (training's scores, eval's choice of step size) reaches this with none, and
            # that request can be dropped, in the way each command drops it.
            unless = (
                "; or ask for no validation tasks (metajax train: --validation-tasks 0; metajax "
                "eval: give --inner-lr LR rather than tuning it)"
                if count == 0
                else ""
            )
            flag = "--train-ways" if ways != self.ways else "--ways"
            raise DataError(
                f"the {name} split has {count} classes{where}, fewer than the {ways} of a "
                f"{ways}-way task; lower {flag} or give more classes{unless}"
            )
        sizes = image_set.class_sizes()
        if len(sizes) and sizes.min() < needed:
            small = int(np.argmin(sizes))
            raise DataError(
                f"class '{image_set.classes[small]}' has {sizes[small]} images, fewer than the "
                f"{needed} a task takes from each class (shots + query shots); lower --shots or "
                "--query-shots, or remove the class"
            )

    def build_model(self, key: Array) -> Conv4:
        return conv4(
            key,
            max(self.training_sizes()[0], self.ways),
            image_size=self.image_size,
            channels=self.channels,
            filters=self.filters,
            pooling=self.pooling,  # type: ignore[arg-type]
            conv=self.conv,  # type: ignore[arg-type]
        )

    def linear_head(self) -> LinearHead:
        return LinearHead(
            features=lambda model, images: model.features(images),
            replace=lambda model, weight, bias: eqx.tree_at(
                lambda m: (m.head_weight, m.head_bias), model, (weight, bias)
            ),
            classes=max(self.training_sizes()[0], self.ways),
        )

    def loss(self, model: Any, batch: Any) -> tuple[Array, dict[str, Array]]:
        images, labels = batch
        loss, accuracy = cross_entropy(model(images), labels)
        return loss, {"accuracy": accuracy}

    def task_sampler(self, num_tasks: int) -> ClassificationSampler:
        ways, shots = self.training_sizes()
        return ClassificationSampler(self.pool("train"), num_tasks, ways, shots, self.query_shots)

    def sample_tasks(self, key: Array, num_tasks: int) -> Task:
        return self.task_sampler(num_tasks)(key)

    def eval_tasks(self, key: Array, num_tasks: int, shots: int, query_shots: int) -> Task:
        return self._held_out("test", key, num_tasks, shots, query_shots)

    def validation_tasks(self, key: Array, num_tasks: int, shots: int, query_shots: int) -> Task:
        return self._held_out("validation", key, num_tasks, shots, query_shots)

    def _held_out(
        self, split: str, key: Array, num_tasks: int, shots: int, query_shots: int
    ) -> Task:
        self._check_split(split, getattr(self.splits(), split), shots + query_shots)
        pool = self.pool(split)
        return sample_classification_tasks(key, pool, num_tasks, self.ways, shots, query_shots)

    def validation_sizes(self) -> tuple[int, int]:
        return self.shots, self.query_shots  # what prepare() checked the classes against

    def eval_query_shots(self) -> int:
        return 15  # with K <= 5, every image of a 20-image Omniglot class is used

    def task_distribution(self) -> Any:
        fields = [
            "data",
            "test_data",
            "test_overlap",
            "split",
            "validation_count",
            "test_count",
            "ways",
        ]
        return (*(getattr(self, name) for name in fields), self.image_set_settings())

    def image_set_settings(self) -> tuple[int, int, bool]:
        """``(image_size, channels, invert)``: how images are decoded."""
        return self.image_size, self.channels, self.invert

    def describe(self) -> str:
        tested = f"{self.ways}-way {self.shots}-shot"
        ways, shots = self.training_sizes()
        if (ways, shots) == (self.ways, self.shots):
            return tested
        return f"{tested} (trained {ways}-way {shots}-shot)"

    def plot_example(self, path: Path, run: TrainedRun, adapt_steps: int, key: Array) -> None:
        from metajax import plots

        task = jax.tree.map(lambda leaf: leaf[0], self.eval_tasks(key, 1, self.shots, 1))
        if not run.algorithm.test_adapt_steps():  # a learner tested without steps (protonet)
            adapt_steps = 0
        adapted = run.adapt(task.support, adapt_steps)
        probabilities = np.asarray(jax.nn.softmax(run.model(adapted)(task.query[0]), axis=-1))
        # A head trained on more classes a task (--train-ways) has outputs for absent classes.
        probabilities = probabilities[:, : self.ways]
        plots.plot_classification_example(
            path,
            support=(np.asarray(task.support[0]), np.asarray(task.support[1])),
            query=(np.asarray(task.query[0]), np.asarray(task.query[1])),
            probabilities=probabilities,
            title=(
                f"A held-out {self.describe()} task,\nafter {adapt_steps} adaptation "
                f"step{'s' * (adapt_steps != 1)} ({run.algorithm.adaptation_text()})"
            ),
        )


@functools.lru_cache(maxsize=8)
def _pool(family: ImageClassification, split: str) -> ClassPool:
    rotations = split == "train" and family.rotations
    # Concrete arrays even when first asked for inside a trace: the pool is cached.
    with jax.ensure_compile_time_eval():
        return class_pool(getattr(family.splits(), split), rotations=rotations)


@registry.register_family
@dataclasses.dataclass(frozen=True)
class Omniglot(ImageClassification):
    """Omniglot (Lake et al., 2015): 1623 handwritten characters of 50 alphabets, 20 images
    each; the MAML paper's settings and presets."""

    name: ClassVar[str] = "omniglot"
    description: ClassVar[str] = (
        "Few-shot classification of Omniglot's handwritten characters (a class is a character, "
        "its group the alphabet), with the MAML paper's settings: 28x28 grey images, rotations "
        "as new training classes, Conv4 with stride-2 convolutions. DATA is a folder with "
        "images_background and images_evaluation (metajax data omniglot DIR fetches them), "
        "or any folder or zip of alphabet/character/*.png. Presets: paper-5way and paper-20way "
        "(the MAML paper: 1200 training characters, 423 test characters), and small-5way and "
        "small-20way, which train in under half an hour on 2 CPU cores (on a small subset; test "
        "on --test-data); and paper-Nway-NAME and small-Nway-NAME, the same for algorithm NAME "
        "(fomaml, reptile, meta-sgd, anil, maml++, imaml, protonet, protomaml) at its own "
        "paper's settings."
    )

    validation_count: int = options.integer(
        100, "classes (or groups) held out for validation", minimum=0
    )
    test_count: int = options.integer(
        423, "classes (or groups) held out for testing, without --test-data", minimum=0
    )
    invert: bool = options.flag(True, "invert the images (dark strokes on white become bright)")
    rotations: bool = options.flag(
        True, "add each training class rotated by 90, 180 and 270 degrees as new classes"
    )

    @classmethod
    def presets(cls) -> dict[str, RunConfig]:
        return {**maml_presets(cls), **algorithm_presets(cls)}
