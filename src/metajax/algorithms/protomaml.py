"""ProtoMAML (Triantafillou et al., 2020): MAML whose last layer starts each task at the
linear layer of the task's class prototypes, then adapts by gradient descent."""

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

from metajax import _validation, options
from metajax.algorithms.maml import maml
from metajax.config import registry
from metajax.config.algorithm import Algorithm, inner_steps_text, test_steps_option
from metajax.core.linear_head import LinearHead, with_prototype_head
from metajax.core.meta_learner import (
    LossFn,
    MetaLearner,
    Params,
    cached_factory,
    gradient_learner,
)
from metajax.core.task import Task


def required_head(head: Any, algorithm: str) -> LinearHead:
    """``head``, if it is a :class:`~metajax.LinearHead`; else the error a user of
    ``algorithm`` on a model without one (a regression MLP) sees."""
    if not isinstance(head, LinearHead):
        raise _validation.OptionError(
            "algorithm",
            f"an algorithm this task family's model supports: {algorithm} sets a classifier's "
            "last layer from class prototypes, so it needs a model that ends in a linear "
            "layer, as the image families' (images, omniglot) does; in Python, pass "
            "head=metajax.LinearHead(...)",
            algorithm,
        )
    return head


@cached_factory
def protomaml(
    loss_fn: LossFn,
    *,
    head: LinearHead,
    inner_lr: Any,
    inner_steps: int = 1,
    first_order: bool = False,
    has_aux: bool = False,
    remat: bool = False,
) -> MetaLearner:
    """ProtoMAML: for each task, set the classifier's last layer from the class prototypes
    (the means of the support set's features) so that its logits are the negative squared
    distances to them, then adapt every parameter with ``inner_steps`` steps of gradient
    descent on the support set, as :func:`metajax.maml` does. The meta-gradient flows through
    the prototypes and, unless ``first_order``, through the inner steps.

    With ``inner_steps=0`` this is a Prototypical Network (:func:`protonet`).

    Args:
      loss_fn: as for :func:`metajax.maml`; its batches are ``(inputs, labels)``.
      head: how the parameters split into an embedding and the last layer.
      inner_lr, inner_steps, first_order, has_aux, remat: as for :func:`metajax.maml`.

    Returns:
      A :class:`~metajax.MetaLearner` whose meta-parameters are the model parameters (the last
      layer's are never used: every task replaces them).

    Raises:
      OptionError: if ``head`` is not a :class:`~metajax.LinearHead` or a setting is out of
        range.
    """
    head = required_head(head, "protomaml")
    fine_tune = maml(
        loss_fn,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        first_order=first_order,
        has_aux=has_aux,
        remat=remat,
    )

    def adapt(meta_params: Params, support: Any, inner_steps: int | None = None) -> Params:
        start = with_prototype_head(head, meta_params, support)
        return fine_tune.adapt(start, support, inner_steps)

    def adapt_trajectory(
        meta_params: Params,
        support: Any,
        inner_steps: int | None = None,
        observe: Callable[[Params], Any] | None = None,
    ) -> Any:
        start = with_prototype_head(head, meta_params, support)
        return fine_tune.adapt_trajectory(start, support, inner_steps, observe)

    def task_loss(meta_params: Params, task: Task) -> Any:
        return loss_fn(adapt(meta_params, task.support), task.query)

    return gradient_learner(
        task_loss, adapt=adapt, adapt_trajectory=adapt_trajectory, has_aux=fine_tune.has_aux
    )


@registry.register_algorithm
@dataclasses.dataclass(frozen=True)
class ProtoMAML(Algorithm):
    """ProtoMAML's hyper-parameters (``--algorithm protomaml``); see :func:`protomaml`."""

    name: ClassVar[str] = "protomaml"
    description: ClassVar[str] = (
        "ProtoMAML (Triantafillou et al., 2020): MAML whose last layer starts at the class "
        "prototypes' (image families only)"
    )

    inner_lr: Any = options.number(
        0.01, "inner-loop (adaptation) step size", metavar="LR", traceable=True
    )
    inner_steps: int = options.integer(1, "inner-loop gradient steps", minimum=0, metavar="S")
    test_steps: int | None = test_steps_option()
    first_order: bool = options.flag(
        False, "no gradients through the inner-loop gradients (the prototypes keep theirs)"
    )
    remat: bool = options.flag(
        False,
        "recompute the inner loop for the meta-gradient instead of keeping it: memory that "
        "grows with the square root of --inner-steps, the same numbers, more time",
    )

    def make(
        self, loss_fn: LossFn, *, has_aux: bool = False, head: LinearHead | None = None
    ) -> MetaLearner:
        return protomaml(
            loss_fn,
            head=required_head(head, self.name),
            inner_lr=self.inner_lr,
            inner_steps=self.inner_steps,
            first_order=self.first_order,
            has_aux=has_aux,
            remat=self.remat,
        )

    @property
    def label(self) -> str:
        return "first-order ProtoMAML" if self.first_order else "ProtoMAML"

    def describe(self) -> str:
        return inner_steps_text(self.inner_steps)

    def adaptation_text(self) -> str:
        return f"prototype head, inner lr {self.inner_lr:g}"
