"""Task batches sharded over devices, along one mesh axis: ``tasks``.

Meta-training over several devices keeps the meta-parameters, the optimizer's state and the
task sampler's data replicated on every device of a :class:`jax.sharding.Mesh`, and shards each
meta-step's task batch over the mesh's ``tasks`` axis: XLA's SPMD partitioner then draws and
adapts each device's share of the tasks on that device and sums the meta-gradient across
devices. The tasks are drawn inside the compiled call from the meta-step's key, so the batch,
and so the result, is the same whatever the number of devices (up to the order in which float
additions are done).
"""

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
    return Mesh(np.array(available[:devices]), (TASKS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of values every device holds whole: meta-parameters, optimizer state."""
    return NamedSharding(mesh, PartitionSpec())


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
        raise _validation.OptionError(
            "meta_batch_size",
            f"a multiple of the {devices} devices that share each task batch ({nearest}, say), "
            "or run on fewer devices",
            task_count,
        )
