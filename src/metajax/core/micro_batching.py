"""Micro-batching: a meta-gradient over a large task batch, taken a chunk at a time.

Every learner's meta-gradient is a mean over the tasks of its batch, so the mean of the
meta-gradients of ``M`` equal chunks is the meta-gradient of the whole batch. Summing them in a
``lax.scan`` holds one chunk's intermediate values at a time (the activations of every inner
step of every task, for MAML), which is what bounds the meta-batch that fits in memory.

On a CPU, chunks also make a large meta-batch fast: XLA's CPU backend runs vmapped batches of
small matrix products slower per task as the batch grows past a few hundred tasks (the
sinusoid MLP at meta-batch 1024 whole runs at about 0.7 times the tasks/s of meta-batch 25, at
4096 about 0.55; see ``benchmarks/scaling.py``), and chunks of :data:`CPU_CHUNK_TASKS` tasks
restore the speed of small batches. :func:`automatic_micro_batches` picks them.
"""

import jax
import jax.numpy as jnp
from jax import Array, lax

from metajax import _validation
from metajax.core.meta_learner import MetaLearner, Params
from metajax.core.task import Task

CPU_CHUNK_TASKS = 128
"""The most tasks each device takes at once when the number of micro-batches is automatic on a
CPU."""


def micro_batched(learner: MetaLearner, micro_batches: int) -> MetaLearner:
    """``learner`` with a ``meta_grad`` that goes through its task batch in ``micro_batches``
    equal chunks, one after another, and returns the mean of their meta-losses and
    meta-gradients (and carried states, for a learner with a
    :class:`~metajax.core.meta_learner.CarriedState`, whose state is a mean over tasks too): the
    same values as the whole batch at once, up to the order of float additions, in the memory of
    one chunk.

    Chunk ``m`` holds tasks ``m, m + M, m + 2M, ...`` of the batch (for ``M`` chunks): a batch
    sharded over devices in contiguous blocks (see :mod:`metajax.core.sharding`) splits into chunks
    that are sharded the same way, so no task moves between devices.

    Args:
      learner: any learner whose meta-loss is a mean over the tasks of a batch (every metajax
        algorithm's is).
      micro_batches: the number of chunks ``M``, ``>= 1``; it must divide the number of tasks of
        the batches ``meta_grad`` is given (1 returns ``learner`` itself).

    Raises:
      OptionError: if ``micro_batches`` is not a positive integer, or (when ``meta_grad`` is
        traced) does not divide the batch's number of tasks.
    """
    micro_batches = _validation.integer("micro_batches", micro_batches, 1)
    if micro_batches == 1:
        return learner

    def meta_grad(meta_params: Params, tasks: Task, *schedule: Array) -> tuple[object, ...]:
        size = task_count(tasks)
        if size % micro_batches:
            raise _validation.OptionError(
                "micro_batches", f"a divisor of the meta-batch's {size} tasks", micro_batches
            )
        chunks = jax.tree.map(
            lambda leaf: leaf.reshape(
                size // micro_batches, micro_batches, *leaf.shape[1:]
            ).swapaxes(0, 1),
            tasks,
        )
        first = jax.tree.map(lambda leaf: leaf[0], chunks)
        shapes = jax.eval_shape(learner.meta_grad, meta_params, first, *schedule)
        zeros = jax.tree.map(lambda shape: jnp.zeros(shape.shape, shape.dtype), shapes)

        def add_chunk(total: object, chunk: Task) -> tuple[object, None]:
            value = learner.meta_grad(meta_params, chunk, *schedule)
            return jax.tree.map(jnp.add, total, value), None

        total, _ = lax.scan(add_chunk, zeros, chunks)
        return jax.tree.map(lambda leaf: _mean_of_sum(leaf, micro_batches), total)

    return learner._replace(meta_grad=meta_grad)


def _mean_of_sum(total: Array, count: int) -> Array:
    """``total / count`` in ``total``'s dtype; exact for an integer leaf (a carried step count,
    the same in every chunk), which a float division would round above 2**24."""
    if jnp.issubdtype(total.dtype, jnp.integer):
        return total // count
    return (total / count).astype(total.dtype)


def task_count(tasks: Task) -> int:
    """The number of tasks in a batch: the length of its leaves' leading axis."""
    return jax.tree.leaves(tasks)[0].shape[0]


def automatic_micro_batches(meta_batch_size: int, devices: int = 1) -> int:
    """The number of micro-batches that ``micro_batches=0`` (automatic) stands for.

    On a CPU, it is the fewest chunks that give each of the ``devices`` that share a batch at
    most :data:`CPU_CHUNK_TASKS` tasks at once, if they give it at least a quarter of that (a
    meta-batch without such a divisor runs whole). On other platforms, whose large batches run
    fast, it is 1.
    """
    share = meta_batch_size // devices
    if jax.default_backend() != "cpu" or share <= CPU_CHUNK_TASKS:
        return 1
    # The largest chunk that divides the share gives the fewest chunks.
    sizes = range(CPU_CHUNK_TASKS, CPU_CHUNK_TASKS // 4 - 1, -1)
    size = next((size for size in sizes if share % size == 0), share)
    return share // size
