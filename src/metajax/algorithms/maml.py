"""Model-Agnostic Meta-Learning (Finn et al., 2017), second and first order."""

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import Array, lax

from metajax import _validation, options, registry
from metajax.algorithms.algorithm import Algorithm, inner_steps_text
from metajax.algorithms.meta_learner import (
    LossFn,
    MetaLearner,
    Params,
    cached_factory,
    gradient_step,
    loss_value,
    mean_over_tasks,
)
from metajax.tasks.task import Task


@cached_factory
def maml(
    loss_fn: LossFn,
    *,
    inner_lr: Any,
    inner_steps: int = 1,
    first_order: bool = False,
    has_aux: bool = False,
    remat: bool = False,
) -> MetaLearner:
    """MAML: meta-learn an initialisation that adapts well with a few gradient steps.

    The inner loop takes ``inner_steps`` steps of plain gradient descent, of size ``inner_lr``,
    on a task's support set. The meta-loss is the loss of the adapted parameters on the task's
    query set, averaged over a task batch; its gradient flows back through the inner loop, so it
    contains the Hessian-vector products of the inner losses (second order). With
    ``first_order=True`` the inner gradients are treated as constants (``stop_gradient``), which
    drops those terms: the first-order approximation of Finn et al. (2017).

    Equal calls return the same learner, so ``jax.jit(learner.meta_grad)`` compiles once for
    equal settings. To try many step sizes with one compilation, pass ``inner_lr`` as a traced
    argument instead: ``jax.vmap(lambda lr: maml(loss_fn, inner_lr=lr).meta_grad(p, tasks))``.

    Args:
      loss_fn: ``loss_fn(params, batch)`` for any pytree ``params`` of arrays, returning a
        scalar, or ``(loss, aux)`` with ``has_aux`` (see :data:`metajax.LossFn`). For an Equinox
        model, partition it first (``eqx.partition(model, eqx.is_inexact_array)``) and
        recombine inside ``loss_fn``.
      inner_lr: the inner-loop step size: a number ``> 0``, or a scalar JAX array (which may be
        traced, e.g. to ``vmap`` over step sizes).
      inner_steps: the number of inner-loop steps, ``>= 0``. With 0, MAML reduces to plain
        multi-task training on the query sets.
      first_order: stop gradients through the inner-loop gradients.
      has_aux: ``loss_fn`` returns ``(loss, aux)``; the meta-loss is then the pair of the mean
        loss and the mean ``aux`` over tasks, both for the query set after adaptation.
      remat: recompute the inner loop for the meta-gradient rather than keep it in memory
        (see :func:`rematerialised_inner_loop`), for second order with many inner steps.

    Returns:
      A :class:`~metajax.MetaLearner`. Its meta-parameters are the model parameters themselves.

    Raises:
      OptionError: if ``inner_lr``, ``inner_steps``, ``first_order`` or ``has_aux`` is out of
        range.

    Example:
      >>> loss = lambda theta, a: 0.5 * (theta - a) ** 2
      >>> learner = maml(loss, inner_lr=0.1)
      >>> round(float(learner.task_loss(1.0, Task(support=0.0, query=0.0))), 6)  # 0.5 * 0.9**2
      0.405
    """
    inner_lr = _validation.step_size("inner_lr", inner_lr)
    default_steps = _validation.integer("inner_steps", inner_steps, 0)
    first_order = _validation.boolean("first_order", first_order)
    has_aux = _validation.boolean("has_aux", has_aux)
    inner_loss = loss_value(loss_fn, has_aux)

    def inner_step(params: Params, support: Any) -> Params:
        step_sizes = jax.tree.map(lambda _: inner_lr, params)
        return gradient_step(inner_loss, params, support, step_sizes, first_order)

    return inner_loop_learner(
        loss_fn, inner_step, inner_steps=default_steps, has_aux=has_aux, remat=remat
    )


