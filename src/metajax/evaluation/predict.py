"""Adapting a trained image classifier to your own few-shot task and classifying new images.

``metajax adapt RUN_DIR --support DIR --query DIR`` (or :func:`adapt_and_predict`) loads a run
of an image family, adapts it on the support images (one folder per class, as many classes as
the run's N-way tasks) and predicts the class of every image in the query folder. Images may
be of any size and any format Pillow reads; they are decoded as the run's training images were.
"""

import csv
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metajax import _validation
from metajax.data.image_set import DataError
from metajax.data.loading import load_folder_images
from metajax.runs import loaded_run
from metajax.tasks.images import ImageClassification


class Prediction(NamedTuple):
    """The adapted model's answer for one query image.

    Attributes:
      image: the image's file name.
      label: the predicted class (its support folder's name).
      probability: the model's probability of that class.
      probabilities: every class's probability, by class name.
    """

    image: str
    label: str
    probability: float
    probabilities: dict[str, float]


def adapt_and_predict(
    run_dir: str | os.PathLike,
    support: str | os.PathLike,
    query: str | os.PathLike,
    *,
    adapt_steps: int | None = None,
) -> list[Prediction]:
    """Adapts a trained run to the classes of ``support`` and classifies the images of
    ``query``.

    Batch normalisation uses the statistics of the query images together, as in training and
    evaluation (the MAML paper's policy), so a prediction may depend on the other query images.

    Args:
      run_dir: a finished run of an image family (``images`` or ``omniglot``).
      support: a folder with one folder of images per class; the number of classes must be the
        run's N. The classes are sorted by name.
      query: a folder of images to classify.
      adapt_steps: inner steps on the support images (default: the run's training steps).

    Returns:
      One :class:`Prediction` per query image, sorted by file name.

    Raises:
      DataError: if a folder is missing or empty, an image cannot be read, or the number of
        classes is not the run's N.
      RunDirError: if ``run_dir`` is not a finished run.
      OptionError: if ``adapt_steps`` is not an integer in ``[0, 2**31 - 1]``.
    """
    if adapt_steps is not None:  # the bounds of every integer setting, before any work
        _validation.integer("adapt_steps", adapt_steps, 0, _validation.MAX_INT32)
    run = loaded_run.load(Path(run_dir))
    family = run.config.task
    if not isinstance(family, ImageClassification):
        raise DataError(
            f"'{run_dir}' is a run of the {family.name} family; adapting to images needs a run "
            "of an image family (images or omniglot)"
        )
    size, channels, invert = family.image_set_settings()
    support_dir = Path(support)
    if not support_dir.is_dir():
        raise DataError(f"the support set '{support_dir}' is not a folder of class folders")
    class_dirs = sorted(p for p in support_dir.iterdir() if p.is_dir() and p.name[0] != ".")
    if len(class_dirs) != family.ways:
        names = ", ".join(p.name for p in class_dirs) or "none"
        raise DataError(
            f"the support set '{support_dir}' has {len(class_dirs)} class folders ({names}), "
            f"but the run was trained for {family.ways}-way tasks: give {family.ways} folders "
            "of images, one per class"
        )
    images, labels = [], []
    for label, folder in enumerate(class_dirs):
        _, class_images = load_folder_images(
            folder, image_size=size, channels=channels, invert=invert
        )
        images.append(class_images)
        labels.append(np.full(len(class_images), label, dtype=np.int32))
    query_names, query_images = load_folder_images(
        query, image_size=size, channels=channels, invert=invert
    )
    probabilities = np.asarray(
        _classify(
            run,
            (_scaled(np.concatenate(images)), jnp.asarray(np.concatenate(labels))),
            _scaled(query_images),
            adapt_steps,
        )
    )
    classes = [p.name for p in class_dirs]
    predictions = []
    for name, row in zip(query_names, probabilities, strict=True):
        best = int(np.argmax(row))
        predictions.append(
            Prediction(
                image=name,
                label=classes[best],
                probability=float(row[best]),
                probabilities={c: float(p) for c, p in zip(classes, row, strict=True)},
            )
        )
    return predictions


def _scaled(images: np.ndarray) -> jax.Array:
    return jnp.asarray(images, dtype=jnp.result_type(float)) / 255


def _classify(
    run: loaded_run.LoadedRun, support: Any, query: jax.Array, adapt_steps: int | None
) -> jax.Array:
    adapted = run.adapt(support, adapt_steps)
    return jax.nn.softmax(run.model(adapted)(query), axis=-1)


def write_predictions(path: str | os.PathLike, predictions: list[Prediction]) -> None:
    """Writes predictions as CSV (``image,label,probability``, then a column per class) or JSON
    (a list of objects), by the file's suffix.

    File and folder names that are not valid UTF-8 are written with those bytes escaped (see
    :func:`escaped`).

    Raises:
      ValueError: if the suffix is neither ``.csv`` nor ``.json``.
    """
    path = Path(path)
    predictions = [escaped_prediction(p) for p in predictions]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps([p._asdict() for p in predictions], indent=2) + "\n")
    elif path.suffix.lower() == ".csv":
        classes = list(predictions[0].probabilities) if predictions else []
        with open(path, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["image", "label", "probability", *classes])
            for p in predictions:
                probabilities = [f"{p.probabilities[c]:.6f}" for c in classes]
                writer.writerow([p.image, p.label, f"{p.probability:.6f}", *probabilities])
    else:
        raise ValueError(f"'{path}': write predictions to a .csv or a .json file")


def escaped(name: str) -> str:
    """A file or folder name as UTF-8 text can hold it: the bytes of a name that is not valid
    UTF-8 (which Python holds as lone surrogates) escaped as ``\\xNN``; other names as they
    are."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def escaped_prediction(prediction: Prediction) -> Prediction:
    """``prediction`` with its image and class names :func:`escaped`."""
    return prediction._replace(
        image=escaped(prediction.image),
        label=escaped(prediction.label),
        probabilities={escaped(c): v for c, v in prediction.probabilities.items()},
    )
