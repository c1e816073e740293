"""The meta-training loop: many meta-steps fused into each compiled call, with Python between
calls only to check the values, show progress and hand each call's results on."""

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np
import optax
from jax import Array
from jax.sharding import Mesh
from tqdm import tqdm

from metajax import _validation
from metajax.core import memory, multi_process, sharding
from metajax.core.meta_learner import MetaLearner
from metajax.core.meta_steps import TaskSampler, TrainState, train_steps_on
from metajax.core.micro_batching import task_count


class TrainResult(NamedTuple):
    """What :func:`meta_train` returns.

    Attributes:
      state: the final training state.
      losses: the meta-loss of every meta-step taken, shape ``[meta_steps]``, float64 numpy.
      aux: for a learner with ``has_aux``, the mean of each ``aux`` value over each meta-step's
        tasks, by name, each of shape ``[meta_steps]`` (float64 numpy); else empty.
      compile_seconds: time spent compiling.
      train_seconds: time spent running the compiled meta-steps.
    """

    state: TrainState
    losses: np.ndarray
    aux: dict[str, np.ndarray]
    compile_seconds: float
    train_seconds: float


class NonFiniteError(FloatingPointError):
    """Meta-training produced a meta-loss, meta-gradient or meta-parameter that is not finite.

    Attributes:
      step: the first bad meta-step, counted from 1 like ``TrainState.step`` after it.
      quantities: what went non-finite there: ``"meta-loss"``, ``"meta-gradient"`` (or both),
        or ``"meta-parameters"`` (an update overflowed though the gradient was finite).
      meta_loss: that step's meta-loss.
      state: the state before the compiled call that went bad, the last one known to be finite.
    """

    def __init__(self, step: int, quantities: str, meta_loss: float, state: TrainState):
        self.step = step
        self.quantities = quantities
        self.meta_loss = meta_loss
        self.state = state
        super().__init__(
            f"the {quantities} became non-finite at meta-step {step} (meta-loss {meta_loss:g})"
        )


OnChunk = Callable[[TrainState, np.ndarray, dict[str, np.ndarray]], None]
"""``on_chunk(state, losses, aux)``: called by :func:`meta_train` after each compiled call."""