def inner_loop_learner(
    loss_fn: LossFn,
    inner_step: Callable[[Params, Any], Params],
    *,
    inner_steps: int,
    has_aux: bool = False,
    remat: bool = False,
) -> MetaLearner:
    """A learner whose meta-parameters are the model parameters, adapted by ``inner_step``.

    MAML is this with plain gradient descent as ``inner_step``; an algorithm that adapts in
    another way (clipped gradients, another update rule) but meta-learns the initialisation the
    same way needs only its own ``inner_step``. The meta-loss is the query loss after
    ``inner_steps`` steps, and its gradient flows through them all.

    Args:
      loss_fn: as for :func:`maml`.
      inner_step: ``inner_step(params, support) -> params``, one step of adaptation.
      inner_steps: the default number of inner steps, ``>= 0``.
      has_aux: ``loss_fn`` returns ``(loss, aux)``.
      remat: recompute the inner loop in the backward pass instead of keeping it (see
        :func:`rematerialised_inner_loop`): the same numbers, in memory that grows with the
        square root of the number of inner steps rather than with it.
    """
    default_steps = _validation.integer("inner_steps", inner_steps, 0)
    has_aux = _validation.boolean("has_aux", has_aux)
    remat = _validation.boolean("remat", remat)

    def scan_inner_loop(
        params: Params, support: Any, inner_steps: int | None, observe: Callable | None
    ) -> tuple[Params, Any]:
        """The adapted parameters, and what ``observe`` sees of the parameters before each
        step (the parameters themselves without it)."""
        if inner_steps is None:
            inner_steps = default_steps
        inner_steps = _validation.integer("inner_steps", inner_steps, 0)

        def body(params: Params, _: Any) -> tuple[Params, Any]:
            return inner_step(params, support), params if observe is None else observe(params)

        # Unrolled: a loop of one or a few tiny steps is faster as straight-line code.
        return lax.scan(body, params, length=inner_steps, unroll=inner_steps <= 8)

    def adapt(meta_params: Params, support: Any, inner_steps: int | None = None) -> Params:
        if remat:
            steps = default_steps if inner_steps is None else inner_steps
            steps = _validation.integer("inner_steps", steps, 0)
            return rematerialised_inner_loop(inner_step, meta_params, support, steps)
        params, _ = scan_inner_loop(meta_params, support, inner_steps, None)
        return params

    def adapt_trajectory(
        meta_params: Params,
        support: Any,
        inner_steps: int | None = None,
        observe: Callable[[Params], Any] | None = None,
    ) -> Any:
        params, before_each_step = scan_inner_loop(meta_params, support, inner_steps, observe)
        last = params if observe is None else observe(params)
        return jax.tree.map(
            lambda steps, final: jnp.concatenate([steps, jnp.asarray(final)[None]]),
            before_each_step,
            last,
        )

    def task_loss(meta_params: Params, task: Task) -> Any:
        return loss_fn(adapt(meta_params, task.support), task.query)

    meta_loss = mean_over_tasks(task_loss)

    return MetaLearner(
        init=lambda params: params,
        model_params=lambda meta_params: meta_params,
        adapt=adapt,
        adapt_trajectory=adapt_trajectory,
        task_loss=task_loss,
        meta_loss=meta_loss,
        meta_grad=jax.value_and_grad(meta_loss, has_aux=has_aux),
        has_aux=has_aux,
    )


def rematerialised_inner_loop(
    inner_step: Callable[[Params, Any], Params], params: Params, support: Any, inner_steps: int
) -> Params:
    """``inner_steps`` of ``inner_step`` from ``params``, differentiated in little memory.

    The steps run in segments of about ``sqrt(inner_steps)``. The backward pass keeps only the
    parameters at the start of each segment and recomputes a segment when it needs it, keeping
    then the parameters at each of its steps and recomputing each step's forward pass (two
    levels of ``jax.checkpoint``). Memory holds about ``2 sqrt(inner_steps)`` copies of the
    parameters and one step's activations, against ``inner_steps`` of each without it, for
    about one more forward pass of the inner loop. When the segments overrun ``inner_steps``,
    the extra steps are computed and discarded, so the result is the same.
    """
    if inner_steps == 0:
        return params
    segment = math.isqrt(inner_steps - 1) + 1  # ceil(sqrt(inner_steps))
    segments = -(-inner_steps // segment)
    step = jax.checkpoint(inner_step)

    @jax.checkpoint
    def run_segment(params: Params, first: Array) -> tuple[Params, None]:
        def one_step(params: Params, index: Array) -> tuple[Params, None]:
            stepped = step(params, support)
            keep = first + index < inner_steps
            return jax.tree.map(lambda new, old: jnp.where(keep, new, old), stepped, params), None

        return lax.scan(one_step, params, jnp.arange(segment))[0], None

    return lax.scan(run_segment, params, jnp.arange(segments) * segment)[0]


@registry.register_algorithm
@dataclasses.dataclass(frozen=True)
class MAML(Algorithm):
    """MAML's hyper-parameters (``--algorithm maml``); see :func:`maml`."""

    name: ClassVar[str] = "maml"
    description: ClassVar[str] = "MAML (Finn et al., 2017), second order unless --first-order"

    inner_lr: Any = options.number(
        0.01, "inner-loop (adaptation) step size", metavar="LR", traceable=True
    )
    inner_steps: int = options.integer(
        1, "inner-loop gradient steps; 0 is plain multi-task training", minimum=0, metavar="S"
    )
    first_order: bool = options.flag(
        False, "first-order MAML: no gradients through the inner-loop gradients"
    )
    remat: bool = options.flag(
        False,
        "recompute the inner loop for the meta-gradient instead of keeping it: memory that "
        "grows with the square root of --inner-steps, the same numbers, more time",
    )

    def make(self, loss_fn: LossFn, *, has_aux: bool = False) -> MetaLearner:
        return maml(
            loss_fn,
            inner_lr=self.inner_lr,
            inner_steps=self.inner_steps,
            first_order=self.first_order,
            has_aux=has_aux,
            remat=self.remat,
        )

    @property
    def label(self) -> str:
        return "first-order MAML" if self.first_order else "MAML"

    def describe(self) -> str:
        return inner_steps_text(self.inner_steps)

    def adaptation_text(self) -> str:
        return f"inner lr {self.inner_lr:g}"
