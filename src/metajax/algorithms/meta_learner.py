"""The interface every meta-learning algorithm implements."""

from collections.abc import Callable
from typing import Any, NamedTuple

from jax import Array

from metajax.tasks.task import Task

Params = Any
"""Any pytree of arrays: a dict, a tuple, the array part of an Equinox module, ..."""

LossFn = Callable[[Params, Any], Array]
"""``loss_fn(params, batch) -> scalar``: the loss of one task's model on one batch."""


class MetaLearner(NamedTuple):
    """A meta-learning algorithm as a record of pure functions.

    Built by a factory such as :func:`metajax.maml`, which closes over the loss and the
    hyper-parameters. Every function is pure and can be jitted, vmapped and differentiated, so
    the outer loop is plain optax on ``meta_params``.

    Attributes:
      init: ``init(params) -> meta_params``; the meta-parameters that start meta-training.
      adapt: ``adapt(meta_params, support, num_steps=None) -> params``; the inner loop on one
        task's support set. ``num_steps`` overrides the number of inner steps (a Python int).
      adapt_trajectory: ``adapt_trajectory(meta_params, support, num_steps=None) -> params``
        with a leading axis of length ``num_steps + 1``: the parameters before adaptation and
        after each inner step.
      task_loss: ``task_loss(meta_params, task) -> scalar``; what meta-training minimises for one
        task. For MAML, the query loss of the parameters adapted on the support set; for the
        pretrained baseline, the loss of the parameters themselves on all the task's examples.
      meta_loss: ``meta_loss(meta_params, tasks) -> scalar``; ``task_loss`` averaged over a task
        batch (a :class:`~metajax.Task` whose leaves have a leading task axis).
      meta_grad: ``meta_grad(meta_params, tasks) -> (meta_loss, grads)``; the meta-loss and its
        gradient with respect to ``meta_params``.
    """

    init: Callable[[Params], Params]
    adapt: Callable[..., Params]
    adapt_trajectory: Callable[..., Params]
    task_loss: Callable[[Params, Task], Array]
    meta_loss: Callable[[Params, Task], Array]
    meta_grad: Callable[[Params, Task], tuple[Array, Params]]
