"""The inner loop that MAML and its variants share: meta-learn an initialisation, adapt it with
repeated steps of some update rule, differentiate through every step."""

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import Array, lax

from metajax import _validation
from metajax.core.meta_learner import LossFn, MetaLearner, Params, gradient_learner
from metajax.core.task import Task

InnerOptimizer = Callable[[Any], optax.GradientTransformation]
"""A function of the inner step size returning an optax optimizer: ``optax.sgd``,
``optax.adam``, ``functools.partial(optax.sgd, momentum=0.9)``, or, for a transformation with
its own step size, ``lambda lr: transformation``."""


def inner_loop_learner(
    loss_fn: LossFn,
    inner_step: Callable[[Any, Any], Any],
    *,
    inner_steps: int,
    has_aux: bool = False,
    remat: bool = False,
    inner_state: Callable[[Params], Any] | None = None,
) -> MetaLearner:
    """A learner whose meta-parameters are the model parameters, adapted by ``inner_step``.

    MAML is this with plain gradient descent as ``inner_step``; an algorithm that adapts in
    another way (clipped gradients, another update rule) but meta-learns the initialisation the
    same way needs only its own ``inner_step``. The meta-loss is the query loss after
    ``inner_steps`` steps, and its gradient flows through them all.

    Args:
      loss_fn: as for :func:`metajax.maml`.
      inner_step: ``inner_step(params, support) -> params``, one step of adaptation; with
        ``inner_state``, ``inner_step((params, state), support) -> (params, state)``.
      inner_steps: the default number of inner steps, ``>= 0``.
      has_aux: ``loss_fn`` returns ``(loss, aux)``.
      remat: recompute the inner loop in the backward pass instead of keeping it (see
        :func:`rematerialised_inner_loop`): the same numbers, in memory that grows with the
        square root of the number of inner steps rather than with it.
      inner_state: for an update rule with a state of its own (an optimizer's moments, a step
        count), ``inner_state(params)``: the state before the first step. The inner loop then
        carries the pair ``(params, state)``.
    """
    default_steps = _validation.integer("inner_steps", inner_steps, 0)
    has_aux = _validation.boolean("has_aux", has_aux)
    remat = _validation.boolean("remat", remat)

    def start(params: Params) -> Any:
        """What the loop carries before the first step."""
        return params if inner_state is None else (params, inner_state(params))

    def params_of(carry: Any) -> Params:
        return carry if inner_state is None else carry[0]

    def steps_or_default(inner_steps: int | None) -> int:
        return _validation.integer(
            "inner_steps", default_steps if inner_steps is None else inner_steps, 0
        )

    def adapt(meta_params: Params, support: Any, inner_steps: int | None = None) -> Params:
        steps = steps_or_default(inner_steps)

        def step(carry: Any) -> Any:
            return inner_step(carry, support)

        if remat:
            return params_of(rematerialised_inner_loop(step, start(meta_params), steps))
        return params_of(_scan_steps(step, start(meta_params), params_of, steps, None)[0])

    def adapt_trajectory(
        meta_params: Params,
        support: Any,
        inner_steps: int | None = None,
        observe: Callable[[Params], Any] | None = None,
    ) -> Any:
        def step(carry: Any) -> Any:
            return inner_step(carry, support)

        steps = steps_or_default(inner_steps)
        carry, before_each_step = _scan_steps(step, start(meta_params), params_of, steps, observe)
        last = params_of(carry) if observe is None else observe(params_of(carry))
        return jax.tree.map(
            lambda steps, final: jnp.concatenate([steps, jnp.asarray(final)[None]]),
            before_each_step,
            last,
        )

    def task_loss(meta_params: Params, task: Task) -> Any:
        return loss_fn(adapt(meta_params, task.support), task.query)

    return gradient_learner(
        task_loss, adapt=adapt, adapt_trajectory=adapt_trajectory, has_aux=has_aux
    )


def _scan_steps(
    step: Callable[[Any], Any],
    carry: Any,
    params_of: Callable[[Any], Params],
    inner_steps: int,
    observe: Callable[[Params], Any] | None,
) -> tuple[Any, Any]:
    """``inner_steps`` applications of ``step`` to ``carry`` in a ``lax.scan``: the last carry,
    and what ``observe`` sees of the parameters before each step (the parameters themselves
    without it)."""

    def body(carry: Any, _: Any) -> tuple[Any, Any]:
        params = params_of(carry)
        return step(carry), params if observe is None else observe(params)

    # Unrolled: a loop of one or a few tiny steps is faster as straight-line code.
    return lax.scan(body, carry, length=inner_steps, unroll=inner_steps <= 8)


def optimizer_inner_step(
    inner_loss: Callable[[Params, Any], Array],
    optimizer: optax.GradientTransformation,
    first_order: bool,
) -> Callable[[tuple[Params, Any], Any], tuple[Params, Any]]:
    """An ``inner_step`` for :func:`inner_loop_learner` (with ``inner_state=optimizer.init``)
    that takes one step of an optax optimizer on ``inner_loss``. Its update, moments and all,
    is differentiated like any other function; with ``first_order`` the inner gradients are
    constants to the meta-gradient."""

    def inner_step(carry: tuple[Params, Any], support: Any) -> tuple[Params, Any]:
        params, state = carry
        grads = jax.grad(inner_loss)(params, support)
        if first_order:
            grads = lax.stop_gradient(grads)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return inner_step


def rematerialised_inner_loop(step: Callable[[Any], Any], carry: Any, inner_steps: int) -> Any:
    """``inner_steps`` applications of ``step`` to ``carry``, differentiated in little memory.

    The steps run in segments of about ``sqrt(inner_steps)``. The backward pass keeps only the
    carry at the start of each segment and recomputes a segment when it needs it, keeping then
    the carry at each of its steps and recomputing each step's forward pass (two levels of
    ``jax.checkpoint``). Memory holds about ``2 sqrt(inner_steps)`` copies of the parameters and
    one step's activations, against ``inner_steps`` of each without it, for about one more
    forward pass of the inner loop. When the segments overrun ``inner_steps``, the extra steps
    are computed and discarded, so the result is the same.
    """
    if inner_steps == 0:
        return carry
    segment = math.isqrt(inner_steps - 1) + 1  # ceil(sqrt(inner_steps))
    segments = -(-inner_steps // segment)
    checkpointed_step = jax.checkpoint(step)

    @jax.checkpoint
    def run_segment(carry: Any, first: Array) -> tuple[Any, None]:
        def one_step(carry: Any, index: Array) -> tuple[Any, None]:
            stepped = checkpointed_step(carry)
            keep = first + index < inner_steps
            return jax.tree.map(lambda new, old: jnp.where(keep, new, old), stepped, carry), None

        return lax.scan(one_step, carry, jnp.arange(segment))[0], None

    return lax.scan(run_segment, carry, jnp.arange(segments) * segment)[0]
