"""N-way K-shot classification tasks drawn on the device from a whole image set.

A :class:`ClassPool` holds the images of one split as a single device array, sorted by class;
:func:`sample_classification_tasks` draws tasks from it inside ``jit`` with ``jax.random``:
``ways`` distinct classes in a random order (so each task permutes the labels), and for each
class ``query_shots + shots`` distinct images, the first ``query_shots`` of which are the
query set and the next ``shots`` the support set.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from metajax.core.task import Task
from metajax.data.image_set import ImageSet


class ClassPool(eqx.Module):
    """The images of one split on the device, by class.

    With rotations, each class also appears rotated by 90, 180 and 270 degrees, as a class of
    its own (as in the MAML paper's Omniglot experiments): class ``c`` of the pool is the image
    set's class ``c // 4`` rotated ``c % 4`` quarter turns.

    Attributes:
      images: ``uint8 [rotations, num_images, size, size, channels]``, sorted by class; one
        rotation, or four.
      starts: ``int32 [num_classes]``, the index of each class's first image.
      sizes: ``int32 [num_classes]``, each class's number of images.
      largest: the largest class's number of images.
    """

    images: Array
    starts: Array
    sizes: Array
    largest: int = eqx.field(static=True)

    @property
    def rotations(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        """The number of classes, rotations counted as classes."""
        return self.starts.shape[0] * self.rotations


def class_pool(image_set: ImageSet, *, rotations: bool = False) -> ClassPool:
    """A :class:`ClassPool` of every image of ``image_set``, with rotation classes if asked."""
    images = image_set.images
    turned = [np.rot90(images, k, axes=(1, 2)) for k in range(4 if rotations else 1)]
    sizes = image_set.class_sizes()
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return ClassPool(
        images=jnp.asarray(np.stack(turned)),
        starts=jnp.asarray(starts, dtype=jnp.int32),
        sizes=jnp.asarray(sizes, dtype=jnp.int32),
        largest=int(sizes.max()),
    )


def sample_classification_tasks(
    key: Array, pool: ClassPool, num_tasks: int, ways: int, shots: int, query_shots: int
) -> Task:
    """Draws ``num_tasks`` ``ways``-way ``shots``-shot tasks with ``query_shots`` query images
    per class; pure and jit-able.

    The query images of a task do not depend on ``shots``: tasks drawn with the same key for
    several K share their classes and query sets, and a K-shot support set is the first K of
    the (K+1)-shot one.

    Every class must have at least ``shots + query_shots`` images and the pool at least
    ``ways`` classes (the caller checks, outside ``jit``).

    Returns:
      A task batch whose support is ``(images, labels)`` with shapes ``[num_tasks, ways *
      shots, size, size, channels]`` (floats in [0, 1]) and ``[num_tasks, ways * shots]``
      (int32 in ``[0, ways)``, class by class), and whose query is the same with ``ways *
      query_shots`` images.
    """
    keys = jax.random.split(key, num_tasks)
    return jax.vmap(lambda k: _one_task(k, pool, ways, shots, query_shots))(keys)


def _one_task(key: Array, pool: ClassPool, ways: int, shots: int, query_shots: int) -> Task:
    class_key, image_key = jax.random.split(key)
    classes = jax.random.choice(class_key, pool.num_classes, (ways,), replace=False)
    base, turns = classes // pool.rotations, classes % pool.rotations
    # Distinct images of each class: the smallest random scores among its images.
    scores = jax.random.uniform(image_key, (ways, pool.largest))
    scores = jnp.where(jnp.arange(pool.largest) < pool.sizes[base][:, None], scores, jnp.inf)
    picks = jnp.argsort(scores, axis=1)[:, : query_shots + shots]
    images = pool.images[turns[:, None], pool.starts[base][:, None] + picks]
    images = images.astype(jnp.result_type(float)) / 255

    def examples(part: Array, count: int) -> tuple[Array, Array]:
        labels = jnp.repeat(jnp.arange(ways, dtype=jnp.int32), count)
        return part.reshape(ways * count, *part.shape[2:]), labels

    return Task(
        support=examples(images[:, query_shots:], shots),
        query=examples(images[:, :query_shots], query_shots),
    )


class ClassificationSampler(eqx.Module):
    """``sampler(key) -> Task``: :func:`sample_classification_tasks` with its sizes fixed, as
    the task sampler of :func:`metajax.meta_train` (the pool's arrays are passed to the compiled
    loop as arguments, not compiled into it)."""

    pool: ClassPool
    num_tasks: int = eqx.field(static=True)
    ways: int = eqx.field(static=True)
    shots: int = eqx.field(static=True)
    query_shots: int = eqx.field(static=True)

    def __call__(self, key: Array) -> Task:
        return sample_classification_tasks(
            key, self.pool, self.num_tasks, self.ways, self.shots, self.query_shots
        )
