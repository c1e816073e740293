"""Measuring few-shot adaptation on held-out tasks."""

from collections.abc import Callable
from typing import Any

import jax
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
