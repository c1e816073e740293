"""The meta-training loop: many meta-steps fused into one compiled call."""

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array, lax
from jax.sharding import Mesh
from tqdm import tqdm

from metajax import _validation, memory, multi_process, sharding
from metajax.algorithms.meta_learner import MetaLearner, Params
from metajax.micro_batching import task_count
from metajax.tasks.task import Task

TaskSampler = Callable[[Array], Task]
"""``sample_tasks(key) -> Task``: a pure, jit-able function drawing one task batch. It may be a
pytree (an ``equinox.Module``, say) whose array leaves hold data, such as a whole image set:
:func:`meta_train` passes those arrays to the compiled call as arguments, where they would
otherwise be compiled into the program as constants."""


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
    meta_steps: int,
    steps_per_draw: int | None = None,
    mesh: Mesh | None = None,
) -> tuple[TrainState, Array]:
    """Takes ``meta_steps`` meta-steps; pure, meant to run under ``jax.jit``.

    The task batches of ``steps_per_draw`` steps (all of them by default) are drawn in one
    vectorised call, then a ``lax.scan`` takes one optimizer step on the meta-gradient of each
    batch. Drawing many at once is several times cheaper on a CPU for small tasks; drawing few
    bounds the memory the task batches take. Meta-step ``i`` trains on the tasks of
    ``sample_tasks(fold_in(state.key, i))`` either way. With a ``mesh`` (see
    :mod:`metajax.sharding`), each batch is sharded over its ``tasks`` axis.

    Returns:
      The new state and the meta-loss of every step, shape ``[meta_steps]``.
    """
    new_state, losses, _, _ = _train_steps(
        learner, optimizer, sample_tasks, state, meta_steps, steps_per_draw, mesh, False
    )
    return new_state, losses


Carry = tuple[Params, optax.OptState]
"""What the scan over meta-steps carries: the meta-parameters and the optimizer's state."""
StepOutputs = tuple[Array, dict[str, Array], Array | None]
"""What each meta-step gives out: its meta-loss, its aux metrics, whether its gradient is finite."""


def _train_steps(
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sample_tasks: TaskSampler,
    state: TrainState,
    meta_steps: int,
    steps_per_draw: int | None,
    mesh: Mesh | None,
    check_grads: bool,
) -> tuple[TrainState, Array, dict[str, Array], Array | None]:
    """:func:`train_steps`, with each step's aux metrics (``{}`` without ``has_aux``), and with
    ``check_grads`` whether each step's meta-gradient is all finite (``[meta_steps]`` bools;
    else ``None``). The check costs about a fifth of the speed on small models, so
    :func:`meta_train` runs it only to explain a call that went non-finite."""

    def meta_step(carry: Carry, step_and_tasks: tuple[Array, Task]) -> tuple[Carry, StepOutputs]:
        meta_params, opt_state = carry
        step, tasks = step_and_tasks
        schedule = (step,) if learner.uses_meta_step else ()
        value, grads = learner.meta_grad(meta_params, tasks, *schedule)
        loss, aux = value if learner.has_aux else (value, {})
        updates, opt_state = optimizer.update(grads, opt_state, meta_params)
        grads_finite = _all_finite(grads) if check_grads else None
        return (optax.apply_updates(meta_params, updates), opt_state), (loss, aux, grads_finite)

    def draw_and_train(carry: Carry, first_step: Array, count: int) -> tuple[Carry, StepOutputs]:
        steps = first_step + jnp.arange(count, dtype=jnp.int32)
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(state.key, steps)
        tasks = jax.vmap(sample_tasks)(step_keys)
        if mesh is not None:  # each device draws and adapts its share of every batch
            tasks = lax.with_sharding_constraint(tasks, sharding.task_sharded(mesh, 1))
        return lax.scan(meta_step, carry, (steps, tasks))

    carry = (state.meta_params, state.opt_state)
    draw = meta_steps if steps_per_draw is None else min(steps_per_draw, meta_steps)
    draws, rest = divmod(meta_steps, draw)
    if draws == 1:
        carry, outputs = draw_and_train(carry, state.step, draw)
    else:  # a scan over draws, each a scan over its steps

        def one_draw(carry: Carry, index: Array) -> tuple[Carry, StepOutputs]:
            return draw_and_train(carry, state.step + index * draw, draw)

        carry, outputs = lax.scan(one_draw, carry, jnp.arange(draws, dtype=jnp.int32))
        outputs = jax.tree.map(lambda leaf: leaf.reshape(-1, *leaf.shape[2:]), outputs)
    if rest:
        carry, last = draw_and_train(carry, state.step + draws * draw, rest)
        outputs = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), outputs, last)
    losses, aux, grads_finite = outputs
    meta_params, opt_state = carry
    new_state = TrainState(state.step + meta_steps, meta_params, opt_state, state.key)
    return new_state, losses, aux, grads_finite


def _train_steps_on(
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sampler_static: Any,
    sampler_data: Any,
    state: TrainState,
    meta_steps: int,
    steps_per_draw: int | None,
    mesh: Mesh | None,
    check_grads: bool,
) -> tuple[TrainState, Array, dict[str, Array], Array | None]:
    """:func:`_train_steps` with the sampler split by ``eqx.partition`` into its arrays, which
    are traced, and the rest, which is static."""
    sample_tasks = eqx.combine(sampler_data, sampler_static)
    return _train_steps(
        learner, optimizer, sample_tasks, state, meta_steps, steps_per_draw, mesh, check_grads
    )


def _all_finite(tree: Any) -> Array:
    """Whether every entry of every floating-point leaf of ``tree`` is finite (a bool scalar)."""
    leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.isfinite(leaf).all() for leaf in leaves]))


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
        sampler's data replicated on its devices (see :mod:`metajax.sharding`); the number of
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
    run = jax.jit(
        _train_steps_on, static_argnums=(0, 1, 2, 5, 6, 7, 8), out_shardings=out_shardings
    )

    def arguments(state: TrainState, size: int, check_grads: bool) -> tuple:
        """``run``'s arguments for a call of ``size`` steps from ``state``."""
        call = (sampler_data, state, size, steps_per_draw, mesh, check_grads)
        return (learner, optimizer, sampler_static, *call)

    compile_seconds = 0.0
    compiled = {}
    # Each process checks its own free memory: one that refuses stops the others.
    with multi_process.together("compiling meta-training"):
        for size in sorted(
            _distinct_chunk_sizes(first_step, meta_steps, steps_per_call, checkpoint_every)
        ):
            start = time.perf_counter()
            compiled[size] = memory.compile_checked(
                run, *arguments(state, size, False), what="meta-training"
            )
            compile_seconds += time.perf_counter() - start

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
            with memory.converted("meta-training"):
                new_state, chunk_losses, chunk_aux, _ = compiled[size](sampler_data, state)
            chunk_losses = np.asarray(chunk_losses, dtype=np.float64)
            if not (np.isfinite(chunk_losses).all() and _params_finite(new_state.meta_params)):
                replay = run(*arguments(state, size, True))
                _raise_non_finite(state, replay[0], replay[1], replay[3])
            chunk_aux = {name: np.asarray(v, dtype=np.float64) for name, v in chunk_aux.items()}
            state = new_state
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


_params_finite = jax.jit(_all_finite)


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
