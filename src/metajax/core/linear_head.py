"""A classifier seen as an embedding followed by a linear layer, and the layer that class
prototypes make: what metric-based algorithms (Prototypical Networks, ProtoMAML) need of a
model beyond its loss."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

ABSENT_CLASS_LOGIT = -1e30
"""The logit of a class that a task's support set lacks (a head with more outputs than the
task has classes): exactly zero probability, and a finite number, so no gradient is NaN."""


class LinearHead(NamedTuple):
    """How a classifier's parameters split into an embedding and a final linear layer.

    The model maps inputs to ``features @ weight + bias``; metric-based algorithms set
    ``weight`` and ``bias`` from the class means of a task's support features. A task's
    support (and query) set is a pair ``(inputs, labels)`` with integer labels in
    ``[0, classes)``.

    Attributes:
      features: ``features(params, inputs) -> [batch, dim]``, the embedding of a batch of
        inputs (everything the model computes before its last layer).
      replace: ``replace(params, weight, bias) -> params``: the parameters with the last layer
        set to ``weight [dim, classes]`` and ``bias [classes]``.
      classes: the number of the last layer's outputs, the most classes a task may have.
    """

    features: Callable[[Any, Any], Array]
    replace: Callable[[Any, Array, Array], Any]
    classes: int


def prototype_layer(features: Array, labels: Array, classes: int) -> tuple[Array, Array]:
    """The linear layer whose logits are the negative squared Euclidean distances to the class
    means of ``features [n, dim]`` (the prototypes ``c_k``), up to a term that is the same for
    every class and so changes no probability: ``weight = 2 c_k``, ``bias = -|c_k|^2``, since
    ``-|z - c_k|^2 = 2 c_k.z - |c_k|^2 - |z|^2`` (Triantafillou et al., 2020, section 3.2).

    Returns:
      ``(weight [dim, classes], bias [classes])``; a class with no example gets a zero weight
      and the bias :data:`ABSENT_CLASS_LOGIT`.
    """
    members = jax.nn.one_hot(labels, classes, dtype=features.dtype)  # [n, classes]
    counts = members.sum(0)
    prototypes = (members.T @ features) / jnp.maximum(counts, 1)[:, None]
    bias = jnp.where(counts > 0, -jnp.sum(prototypes**2, axis=-1), ABSENT_CLASS_LOGIT)
    return 2 * prototypes.T, bias


def with_prototype_head(head: LinearHead, params: Any, support: tuple[Any, Array]) -> Any:
    """``params`` with the last layer that the prototypes of ``support``'s features make,
    computed with ``params``' embedding; the gradient flows through the prototypes."""
    inputs, labels = support
    weight, bias = prototype_layer(head.features(params, inputs), labels, head.classes)
    return head.replace(params, weight, bias)
