"""The interface every meta-learning algorithm implements."""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, lax

from metajax.core.task import Task

Params = Any
"""Any pytree of arrays: a dict, a tuple, the array part of an Equinox module, ..."""

LossFn = Callable[[Params, Any], Any]
"""``loss_fn(params, batch)``: the loss of one task's model on one batch of its examples.

It returns a scalar, or, for a learner built with ``has_aux=True``, a pair
``(loss, aux)`` where ``aux`` is any pytree of values computed in the same forward pass:
metrics such as ``{"accuracy": ...}``, or statistics the model computed. ``loss_fn`` always
sees the examples of one task (algorithms ``vmap`` it over tasks), so statistics a model
computes from its batch, such as batch normalisation's, are those of that task alone and never
mix tasks. Nothing flows back from ``aux`` into the parameters: it is reported, not trained.
"""


class CarriedState(NamedTuple):
    """The part of a learner's meta-parameters that is carried, not optimised.

    Attributes:
      trainable: ``trainable(meta_params)``: a pytree prefix of ``meta_params`` (or the full
        tree) of bools, ``True`` for the leaves the outer optimizer updates; it sees only those
        (``optax.masked``), so it keeps no moments of the carried state.
      update: ``update(meta_params, carried) -> meta_params``: the meta-parameters after an outer
        step with the carried part replaced by ``carried``, the third value ``meta_grad``
        returns.
    """

    trainable: Callable[[Params], Any]
    update: Callable[[Params, Any], Params]


class ScaledUpdates(NamedTuple):
    """A part of a learner's meta-parameters that the outer optimizer moves at a multiple of its
    learning rate.

    Adam moves every meta-parameter by about its learning rate a step, whatever the
    parameter's size, so a step size of 0.01 meta-learned with Adam at 1e-3 can change by a
    tenth in one meta-step; a smaller multiple keeps its relative change near the weights'.

    Attributes:
      mask: ``mask(meta_params)``: a pytree prefix of ``meta_params`` of bools, ``True`` for
        the leaves whose updates are scaled.
      scale: the factor, ``> 0``, that multiplies their updates.
    """

    mask: Callable[[Params], Any]
    scale: float


class MetaLearner(NamedTuple):
    """A meta-learning algorithm as a record of pure functions.

    Built by a factory such as :func:`metajax.maml`, which closes over the loss and the
    hyper-parameters. Every function is pure and can be jitted, vmapped and differentiated, so
    the outer loop is plain optax on ``meta_params``.

    Attributes:
      init: ``init(params) -> meta_params``; the meta-parameters that start meta-training, from
        a model's parameters.
      model_params: ``model_params(meta_params) -> params``; the model parameters that
        adaptation starts from. For MAML they are the meta-parameters themselves; an algorithm
        that also meta-learns other values (step sizes, say) keeps them in ``meta_params`` too,
        so checkpoints and saved runs hold them.
      adapt: ``adapt(meta_params, support, inner_steps=None) -> params``; the inner loop on one
        task's support set. ``inner_steps`` overrides the number of inner steps (a Python int).
      adapt_trajectory: ``adapt_trajectory(meta_params, support, inner_steps=None,
        observe=None)``: the model parameters before adaptation and after each inner step,
        stacked on a leading axis of length ``inner_steps + 1``; with ``observe``,
        ``observe(params)`` of each of them instead, so that only what is observed (a metric,
        say) is kept in memory, not every step's parameters.
      task_loss: ``task_loss(meta_params, task)``; what meta-training minimises for one task
        (with ``has_aux``, the pair ``(loss, aux)``). For MAML, the query loss of the parameters
        adapted on the support set.
      meta_loss: ``meta_loss(meta_params, tasks)``; ``task_loss`` averaged over a task batch (a
        :class:`~metajax.Task` whose leaves have a leading task axis); with ``has_aux``, the
        pair of the mean loss and the mean of each ``aux`` leaf.
      meta_grad: ``meta_grad(meta_params, tasks) -> (meta_loss, grads)``: the meta-loss (as
        ``meta_loss`` returns it) and its gradient with respect to ``meta_params``, like
        ``jax.value_and_grad(meta_loss, has_aux=has_aux)``; with ``carried_state``,
        ``(meta_loss, grads, carried)``. With ``uses_meta_step``,
        ``meta_grad(meta_params, tasks, meta_step)``.
      has_aux: whether ``loss_fn`` returns ``(loss, aux)`` rather than a scalar.
      uses_meta_step: whether the objective follows a schedule over meta-training (MAML++'s
        annealed loss weights, say): ``meta_grad`` then takes a third argument, the number of
        meta-steps taken before this one (an int32 scalar), and returns that step's objective
        and its gradient, so the meta-loss training logs follows the schedule (MAML++'s
        weighted sum of query losses while it anneals); ``meta_loss`` is the objective the
        schedule ends with.
      carried_state: the part of the meta-parameters that is carried, not optimised (see
        :class:`CarriedState`); ``None`` for none.
      scaled_updates: the part of the meta-parameters the outer optimizer moves at a multiple
        of its learning rate (see :class:`ScaledUpdates`); ``None`` for none.
    """

    init: Callable[[Params], Params]
    model_params: Callable[[Params], Params]
    adapt: Callable[..., Params]
    adapt_trajectory: Callable[..., Any]
    task_loss: Callable[[Params, Task], Any]
    meta_loss: Callable[[Params, Task], Any]
    meta_grad: Callable[..., tuple[Any, ...]]
    has_aux: bool = False
    uses_meta_step: bool = False
    carried_state: CarriedState | None = None
    scaled_updates: ScaledUpdates | None = None


