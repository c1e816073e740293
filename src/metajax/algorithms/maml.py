"""Model-Agnostic Meta-Learning (Finn et al., 2017), second and first order."""

import jax
import jax.numpy as jnp
from jax import lax

from metajax import _validation
from metajax.algorithms.meta_learner import LossFn, MetaLearner, Params
from metajax.tasks.task import Task


def maml(
    loss_fn: LossFn,
    *,
    inner_lr: float,
    num_steps: int = 1,
    first_order: bool = False,
) -> MetaLearner:
    """MAML: meta-learn an initialisation that adapts well with a few gradient steps.

    The inner loop takes ``num_steps`` steps of plain gradient descent, of size ``inner_lr``, on
    a task's support set. The meta-loss is the loss of the adapted parameters on the task's query
    set, averaged over a task batch; its gradient flows back through the inner loop, so it
    contains the Hessian-vector products of the inner losses (second order). With
    ``first_order=True`` the inner gradients are treated as constants (``stop_gradient``), which
    drops those terms: the first-order approximation of Finn et al. (2017).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` for any pytree ``params`` of arrays. For an
        Equinox model, partition it first (``eqx.partition(model, eqx.is_inexact_array)``) and
        recombine inside ``loss_fn``.
      inner_lr: the inner-loop step size: a number ``> 0``, or a scalar JAX array (which may be
        traced, e.g. to ``vmap`` over step sizes).
      num_steps: the number of inner-loop steps, ``>= 0``. With 0, MAML reduces to plain
        multi-task training on the query sets.
      first_order: stop gradients through the inner-loop gradients.

    Returns:
      A :class:`~metajax.MetaLearner`. Its meta-parameters are the model parameters themselves.

    Raises:
      ValueError: if ``inner_lr``, ``num_steps`` or ``first_order`` is out of range.

    Example:
      >>> loss = lambda theta, a: 0.5 * (theta - a) ** 2
      >>> learner = maml(loss, inner_lr=0.1)
      >>> round(float(learner.task_loss(1.0, Task(support=0.0, query=0.0))), 6)  # 0.5 * 0.9**2
      0.405
    """
    inner_lr = _validation.step_size("inner_lr", inner_lr)
    default_num_steps = _validation.integer("num_steps", num_steps, 0)
    first_order = _validation.boolean("first_order", first_order)

    def inner_step(params: Params, support) -> Params:
        grads = jax.grad(loss_fn)(params, support)
        if first_order:
            grads = lax.stop_gradient(grads)
        return jax.tree.map(lambda p, g: p - inner_lr * g, params, grads)

    def scan_inner_loop(meta_params: Params, support, num_steps: int | None):
        if num_steps is None:
            num_steps = default_num_steps
        num_steps = _validation.integer("num_steps", num_steps, 0)

        def body(params, _):
            params = inner_step(params, support)
            return params, params

        # Unrolled: a loop of one or a few tiny steps is faster as straight-line code.
        return lax.scan(body, meta_params, length=num_steps, unroll=num_steps <= 8)

    def adapt(meta_params: Params, support, num_steps: int | None = None) -> Params:
        params, _ = scan_inner_loop(meta_params, support, num_steps)
        return params

    def adapt_trajectory(meta_params: Params, support, num_steps: int | None = None) -> Params:
        _, steps = scan_inner_loop(meta_params, support, num_steps)
        return jax.tree.map(
            lambda start, rest: jnp.concatenate([jnp.asarray(start)[None], rest]),
            meta_params,
            steps,
        )

    def task_loss(meta_params: Params, task: Task):
        return loss_fn(adapt(meta_params, task.support), task.query)

    def meta_loss(meta_params: Params, tasks: Task):
        return jnp.mean(jax.vmap(task_loss, in_axes=(None, 0))(meta_params, tasks))

    return MetaLearner(
        init=lambda params: params,
        adapt=adapt,
        adapt_trajectory=adapt_trajectory,
        task_loss=task_loss,
        meta_loss=meta_loss,
        meta_grad=jax.value_and_grad(meta_loss),
    )
