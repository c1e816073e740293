"""Meta-steps in one compiled call: the state they carry, and the ``lax.scan`` that draws each
step's task batch and takes an optimizer step on its meta-gradient."""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array, lax
from jax.sharding import Mesh

from metajax.core import sharding
from metajax.core.meta_learner import MetaLearner, Params
from metajax.core.task import Task

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
        opt_state=outer_optimizer(learner, optimizer).init(meta_params),
        key=key,
    )


def outer_optimizer(
    learner: MetaLearner, optimizer: optax.GradientTransformation
) -> optax.GradientTransformation:
    """``optimizer`` as it sees the meta-parameters: all of them, or, for a learner that
    carries a state in them (see :class:`~metajax.core.meta_learner.CarriedState`), only their
    trainable part, so that it keeps no moments of the state. Updates that the learner scales
    (see :class:`~metajax.core.meta_learner.ScaledUpdates`) are multiplied after it."""
    scaled = learner.scaled_updates
    if scaled is not None:
        optimizer = optax.chain(optimizer, optax.masked(optax.scale(scaled.scale), scaled.mask))
    if learner.carried_state is None:
        return optimizer
    return optax.masked(optimizer, learner.carried_state.trainable)


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
    :mod:`metajax.core.sharding`), each batch is sharded over its ``tasks`` axis.

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

    outer = outer_optimizer(learner, optimizer)

    def meta_step(carry: Carry, step_and_tasks: tuple[Array, Task]) -> tuple[Carry, StepOutputs]:
        meta_params, opt_state = carry
        step, tasks = step_and_tasks
        schedule = (step,) if learner.uses_meta_step else ()
        value, grads, *carried = learner.meta_grad(meta_params, tasks, *schedule)
        loss, aux = value if learner.has_aux else (value, {})
        updates, opt_state = outer.update(grads, opt_state, meta_params)
        grads_finite = all_finite(grads) if check_grads else None
        meta_params = optax.apply_updates(meta_params, updates)
        if learner.carried_state is not None:
            meta_params = learner.carried_state.update(meta_params, *carried)
        return (meta_params, opt_state), (loss, aux, grads_finite)

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


def train_steps_on(
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sampler_static: Any,
    sampler_data: Any,
    state: TrainState,
    meta_steps: int,
    steps_per_draw: int | None,
    mesh: Mesh | None,
    check_grads: bool,
) -> tuple[TrainState, Array, dict[str, Array], Array | None, Array]:
    """:func:`train_steps` with the sampler split by ``eqx.partition`` into its arrays, which
    are traced, and the rest, which is static; and, last, whether the meta-parameters after the
    steps are all finite (checked in the same program, not in one of its own)."""
    sample_tasks = eqx.combine(sampler_data, sampler_static)
    new_state, losses, aux, grads_finite = _train_steps(
        learner, optimizer, sample_tasks, state, meta_steps, steps_per_draw, mesh, check_grads
    )
    return new_state, losses, aux, grads_finite, all_finite(new_state.meta_params)


def all_finite(tree: Any) -> Array:
    """Whether every entry of every floating-point leaf of ``tree`` is finite (a bool scalar)."""
    leaves = [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.isfinite(leaf).all() for leaf in leaves]))
