"""The pretrained baseline of Finn et al. (2017): multi-task training, then fine-tuning."""

import jax
import jax.numpy as jnp

from metajax.algorithms.maml import maml
from metajax.algorithms.meta_learner import LossFn, MetaLearner, Params
from metajax.tasks.task import Task


def pretrain(loss_fn: LossFn, *, inner_lr: float, num_steps: int = 1) -> MetaLearner:
    """Plain regression on all tasks at once, fine-tuned by gradient descent at test time.

    Training fits one set of parameters to every task: the meta-loss is the loss of the
    parameters themselves on all of a task's examples, support and query together, averaged
    over a task batch; nothing adapts during training. At test time ``adapt`` fine-tunes with
    ``num_steps`` steps of gradient descent of size ``inner_lr`` on the support set, exactly as
    :func:`metajax.maml` adapts, so the two are evaluated alike.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``. Support and query batches are joined by
        concatenating every leaf along its first axis, the axis of examples.
      inner_lr: the fine-tuning step size, a number ``> 0`` or a scalar JAX array.
      num_steps: the default number of fine-tuning steps, ``>= 0``.

    Returns:
      A :class:`~metajax.MetaLearner`.
    """
    fine_tune = maml(loss_fn, inner_lr=inner_lr, num_steps=num_steps)

    def task_loss(params: Params, task: Task):
        examples = jax.tree.map(
            lambda support, query: jnp.concatenate([support, query]), task.support, task.query
        )
        return loss_fn(params, examples)

    def meta_loss(params: Params, tasks: Task):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0))(params, tasks))

    return fine_tune._replace(
        task_loss=task_loss, meta_loss=meta_loss, meta_grad=jax.value_and_grad(meta_loss)
    )