def loss_value(loss_fn: LossFn, has_aux: bool) -> Callable[[Params, Any], Array]:
    """``loss_fn`` as a function returning the loss alone, for the inner loop's gradients."""
    if not has_aux:
        return loss_fn
    return lambda params, batch: loss_fn(params, batch)[0]


def mean_over_tasks(task_loss: Callable[[Params, Task], Any]) -> Callable[[Params, Task], Any]:
    """``meta_loss(meta_params, tasks)``: ``task_loss`` of every task of a batch (``vmap`` over
    the leading task axis), each of its values (the loss, and ``aux`` if any) averaged."""

    def meta_loss(meta_params: Params, tasks: Task) -> Any:
        return jax.tree.map(jnp.mean, jax.vmap(task_loss, in_axes=(None, 0))(meta_params, tasks))

    return meta_loss


def identity(params: Params) -> Params:
    return params


def gradient_learner(
    task_loss: Callable[[Params, Task], Any],
    *,
    adapt: Callable[..., Params],
    adapt_trajectory: Callable[..., Any],
    has_aux: bool,
    init: Callable[[Params], Params] = identity,
    model_params: Callable[[Params], Params] = identity,
) -> MetaLearner:
    """The learner whose meta-loss is ``task_loss`` averaged over a task batch and whose
    meta-gradient is that mean's gradient: every algorithm's but those whose objective follows
    a schedule (MAML++) or whose update is no gradient (Reptile). The meta-parameters are the
    model parameters unless ``init`` and ``model_params`` say otherwise."""
    meta_loss = mean_over_tasks(task_loss)
    return MetaLearner(
        init=init,
        model_params=model_params,
        adapt=adapt,
        adapt_trajectory=adapt_trajectory,
        task_loss=task_loss,
        meta_loss=meta_loss,
        meta_grad=jax.value_and_grad(meta_loss, has_aux=has_aux),
        has_aux=has_aux,
    )


def gradient_step(
    inner_loss: Callable[[Params, Any], Array],
    params: Params,
    support: Any,
    step_sizes: Params,
    first_order: bool,
) -> Params:
    """One step of gradient descent on ``inner_loss(params, support)``: ``params - step_sizes
    * grad``, leaf by leaf (``step_sizes`` is shaped like ``params``; a leaf may be one number
    for its whole array). With ``first_order``, the gradient is a constant to whatever
    differentiates the step."""
    grads = jax.grad(inner_loss)(params, support)
    if first_order:
        grads = lax.stop_gradient(grads)
    return jax.tree.map(lambda p, lr, g: p - lr * g, params, step_sizes, grads)


def cached_factory(factory: Callable[..., MetaLearner]) -> Callable[..., MetaLearner]:
    """Makes equal calls of an algorithm's factory return the same learner.

    ``jax.jit`` caches compiled code per function object, and each call of a factory makes new
    closures: without this, ``jax.jit(maml(loss_fn, inner_lr=0.1).meta_grad)`` would compile
    again for every learner built with the same settings. Calls whose arguments cannot be
    hashed (a JAX array as the step size, to sweep it with ``vmap``) build a new learner.
    """
    # typed: True == 1, but a flag given as 1 must still be refused, which only a call does.
    cached = functools.lru_cache(maxsize=64, typed=True)(factory)

    @functools.wraps(factory)
    def factory_or_cached(*args: Any, **kwargs: Any) -> MetaLearner:
        try:
            return cached(*args, **kwargs)
        except TypeError as error:  # an unhashable argument
            if "unhashable" not in str(error):
                raise
            return factory(*args, **kwargs)

    return factory_or_cached
