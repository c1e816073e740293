"""The pretrained baseline of Finn et al. (2017): multi-task training, then fine-tuning."""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from metajax import _validation, options
from metajax.algorithms.maml import maml
from metajax.config import registry
from metajax.config.algorithm import Algorithm
from metajax.core.linear_head import LinearHead
from metajax.core.meta_learner import (
    LossFn,
    MetaLearner,
    Params,
    cached_factory,
    gradient_learner,
)
from metajax.core.task import Task


@cached_factory
def pretrain(
    loss_fn: LossFn, *, inner_lr: Any, inner_steps: int = 1, has_aux: bool = False
) -> MetaLearner:
    """Plain training on all tasks at once, fine-tuned by gradient descent at test time.

    Training fits one set of parameters to every task: the meta-loss is the loss of the
    parameters themselves on all of a task's examples, support and query together, averaged
    over a task batch; nothing adapts during training. At test time ``adapt`` fine-tunes with
    ``inner_steps`` steps of gradient descent of size ``inner_lr`` on the support set, exactly
    as :func:`metajax.maml` adapts, so the two are evaluated alike.

    Args:
      loss_fn: ``loss_fn(params, batch)``, a scalar or, with ``has_aux``, ``(loss, aux)``.
        Support and query batches are joined by concatenating every leaf along its first axis,
        the axis of examples.
      inner_lr: the fine-tuning step size, a number ``> 0`` or a scalar JAX array.
      inner_steps: the default number of fine-tuning steps, ``>= 0``.
      has_aux: ``loss_fn`` returns ``(loss, aux)``.

    Returns:
      A :class:`~metajax.MetaLearner`.
    """
    has_aux = _validation.boolean("has_aux", has_aux)
    fine_tune = maml(loss_fn, inner_lr=inner_lr, inner_steps=inner_steps, has_aux=has_aux)

    def task_loss(params: Params, task: Task) -> Any:
        examples = jax.tree.map(
            lambda support, query: jnp.concatenate([support, query]), task.support, task.query
        )
        return loss_fn(params, examples)

    return gradient_learner(
        task_loss,
        adapt=fine_tune.adapt,
        adapt_trajectory=fine_tune.adapt_trajectory,
        has_aux=has_aux,
    )


@registry.register_algorithm
@dataclasses.dataclass(frozen=True)
class Pretrain(Algorithm):
    """The pretrained baseline's settings (``--algorithm pretrain``); see :func:`pretrain`."""

    name: ClassVar[str] = "pretrain"
    description: ClassVar[str] = (
        "the pretrained baseline of the MAML paper: plain training on all tasks, fine-tuned "
        "at test time"
    )
    objective: ClassVar[str] = "{loss} on all examples"
    tunes_inner_lr: ClassVar[bool] = True

    inner_lr: Any = options.number(
        0.01, "fine-tuning step size at test time", metavar="LR", traceable=True
    )
    inner_steps: int = options.integer(1, "fine-tuning steps at test time", minimum=0, metavar="S")

    def make(
        self, loss_fn: LossFn, *, has_aux: bool = False, head: LinearHead | None = None
    ) -> MetaLearner:
        return pretrain(
            loss_fn, inner_lr=self.inner_lr, inner_steps=self.inner_steps, has_aux=has_aux
        )

    @property
    def label(self) -> str:
        return "pretrained"

    def describe(self) -> str:
        return "no adaptation in training"

    def adaptation_text(self) -> str:
        return f"fine-tuning lr {self.inner_lr:g}"
