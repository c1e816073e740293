"""Meta-SGD (Li et al., 2017): MAML with a step size for every parameter, meta-learned with the
initialisation."""

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from metajax import _validation, options
from metajax.algorithms.inner_loop import inner_loop_learner
from metajax.config import registry
from metajax.config.algorithm import Algorithm, inner_steps_text, test_steps_option
from metajax.core.linear_head import LinearHead
from metajax.core.meta_learner import (
    LossFn,
    MetaLearner,
    Params,
    cached_factory,
    gradient_learner,
    gradient_step,
    loss_value,
)
from metajax.core.task import Task


@cached_factory
def meta_sgd(
    loss_fn: LossFn,
    *,
    initial_lr: Any,
    inner_steps: int = 1,
    first_order: bool = False,
    has_aux: bool = False,
    remat: bool = False,
) -> MetaLearner:
    """Meta-SGD: the inner loop is ``params - inner_lrs * grad``, where ``inner_lrs`` has one
    step size for every parameter (a pytree shaped like the parameters), meta-learned along
    with the initialisation by the same meta-gradient.

    The meta-parameters are ``{"params": ..., "inner_lrs": ...}``: :attr:`MetaLearner.init`
    sets every step size to ``initial_lr``, and checkpoints and ``params.eqx`` keep the learned
    ones, which adaptation (``metajax eval``, ``plot`` and ``adapt``) then uses. With every step
    size equal and held fixed, Meta-SGD is MAML. Li et al. take one inner step; more take the
    same step sizes at each step.

    Args:
      loss_fn: ``loss_fn(params, batch)``, a scalar or, with ``has_aux``, ``(loss, aux)``.
      initial_lr: the step size every parameter starts with, a number ``> 0``.
      inner_steps: the default number of inner steps, ``>= 0``.
      first_order: stop gradients through the inner-loop gradients (the step sizes still get
        theirs, through the update ``inner_lrs * grad``).
      has_aux: ``loss_fn`` returns ``(loss, aux)``.
      remat: recompute the inner loop for the meta-gradient rather than keep it (see
        :func:`metajax.algorithms.inner_loop.rematerialised_inner_loop`).

    Returns:
      A :class:`~metajax.MetaLearner`.

    Raises:
      OptionError: if a setting is out of range.
    """
    initial_lr = _validation.positive_number("initial_lr", initial_lr)
    default_steps = _validation.integer("inner_steps", inner_steps, 0)
    first_order = _validation.boolean("first_order", first_order)
    has_aux = _validation.boolean("has_aux", has_aux)
    inner_loss = loss_value(loss_fn, has_aux)

    def gradient_descent(inner_lrs: Params) -> MetaLearner:
        """MAML's learner, but with these per-parameter step sizes."""

        def inner_step(params: Params, support: Any) -> Params:
            return gradient_step(inner_loss, params, support, inner_lrs, first_order)

        return inner_loop_learner(
            loss_fn, inner_step, inner_steps=default_steps, has_aux=has_aux, remat=remat
        )

    def adapt(meta_params: Params, support: Any, inner_steps: int | None = None) -> Params:
        learner = gradient_descent(meta_params["inner_lrs"])
        return learner.adapt(meta_params["params"], support, inner_steps)

    def adapt_trajectory(
        meta_params: Params,
        support: Any,
        inner_steps: int | None = None,
        observe: Callable[[Params], Any] | None = None,
    ) -> Any:
        learner = gradient_descent(meta_params["inner_lrs"])
        return learner.adapt_trajectory(meta_params["params"], support, inner_steps, observe)

    def task_loss(meta_params: Params, task: Task) -> Any:
        return loss_fn(adapt(meta_params, task.support), task.query)

    def init(params: Params) -> Params:
        inner_lrs = jax.tree.map(lambda p: jnp.full_like(p, initial_lr), params)
        return {"params": params, "inner_lrs": inner_lrs}

    return gradient_learner(
        task_loss,
        adapt=adapt,
        adapt_trajectory=adapt_trajectory,
        has_aux=has_aux,
        init=init,
        model_params=lambda meta_params: meta_params["params"],
    )


@registry.register_algorithm
@dataclasses.dataclass(frozen=True)
class MetaSGD(Algorithm):
    """Meta-SGD's hyper-parameters (``--algorithm meta-sgd``); see :func:`meta_sgd`."""

    name: ClassVar[str] = "meta-sgd"
    description: ClassVar[str] = (
        "Meta-SGD (Li et al., 2017): MAML with a step size per parameter, meta-learned with "
        "the initialisation"
    )

    initial_lr: float = options.number(
        0.01, "the step size every parameter starts with, before it is meta-learned", metavar="LR"
    )
    inner_steps: int = options.integer(
        1, "inner-loop gradient steps, each with the learned step sizes", minimum=0, metavar="S"
    )
    test_steps: int | None = test_steps_option()
    first_order: bool = options.flag(
        False, "no gradients through the inner-loop gradients (the step sizes still learn)"
    )
    remat: bool = options.flag(
        False,
        "recompute the inner loop for the meta-gradient instead of keeping it: memory that "
        "grows with the square root of --inner-steps, the same numbers, more time",
    )

    def make(
        self, loss_fn: LossFn, *, has_aux: bool = False, head: LinearHead | None = None
    ) -> MetaLearner:
        return meta_sgd(
            loss_fn,
            initial_lr=self.initial_lr,
            inner_steps=self.inner_steps,
            first_order=self.first_order,
            has_aux=has_aux,
            remat=self.remat,
        )

    @property
    def label(self) -> str:
        return "first-order Meta-SGD" if self.first_order else "Meta-SGD"

    def describe(self) -> str:
        return inner_steps_text(self.inner_steps)

    def adaptation_text(self) -> str:
        return "learned step sizes"

    def adaptation_note(self, adapt_steps: int) -> str:
        if adapt_steps <= self.inner_steps:
            return ""
        return (
            f"the step sizes were learned for {inner_steps_text(self.inner_steps)}; more steps "
            "repeat them and may diverge"
        )
