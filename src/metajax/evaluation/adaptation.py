"""Measuring few-shot adaptation on held-out tasks: curves over inner steps, and statistics."""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from metajax.core.meta_learner import MetaLearner, Params
from metajax.core.task import Task


def adaptation_curve(
    learner: MetaLearner,
    metric_fn: Callable[[Params, Any], Any],
    meta_params: Params,
    tasks: Task,
    adapt_steps: int,
    *,
    batch_size: int | None = None,
) -> Any:
    """The query metrics of every task before adaptation and after each inner step.

    Only the metrics are kept, not each step's parameters, so memory grows with
    ``adapt_steps`` by a few numbers per task.

    Args:
      learner: the algorithm whose inner loop adapts.
      metric_fn: ``metric_fn(params, batch)``, a scalar (e.g. the loss) or a pytree of them
        (e.g. ``{"loss": ..., "accuracy": ...}``).
      meta_params: the meta-parameters to adapt from.
      tasks: a task batch (leading task axis).
      adapt_steps: the number of inner steps, ``>= 0``.
      batch_size: adapt this many tasks at once, one batch after another (``lax.map``), to
        bound the memory; ``None`` adapts all of them at once (``vmap``).

    Returns:
      ``metric_fn``'s structure with leaves of shape ``[num_tasks, adapt_steps + 1]``; column
      ``s`` is the metric after ``s`` inner steps on the support set, measured on the query set.
    """

    def one_task(task: Task) -> Any:
        return learner.adapt_trajectory(
            meta_params,
            task.support,
            adapt_steps,
            observe=lambda params: metric_fn(params, task.query),
        )

    if batch_size is None:
        return jax.vmap(one_task)(tasks)
    return jax.lax.map(one_task, tasks, batch_size=batch_size)


def mean_and_ci95(values: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
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


def summarise(
    values: Any, *, higher_is_better: bool = False, axis: int = 0
) -> dict[str, list[float | None]]:
    """The statistics papers report of a metric over tasks: ``mean``, ``ci95`` (the half-width
    of the 95% confidence interval), ``median`` (a task whose value is not finite, one whose
    adaptation diverged, counting as the worst possible) and ``non_finite`` (how many such
    tasks). Lists over the other axis, JSON-ready: ``None`` stands for a value that is not
    finite."""
    values = np.asarray(values, dtype=np.float64)
    mean, ci95 = mean_and_ci95(values, axis=axis)
    worst = -np.inf if higher_is_better else np.inf
    median = np.median(np.where(np.isnan(values), worst, values), axis=axis)
    return {
        "mean": finite_or_none(mean),
        "ci95": finite_or_none(ci95),
        "median": finite_or_none(median),
        "non_finite": np.sum(~np.isfinite(values), axis=axis).tolist(),
    }


def finite_or_none(values: Any) -> list[float | None]:
    """A list for JSON, which has no nan: a value that is not finite becomes None (null)."""
    return [float(value) if np.isfinite(value) else None for value in np.asarray(values)]