def meta_train(
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sample_tasks: TaskSampler,
    state: TrainState,
    *,
    meta_steps: int,
    steps_per_call: int = 1000,
    steps_per_draw: int | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    on_chunk: OnChunk | None = None,
    mesh: Mesh | None = None,
) -> TrainResult:
    """Meta-trains for ``meta_steps`` steps, at most ``steps_per_call`` of them per compiled call.

    Python runs only between calls: to check that the call's meta-losses and the meta-parameters
    after it are finite, to update the progress bar and to hand the new state and the call's
    meta-losses to ``on_chunk`` (which may save a checkpoint, or raise to stop).

    Args:
      learner: the algorithm, e.g. :func:`metajax.maml`.
      optimizer: the outer optimizer, e.g. ``optax.adam(1e-3)``.
      sample_tasks: ``sample_tasks(key) -> Task``, one task batch per meta-step.
      state: where to start: from :func:`init_train_state`, or a restored checkpoint.
      meta_steps: how many meta-steps to take, ``>= 1``.
      steps_per_call: the most meta-steps one compiled call takes, ``>= 1``.
      steps_per_draw: how many meta-steps' task batches are drawn at once (see
        :func:`train_steps`); by default those of a whole call. The result is the same.
      checkpoint_every: if given, a call also ends whenever ``TrainState.step`` reaches a
        multiple of it, so that ``on_chunk`` sees the state there.
      progress: show a progress bar (on stderr) with the running meta-loss (on process 0 only,
        in a multi-process run).
      on_chunk: called after each compiled call with the state after it, that call's
        meta-losses and its aux metrics (float64 numpy, as in :class:`TrainResult`).
      mesh: shard every task batch over this mesh's ``tasks`` axis, with the state and the
        sampler's data replicated on its devices (see :mod:`metajax.core.sharding`); the number of
        tasks of a batch must be a multiple of its number of devices. By default everything
        runs on the default device.

    Returns:
      A :class:`TrainResult`.

    Raises:
      OptionError: if ``meta_steps``, ``steps_per_call``, ``steps_per_draw`` or
        ``checkpoint_every`` is not a positive integer, or (``meta_batch_size``) the tasks of a
        batch do not divide evenly over the devices of ``mesh``.
      OutOfMemoryError: if a compiled call needs more memory than the device has; nothing has
        run then.
      NonFiniteError: after the first compiled call with a non-finite meta-loss or
        meta-parameter; ``on_chunk`` is not called for it. The call is then replayed with a
        check of every meta-gradient to name the first bad step and what went wrong there.
    """
    meta_steps = _validation.integer("meta_steps", meta_steps, 1)
    steps_per_call = _validation.integer("steps_per_call", steps_per_call, 1)
    if steps_per_draw is not None:
        steps_per_draw = _validation.integer("steps_per_draw", steps_per_draw, 1)
    if checkpoint_every is not None:
        checkpoint_every = _validation.integer("checkpoint_every", checkpoint_every, 1)
    first_step = int(state.step)

    sampler_data, sampler_static = eqx.partition(sample_tasks, eqx.is_array)
    out_shardings = None
    if mesh is not None:
        sharding.check_divisible(task_count(jax.eval_shape(sample_tasks, state.key)), mesh)
        out_shardings = sharding.replicated(mesh)
        state, sampler_data = sharding.replicate((state, sampler_data), mesh)
    run = jax.jit(train_steps_on, static_argnums=(0, 1, 2, 5, 6, 7, 8), out_shardings=out_shardings)

    def arguments(state: TrainState, size: int, check_grads: bool) -> tuple:
        """``run``'s arguments for a call of ``size`` steps from ``state``."""
        call = (sampler_data, state, size, steps_per_draw, mesh, check_grads)
        return (learner, optimizer, sampler_static, *call)

    sizes = _distinct_chunk_sizes(first_step, meta_steps, steps_per_call, checkpoint_every)
    compiled, compile_seconds = _compile(run, arguments, state, sizes)
    losses, aux = [], []
    start = time.perf_counter()
    with tqdm(
        total=first_step + meta_steps,
        initial=first_step,
        disable=not (progress and multi_process.is_writer()),
        unit="step",
        desc="meta-train",
    ) as bar:
        for size in _chunk_sizes(first_step, meta_steps, steps_per_call, checkpoint_every):
            state, chunk_losses, chunk_aux = _call(
                compiled[size], run, arguments, sampler_data, state, size
            )
            losses.append(chunk_losses)
            aux.append(chunk_aux)
            bar.set_postfix(meta_loss=f"{chunk_losses.mean():.4g}", refresh=False)
            bar.update(size)
            if on_chunk is not None:
                on_chunk(state, chunk_losses, chunk_aux)
    jax.block_until_ready(state)
    return TrainResult(
        state=state,
        losses=np.concatenate(losses),
        aux={name: np.concatenate([chunk[name] for chunk in aux]) for name in aux[0]},
        compile_seconds=compile_seconds,
        train_seconds=time.perf_counter() - start,
    )


Arguments = Callable[[TrainState, int, bool], tuple]
"""``arguments(state, size, check_grads)``: the training program's arguments for a call of
``size`` meta-steps from ``state``."""


def _compile(
    run: Any, arguments: Arguments, state: TrainState, sizes: set[int]
) -> tuple[dict[int, Any], float]:
    """The training program compiled for each call size, each checked against the memory
    available, and the seconds that took."""
    compiled, seconds = {}, 0.0
    # Each process checks its own free memory: one that refuses stops the others.
    with multi_process.together("compiling meta-training"):
        for size in sorted(sizes):
            start = time.perf_counter()
            compiled[size] = memory.compile_checked(
                run, *arguments(state, size, False), what="meta-training"
            )
            seconds += time.perf_counter() - start
    return compiled, seconds


