"""Task batches sharded over devices, along one mesh axis: ``tasks``.

Meta-training over several devices keeps the meta-parameters, the optimizer's state and the
task sampler's data replicated on every device of a :class:`jax.sharding.Mesh`, and shards each
meta-step's task batch over the mesh's ``tasks`` axis: XLA's SPMD partitioner then draws and
adapts each device's share of the tasks on that device and sums the meta-gradient across
devices. The tasks are drawn inside the compiled call from the meta-step's key, so the batch,
and so the result, is the same whatever the number of devices or processes (up to the order in
which float additions are done). In a multi-process run (see :mod:`metajax.core.multi_process`) the
mesh holds the devices of every process.
"""

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from metajax import _validation

TASKS = "tasks"
"""The name of the mesh axis that task batches are sharded over."""


def task_mesh(devices: int | None = None) -> Mesh:
    """A mesh of the first ``devices`` of ``jax.devices()`` (all of them by default) along the
    ``tasks`` axis.

    Raises:
      OptionError: if ``devices`` is not an integer between 1 and the number of devices.
    """
    available = jax.devices()
    if devices is not None:
        devices = _validation.integer("devices", devices, 1, len(available))
        processes = jax.process_count()
        if processes > 1 and devices != len(available):
            raise _validation.OptionError(
                "devices",
                f"all {len(available)} devices of the {processes} processes of a multi-process run",
                devices,
            )
    return Mesh(np.array(available[:devices]), (TASKS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of values every device holds whole: meta-parameters, optimizer state."""
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` with each array leaf made a global array that every device of ``mesh`` holds
    whole. Each process gives its own copy of the same values: unlike ``jax.device_put``, this
    also places them on the devices of other processes in a multi-process run."""
    target = replicated(mesh)

    def put(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and leaf.sharding == target:
            return leaf
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):  # its raw key data, wrapped
            wrap = functools.partial(jax.random.wrap_key_data, impl=jax.random.key_impl(leaf))
            return jax.jit(wrap, out_shardings=target)(put(jax.random.key_data(leaf)))
        values = np.asarray(leaf)
        return jax.make_array_from_callback(values.shape, target, lambda index: values[index])

    return jax.tree.map(put, tree)


def task_sharded(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
    """The sharding of a task batch whose task axis comes after ``leading_axes`` others (the
    meta-steps' axis of the batches drawn for several steps at once, say)."""
    return NamedSharding(mesh, PartitionSpec(*[None] * leading_axes, TASKS))


def check_divisible(task_count: int, mesh: Mesh) -> None:
    """Each device of ``mesh`` must get the same number of a batch's tasks.

    Raises:
      OptionError: naming ``meta_batch_size``, with the nearest sizes that divide evenly.
    """
    devices = mesh.size
    if task_count % devices:
        below = task_count // devices * devices
        nearest = f"{below} or {below + devices}" if below else f"{devices}"
        # A multi-process run takes all devices (see task_mesh).
        fewer = ", or run on fewer devices" if jax.process_count() == 1 else ""
        raise _validation.OptionError(
            "meta_batch_size",
            f"a multiple of the {devices} devices that share each task batch ({nearest}, say)"
            f"{fewer}",
            task_count,
        )
