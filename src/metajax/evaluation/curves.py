"""The adaptation curves of a run on held-out tasks: every metric of every task after each inner
step, computed in one compiled program per run config and task sizes, for one step size or for
several at once."""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from metajax import options
from metajax.config.algorithm import Algorithm
from metajax.config.family import TaskFamily, family_learner, family_loss
from metajax.config.streams import TEST_STREAM, VALIDATION_STREAM, stream_key
from metajax.core import memory
from metajax.core.meta_learner import Params
from metajax.core.task import Task
from metajax.evaluation.adaptation import adaptation_curve
from metajax.evaluation.settings import EvalSettings, query_size
from metajax.options import declared
from metajax.runs.loaded_run import LoadedRun


class HeldOutTasks(NamedTuple):
    """Which held-out tasks to draw: ``family.eval_tasks(key, *sizes)``, or
    ``family.validation_tasks`` for the validation stream."""

    key: jax.Array
    num_tasks: int
    shots: int
    query_shots: int
    stream: int

    def draw(self, family: TaskFamily) -> Task:
        sizes = (self.key, self.num_tasks, self.shots, self.query_shots)
        if self.stream == VALIDATION_STREAM:
            return family.validation_tasks(*sizes)
        return family.eval_tasks(*sizes)


def held_out_tasks(
    family: TaskFamily, settings: EvalSettings, shots: int, stream: int = TEST_STREAM
) -> HeldOutTasks:
    num_tasks = settings.num_tasks if stream == TEST_STREAM else settings.validation_tasks
    key = stream_key(settings.eval_seed, stream)
    return HeldOutTasks(key, num_tasks, shots, query_size(family, settings, shots), stream)


def evaluation_tasks(
    family: TaskFamily, settings: EvalSettings, shots: int, stream: int = TEST_STREAM
) -> Task:
    """The held-out K-shot tasks, from the evaluation seed's ``stream`` (test or validation)."""
    return held_out_tasks(family, settings, shots, stream).draw(family)


@eqx.filter_jit
def _curves(
    family: TaskFamily,
    algorithm: Algorithm,
    meta_params: Params,
    static: Any,
    which: HeldOutTasks,
    adapt_steps: int,
    inner_lrs: jax.Array | None,
) -> dict[str, jax.Array]:
    """Every metric of every task after 0..adapt_steps steps, for each step size in
    ``inner_lrs`` (or the algorithm's own if ``None``): leaves of shape [G, N, S + 1].

    The tasks are drawn inside, so that memory is checked before they take any. Compiled once
    per run config and task sizes: the meta-parameters and the key are traced."""
    tasks = which.draw(family)
    loss_fn = family_loss(family, static)
    loss_name = family.loss_metric()

    def metrics(params: Params, batch: Any) -> dict[str, jax.Array]:
        loss, aux = loss_fn(params, batch)
        return {loss_name: loss, **aux}

    def with_step_size(inner_lr: jax.Array | None) -> dict[str, jax.Array]:
        changed = algorithm if inner_lr is None else options.replace(algorithm, inner_lr=inner_lr)
        learner = family_learner(family, changed, static)
        return adaptation_curve(
            learner, metrics, meta_params, tasks, adapt_steps, batch_size=family.eval_batch_size
        )

    if inner_lrs is None:
        return jax.tree.map(lambda leaf: leaf[None], with_step_size(None))
    return jax.vmap(with_step_size)(inner_lrs)


def run_curves(run: LoadedRun, which: HeldOutTasks, adapt_steps: int, inner_lrs: Any) -> dict:
    args = (
        run.config.task,
        run.config.algorithm,
        run.meta_params,
        run.static,
        which,
        adapt_steps,
        inner_lrs,
    )
    memory.compile_checked(_curves, *args, what="evaluation")
    with memory.converted("evaluation"):
        return jax.tree.map(lambda leaf: np.asarray(leaf, dtype=np.float64), _curves(*args))


def step_size_curves(
    run: LoadedRun, which: HeldOutTasks, adapt_steps: int, step_sizes: tuple[float, ...] | None
) -> dict[str, np.ndarray]:
    """:func:`_curves` with each step size (the algorithm's own if ``None``): in one vmapped
    call if the algorithm's ``inner_lr`` may be traced, else one call for each."""
    if step_sizes is None:
        return run_curves(run, which, adapt_steps, None)
    if getattr(declared(run.config.algorithm)["inner_lr"], "traceable", False):
        return run_curves(run, which, adapt_steps, jnp.asarray(step_sizes))
    each = [
        run_curves(run._replace(config=run.config.replace(inner_lr=lr)), which, adapt_steps, None)
        for lr in step_sizes
    ]
    return {name: np.concatenate([curves[name] for curves in each]) for name in each[0]}


def split_step_sizes(curves: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    count = len(next(iter(curves.values())))
    return [{name: values[g] for name, values in curves.items()} for g in range(count)]
