"""Measuring few-shot adaptation on held-out tasks."""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax import Array

from metajax.algorithms.meta_learner import MetaLearner, Params
from metajax.tasks.task import Task


def adaptation_curve(
    learner: MetaLearner,
    metric_fn: Callable[[Params, Any], Array],
    meta_params: Params,
    tasks: Task,
    num_steps: int,
) -> Array:
    """The query metric of every task before adaptation and after each inner step.

    Args:
      learner: the algorithm whose inner loop adapts.
      metric_fn: ``metric_fn(params, batch) -> scalar``, e.g. the training loss.
      meta_params: the meta-parameters to adapt from.
      tasks: a task batch (leading task axis).
      num_steps: the number of inner steps, ``>= 0``.

    Returns:
      An array of shape ``[num_tasks, num_steps + 1]``; column ``s`` is the metric after ``s``
      inner steps on the support set, measured on the query set.
    """

    def one_task(task: Task) -> Array:
        trajectory = learner.adapt_trajectory(meta_params, task.support, num_steps)
        return jax.vmap(metric_fn, in_axes=(0, None))(trajectory, task.query)

    return jax.vmap(one_task)(tasks)


def mean_and_ci95(values, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The mean over ``axis`` and the half-width of its 95% confidence interval.

    The half-width is ``1.96 * s / sqrt(n)``, with ``s`` the standard deviation of the ``n``
    values (``numpy.std``, ``ddof=0``): the normal approximation that the MAML paper's code
    used for means over hundreds of tasks.

    Returns:
      ``(mean, half_width)``, float64 numpy arrays without ``axis``; nan where a value is not
      finite.
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis]
    if n < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {n}")
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite value gives nan, silently
        return values.mean(axis=axis), 1.96 * values.std(axis=axis) / np.sqrt(n)