def _call(
    compiled: Any,
    run: Any,
    arguments: Arguments,
    sampler_data: Any,
    state: TrainState,
    size: int,
) -> tuple[TrainState, np.ndarray, dict[str, np.ndarray]]:
    """One compiled call of ``size`` meta-steps from ``state``: the state after it, and its
    meta-losses and aux metrics as float64 numpy. A call that went non-finite is replayed with
    every meta-gradient checked, to raise :class:`NonFiniteError` naming the first bad step."""
    with memory.converted("meta-training"):
        new_state, losses, aux, _, params_finite = compiled(sampler_data, state)
    losses = np.asarray(losses, dtype=np.float64)
    if not (np.isfinite(losses).all() and bool(params_finite)):
        replay = run(*arguments(state, size, True))
        _raise_non_finite(state, replay[0], replay[1], replay[3])
    return new_state, losses, {name: np.asarray(v, dtype=np.float64) for name, v in aux.items()}


def _stretches(first_step: int, meta_steps: int, checkpoint_every: int | None) -> Iterator[int]:
    """The lengths of the stretches of steps between multiples of ``checkpoint_every`` (and the
    first and the last step), one at a time: there may be as many as steps."""
    last_step = first_step + meta_steps
    position = first_step
    if checkpoint_every is not None:
        boundary = (first_step // checkpoint_every + 1) * checkpoint_every
        while boundary < last_step:
            yield boundary - position
            position, boundary = boundary, boundary + checkpoint_every
    yield last_step - position


def _chunk_sizes(
    first_step: int, meta_steps: int, steps_per_call: int, checkpoint_every: int | None
) -> Iterator[int]:
    """The sizes of the compiled calls, one at a time: each at most ``steps_per_call``, ending at
    every multiple of ``checkpoint_every`` and at the last step."""
    for length in _stretches(first_step, meta_steps, checkpoint_every):
        full, rest = divmod(length, steps_per_call)
        yield from itertools.repeat(steps_per_call, full)
        if rest:
            yield rest


def _distinct_chunk_sizes(
    first_step: int, meta_steps: int, steps_per_call: int, checkpoint_every: int | None
) -> set[int]:
    """The set of :func:`_chunk_sizes`, without going through them: the stretches are the first
    one, the last one and, between them, whole periods of ``checkpoint_every`` steps."""
    last_step = first_step + meta_steps
    lengths = {meta_steps}
    if checkpoint_every is not None:
        first_boundary = (first_step // checkpoint_every + 1) * checkpoint_every
        if first_boundary < last_step:
            last_boundary = (last_step - 1) // checkpoint_every * checkpoint_every
            lengths = {first_boundary - first_step, last_step - last_boundary}
            if last_boundary > first_boundary:
                lengths.add(checkpoint_every)
    sizes = {steps_per_call for length in lengths if length >= steps_per_call}
    return sizes | {length % steps_per_call for length in lengths if length % steps_per_call}


def _raise_non_finite(
    state: TrainState, new_state: TrainState, replayed_losses: Array, replayed_grads: Array
) -> None:
    """Raises :class:`NonFiniteError` for the first bad step of a replayed call from ``state``."""
    losses = np.asarray(replayed_losses, dtype=np.float64)
    loss_finite, grads_finite = np.isfinite(losses), np.asarray(replayed_grads)
    bad = ~loss_finite | ~grads_finite
    if bad.any():
        first = int(np.argmax(bad))
        quantities = " and ".join(
            name
            for name, finite in (("meta-loss", loss_finite), ("meta-gradient", grads_finite))
            if not finite[first]
        )
    else:  # finite gradients, but an update overflowed somewhere in the call
        first, quantities = len(losses) - 1, "meta-parameters"
    raise NonFiniteError(int(state.step) + first + 1, quantities, float(losses[first]), state)
