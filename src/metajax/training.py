"""The meta-training loop: many meta-steps fused into one compiled call."""

import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array, lax
from tqdm import tqdm

from metajax import _validation
from metajax.algorithms.meta_learner import MetaLearner, Params
from metajax.tasks.task import Task

TaskSampler = Callable[[Array], Task]
"""``sample_tasks(key) -> Task``: a pure, jit-able function drawing one task batch."""


class TrainState(NamedTuple):
    """Everything meta-training carries from one meta-step to the next.

    Attributes:
      step: the number of meta-steps taken so far (int32 scalar).
      meta_params: the meta-parameters being learned.
      opt_state: the optax state of the outer optimizer.
      key: the root of the task stream: meta-step ``i`` trains on
        ``sample_tasks(jax.random.fold_in(key, i))``, so the tasks depend only on the key and the
        step, never on how the steps are grouped into compiled calls.
    """

    step: Array
    meta_params: Params
    opt_state: optax.OptState
    key: Array


def init_train_state(
    learner: MetaLearner, optimizer: optax.GradientTransformation, params: Params, key: Array
) -> TrainState:
    """The state before the first meta-step."""
    meta_params = learner.init(params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        meta_params=meta_params,
        opt_state=optimizer.init(meta_params),
        key=key,
    )


def train_steps(
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sample_tasks: TaskSampler,
    state: TrainState,
    num_steps: int,
) -> tuple[TrainState, Array]:
    """Takes ``num_steps`` meta-steps; pure, meant to run under ``jax.jit``.

    The task batches of all the steps are drawn first, in one vectorised call (on CPU this is
    several times cheaper than drawing them one step at a time inside the loop), then a
    ``lax.scan`` takes one optimizer step on the meta-gradient of each batch.

    Returns:
      The new state and the meta-loss of every step, shape ``[num_steps]``.
    """
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(
        state.key, state.step + jnp.arange(num_steps, dtype=jnp.int32)
    )
    task_batches = jax.vmap(sample_tasks)(step_keys)

    def meta_step(carry, tasks):
        meta_params, opt_state = carry
        loss, grads = learner.meta_grad(meta_params, tasks)
        updates, opt_state = optimizer.update(grads, opt_state, meta_params)
        return (optax.apply_updates(meta_params, updates), opt_state), loss

    (meta_params, opt_state), losses = lax.scan(
        meta_step, (state.meta_params, state.opt_state), task_batches
    )
    new_state = TrainState(state.step + num_steps, meta_params, opt_state, state.key)
    return new_state, losses


class TrainResult(NamedTuple):
    """What :func:`meta_train` returns.

    Attributes:
      state: the final training state.
      losses: the meta-loss of every meta-step, shape ``[num_steps]``, float64 numpy.
      compile_seconds: time spent compiling.
      train_seconds: time spent running the compiled meta-steps.
    """

    state: TrainState
    losses: np.ndarray
    compile_seconds: float
    train_seconds: float


def meta_train(
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sample_tasks: TaskSampler,
    state: TrainState,
    *,
    num_steps: int,
    steps_per_call: int = 1000,
    progress: bool = True,
    on_chunk: Callable[[int, np.ndarray], None] | None = None,
) -> TrainResult:
    """Meta-trains for ``num_steps`` steps, ``steps_per_call`` of them per compiled call.

    Python runs only between calls: to update the progress bar and to hand each chunk's
    meta-losses to ``on_chunk``.

    Args:
      learner: the algorithm, e.g. :func:`metajax.maml`.
      optimizer: the outer optimizer, e.g. ``optax.adam(1e-3)``.
      sample_tasks: ``sample_tasks(key) -> Task``, one task batch per meta-step.
      state: where to start, from :func:`init_train_state`.
      num_steps: how many meta-steps to take, ``>= 1``.
      steps_per_call: how many meta-steps each compiled call takes, ``>= 1``.
      progress: show a progress bar (on stderr) with the running meta-loss.
      on_chunk: called after each compiled call with the state's step count after it (the
        number of meta-steps taken in all, ``TrainState.step``) and that call's meta-losses.

    Returns:
      A :class:`TrainResult`.

    Raises:
      ValueError: if ``num_steps`` or ``steps_per_call`` is not a positive integer.
    """
    num_steps = _validation.integer("num_steps", num_steps, 1)
    steps_per_call = _validation.integer("steps_per_call", steps_per_call, 1)

    chunk_sizes = [steps_per_call] * (num_steps // steps_per_call)
    if num_steps % steps_per_call:
        chunk_sizes.append(num_steps % steps_per_call)

    compile_seconds = 0.0
    compiled = {}
    for size in sorted(set(chunk_sizes)):
        start = time.perf_counter()
        compiled[size] = (
            jax.jit(train_steps, static_argnums=(0, 1, 2, 4))
            .lower(learner, optimizer, sample_tasks, state, size)
            .compile()
        )
        compile_seconds += time.perf_counter() - start

    losses = []
    step = int(state.step)
    start = time.perf_counter()
    with tqdm(total=num_steps, disable=not progress, unit="step", desc="meta-train") as bar:
        for size in chunk_sizes:
            state, chunk_losses = compiled[size](state)
            chunk_losses = np.asarray(chunk_losses, dtype=np.float64)
            losses.append(chunk_losses)
            step += size
            bar.set_postfix(meta_loss=f"{chunk_losses.mean():.4g}", refresh=False)
            bar.update(size)
            if on_chunk is not None:
                on_chunk(step, chunk_losses)
    jax.block_until_ready(state)
    return TrainResult(
        state=state,
        losses=np.concatenate(losses),
        compile_seconds=compile_seconds,
        train_seconds=time.perf_counter() - start,
    )
