"""Prototypical Networks (Snell, Swersky and Zemel, 2017): classify by the squared Euclidean
distance to each class's mean embedding; no inner loop."""

import dataclasses
from typing import Any, ClassVar

from metajax import options
from metajax.algorithms.protomaml import protomaml, required_head
from metajax.config import registry
from metajax.config.algorithm import Algorithm
from metajax.core.linear_head import LinearHead
from metajax.core.meta_learner import LossFn, MetaLearner, cached_factory


@cached_factory
def protonet(
    loss_fn: LossFn, *, head: LinearHead, inner_lr: Any = 0.01, has_aux: bool = False
) -> MetaLearner:
    """A Prototypical Network: a task's classes are the means of its support set's embeddings
    (the prototypes), and an input's logits are the negative squared Euclidean distances of
    its embedding to them. Meta-training learns the embedding by the query loss of that
    classifier; nothing adapts by gradient descent.

    The classifier is the model's own last layer set to ``2 c_k`` and ``-|c_k|^2`` (see
    :func:`metajax.core.linear_head.prototype_layer`), which gives the same probabilities as
    the distances, so the family's loss and metrics apply unchanged. ``adapt`` with
    ``inner_steps > 0`` (``metajax eval --adapt-steps``) fine-tunes every parameter from that
    layer by gradient descent of size ``inner_lr``, as ProtoMAML does.

    Args:
      loss_fn: as for :func:`metajax.maml`; its batches are ``(inputs, labels)``.
      head: how the parameters split into an embedding and the last layer.
      inner_lr: the step size of any fine-tuning steps at test time.
      has_aux: ``loss_fn`` returns ``(loss, aux)``.

    Returns:
      A :class:`~metajax.MetaLearner` with no inner steps by default, whose meta-parameters are
      the model parameters.

    Raises:
      OptionError: if ``head`` is not a :class:`~metajax.LinearHead` or ``inner_lr`` is out of
        range.
    """
    return protomaml(loss_fn, head=head, inner_lr=inner_lr, inner_steps=0, has_aux=has_aux)


@registry.register_algorithm
@dataclasses.dataclass(frozen=True)
class ProtoNet(Algorithm):
    """A Prototypical Network's settings (``--algorithm protonet``); see :func:`protonet`."""

    name: ClassVar[str] = "protonet"
    description: ClassVar[str] = (
        "Prototypical Networks (Snell et al., 2017): nearest class mean of the embeddings, by "
        "squared Euclidean distance; no inner loop (image families only)"
    )

    inner_lr: Any = options.number(
        0.01,
        "step size of fine-tuning steps from the prototypes, if metajax eval --adapt-steps "
        "asks for any; training takes none",
        metavar="LR",
        traceable=True,
    )

    def make(
        self, loss_fn: LossFn, *, has_aux: bool = False, head: LinearHead | None = None
    ) -> MetaLearner:
        return protonet(
            loss_fn, head=required_head(head, self.name), inner_lr=self.inner_lr, has_aux=has_aux
        )

    @property
    def label(self) -> str:
        return "ProtoNet"

    def describe(self) -> str:
        return "no inner loop"

    def adaptation_text(self) -> str:
        return "class prototypes"
