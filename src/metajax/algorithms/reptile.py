"""Reptile (Nichol, Achiam and Schulman, 2018): move the initialisation towards each task's
adapted parameters."""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from metajax import _validation, options
from metajax.algorithms.inner_loop import inner_loop_learner, optimizer_inner_step
from metajax.algorithms.maml import maml
from metajax.config import registry
from metajax.config.algorithm import Algorithm, inner_steps_text, test_steps_option
from metajax.core.linear_head import LinearHead
from metajax.core.meta_learner import (
    CarriedState,
    LossFn,
    MetaLearner,
    Params,
    cached_factory,
    loss_value,
    mean_over_tasks,
)
from metajax.core.task import Task


@cached_factory
def reptile(
    loss_fn: LossFn,
    *,
    inner_lr: Any,
    inner_steps: int = 5,
    inner_optimizer: Any = None,
    inner_batch_size: int | None = None,
    carry_inner_state: bool = False,
    has_aux: bool = False,
) -> MetaLearner:
    """Reptile: adapt to each task with plain gradient steps, then move the meta-parameters
    towards the adapted ones.

    For each task of a batch, ``inner_steps`` steps of gradient descent of size ``inner_lr``
    (or of ``inner_optimizer(inner_lr)``, any optax optimizer) on its support set take the
    meta-parameters ``theta`` to ``phi``. The update direction is the mean over the batch of
    ``theta - phi``: ``meta_grad`` returns it in place of a gradient,
    so that the outer optimizer's step on it is Reptile's update (with ``optax.sgd(epsilon)``
    exactly ``theta + epsilon * mean(phi - theta)``). No derivative flows through the inner
    loop. With one inner step the direction is ``inner_lr`` times the gradient of the support
    loss at ``theta``: plain multi-task training; Reptile needs more steps than one.

    With ``inner_batch_size``, each inner step of meta-training takes the gradient on the next
    ``inner_batch_size`` support examples rather than on all of them, as the paper's code does
    (a 5-way task of 10 shots a class in 5 steps of 10 examples: each example once, at a fifth
    of the cost). The examples are taken in a fixed strided order, ``0, c, 2c, ...`` then
    ``1, 1 + c, ...`` for ``c`` mini-batches a pass, so that a support set laid out class by
    class (as every task family here lays it out) gives each mini-batch an equal share of
    every class; the paper's code shuffles instead, and since a task's examples are drawn at
    random either way the batches are alike. Adaptation at test time (``adapt``) steps on the
    whole support set, as the paper's evaluation does on its 1-shot support sets.

    The meta-loss that ``meta_grad`` reports with the direction (and that ``meta_loss`` and
    ``task_loss`` compute) is the query loss after adaptation, as for MAML, so that the two are
    monitored and evaluated alike; Reptile itself never looks at the query set.

    The inner optimizer's state (Adam's moments and step count) starts afresh for each task, or,
    with ``carry_inner_state``, is carried from task to task as the paper's code carries it
    (supervised_reptile/reptile.py:24-26 saves and restores only the model's variables): it then
    lives in the meta-parameters (``{"params": ..., "inner_state": ...}``), meta-training carries
    on from each batch the mean of its tasks' final states (the code runs a batch's tasks one
    after another through one state instead, so its step count grows by ``inner_steps`` a task
    where this one grows by ``inner_steps`` a batch), and every test-time adaptation starts from
    it and leaves it unchanged, as the code's evaluation does.

    Args:
      loss_fn: ``loss_fn(params, batch)``, a scalar or, with ``has_aux``, ``(loss, aux)``.
      inner_lr: the inner-loop step size, a number ``> 0`` or a scalar JAX array.
      inner_steps: the default number of inner steps, ``>= 1``.
      inner_optimizer: a function of the step size returning an optax optimizer; ``None``,
        plain gradient descent. The paper's is Adam with beta1 0
        (``functools.partial(optax.adam, b1=0.0)``, ``--inner-optimizer adam``).
      inner_batch_size: support examples per inner step of meta-training, ``>= 1``; ``None``
        (or a size at least the support set's), all of them. Every leaf of a support set then
        holds its examples along its first axis.
      carry_inner_state: carry the inner optimizer's state from task to task (above).
      has_aux: ``loss_fn`` returns ``(loss, aux)``.

    Returns:
      A :class:`~metajax.MetaLearner` whose meta-parameters are the model parameters, or with
      ``carry_inner_state`` the dict of them and the inner optimizer's state.

    Raises:
      OptionError: if a setting is out of range.

    Example:
      >>> loss = lambda theta, a: 0.5 * (theta - a) ** 2
      >>> learner = reptile(loss, inner_lr=0.5, inner_steps=2)
      >>> tasks = Task(support=jnp.array([0.0, 4.0]), query=jnp.array([0.0, 4.0]))
      >>> # phi = a + (1 - 0.5)**2 (theta - a) for theta = 1: 0.25 and 3.25
      >>> float(learner.meta_grad(1.0, tasks)[1])  # mean of 0.75 and -2.25
      -0.75
    """
    _validation.integer("inner_steps", inner_steps, 1)
    if inner_batch_size is not None:
        _validation.integer("inner_batch_size", inner_batch_size, 1)
    carry_inner_state = _validation.boolean("carry_inner_state", carry_inner_state)
    adaptation = maml(
        loss_fn,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        has_aux=has_aux,
        inner_optimizer=inner_optimizer,
    )
    optimizer = optax.sgd(inner_lr) if inner_optimizer is None else inner_optimizer(inner_lr)
    inner_loss = loss_value(loss_fn, has_aux)
    inner_step = optimizer_inner_step(inner_loss, optimizer, True)
    test_step = optimizer_inner_step(inner_loss, optimizer, False)

    def model_params(meta_params: Params) -> Params:
        return meta_params["params"] if carry_inner_state else meta_params

    def training_adapt(params: Params, state: Any, support: Any) -> tuple[Params, Any]:
        """Meta-training's inner loop from ``params`` and the inner optimizer's ``state``: the
        adapted parameters and the optimizer's state after the last step."""
        batches = None  # every step on the whole support set
        if inner_batch_size is not None:
            size = _example_count(support, inner_batch_size)
            if inner_batch_size < size:
                batches = jnp.asarray(minibatch_indices(size, inner_batch_size, inner_steps))
        if batches is None and not carry_inner_state:
            return adaptation.adapt(params, support), state

        def step(carry: Any, indices: jax.Array | None) -> tuple[Any, None]:
            batch = support if indices is None else jax.tree.map(lambda x: x[indices], support)
            return inner_step(carry, batch), None

        carry = (params, state)
        return lax.scan(step, carry, batches, length=inner_steps, unroll=inner_steps <= 8)[0]

    def update(meta_params: Params, task: Task) -> tuple[Any, Params, Any]:
        """One task's query loss after adaptation, direction ``theta - phi`` and final inner
        optimizer state."""
        params = model_params(meta_params)
        start = meta_params["inner_state"] if carry_inner_state else optimizer.init(params)
        adapted, state = training_adapt(params, start, task.support)
        direction = jax.tree.map(jnp.subtract, params, adapted)
        return loss_fn(adapted, task.query), direction, state

    def meta_grad(meta_params: Params, tasks: Task) -> tuple[Any, ...]:
        losses, directions, states = jax.vmap(update, in_axes=(None, 0))(meta_params, tasks)
        mean = jax.tree.map(jnp.mean, losses)
        direction = jax.tree.map(lambda leaf: jnp.mean(leaf, axis=0), directions)
        if not carry_inner_state:
            return mean, direction
        # The tasks of a batch adapt side by side here, where the paper's code runs them one
        # after another through one optimizer: the state carried on is their mean. Integer
        # leaves (the step count) are the same for every task; a float mean would round them.
        carried = jax.tree.map(_mean_over_tasks, states)
        zeros = jax.tree.map(jnp.zeros_like, meta_params["inner_state"])
        return mean, {"params": direction, "inner_state": zeros}, carried

    if not carry_inner_state:
        return adaptation._replace(meta_grad=meta_grad)

    def from_state(meta_params: Params) -> MetaLearner:
        """Test-time adaptation: the inner optimizer starting from the carried state, which it
        does not change (the paper's code restores it after each test task)."""
        return inner_loop_learner(
            loss_fn,
            test_step,
            inner_steps=inner_steps,
            has_aux=has_aux,
            inner_state=lambda _: meta_params["inner_state"],
        )

    def adapt(meta_params: Params, support: Any, inner_steps: int | None = None) -> Params:
        return from_state(meta_params).adapt(meta_params["params"], support, inner_steps)

    def adapt_trajectory(meta_params: Params, support: Any, *args: Any, **kwargs: Any) -> Any:
        learner = from_state(meta_params)
        return learner.adapt_trajectory(meta_params["params"], support, *args, **kwargs)

    def task_loss(meta_params: Params, task: Task) -> Any:
        return loss_fn(adapt(meta_params, task.support), task.query)

    return MetaLearner(
        init=lambda params: {"params": params, "inner_state": optimizer.init(params)},
        model_params=model_params,
        adapt=adapt,
        adapt_trajectory=adapt_trajectory,
        task_loss=task_loss,
        meta_loss=mean_over_tasks(task_loss),
        meta_grad=meta_grad,
        has_aux=has_aux,
        carried_state=CarriedState(
            trainable=lambda _: {"params": True, "inner_state": False},
            update=lambda meta_params, carried: {**meta_params, "inner_state": carried},
        ),
    )


def _mean_over_tasks(leaf: jax.Array) -> jax.Array:
    """The mean of a state leaf over its leading (task) axis; an integer leaf's first entry."""
    if jnp.issubdtype(leaf.dtype, jnp.integer):
        return leaf[0]
    return jnp.mean(leaf, axis=0).astype(leaf.dtype)


def minibatch_indices(size: int, batch_size: int, steps: int) -> np.ndarray:
    """The support examples of each of ``steps`` inner steps, ``[steps, batch_size]``: passes
    over ``range(size)`` in the strided order that deals a class-by-class layout out evenly
    over the ``ceil(size / batch_size)`` mini-batches of a pass.

    >>> minibatch_indices(6, 2, 4).tolist()  # two classes of three: one of each a batch
    [[0, 3], [1, 4], [2, 5], [0, 3]]
    """
    per_pass = -(-size // batch_size)
    order = sorted(range(size), key=lambda i: (i % per_pass, i // per_pass))
    passes = -(-steps * batch_size // size)
    return np.array(order * passes)[: steps * batch_size].reshape(steps, batch_size)


def _example_count(support: Any, inner_batch_size: int) -> int:
    """The number of examples in a support set: the first axis that all its leaves share."""
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else -1 for leaf in jax.tree.leaves(support)}
    if len(sizes) != 1 or -1 in sizes:
        shapes = [np.shape(leaf) for leaf in jax.tree.leaves(support)]
        raise _validation.OptionError(
            "inner_batch_size",
            "None for a support set whose leaves do not all hold their examples along a "
            f"shared first axis (this one's shapes: {shapes})",
            inner_batch_size,
        )
    return int(sizes.pop())


@registry.register_algorithm
@dataclasses.dataclass(frozen=True)
class Reptile(Algorithm):
    """Reptile's hyper-parameters (``--algorithm reptile``); see :func:`reptile`."""

    name: ClassVar[str] = "reptile"
    description: ClassVar[str] = (
        "Reptile (Nichol et al., 2018): the outer step follows theta - phi, the meta-parameters "
        "minus each task's adapted parameters; needs --inner-steps above 1"
    )

    inner_lr: Any = options.number(
        0.01, "inner-loop (adaptation) step size", metavar="LR", traceable=True
    )
    inner_steps: int = options.integer(
        5, "inner-loop gradient steps before each outer step", minimum=1, metavar="S"
    )
    inner_optimizer: str = options.choice(
        "sgd",
        ("sgd", "adam"),
        "the inner loop's optimizer, with step size --inner-lr: sgd (plain gradient descent) or "
        "adam (optax.adam with beta1 0, as the paper's code: supervised_reptile/models.py:10)",
    )
    inner_batch_size: int | None = options.integer(
        None,
        "support examples per inner step of meta-training, taken in turn (the paper's code: "
        "--inner-batch); test-time steps take the whole support set",
        optional=True,
        default_text="the whole support set",
    )
    carry_inner_state: bool = options.flag(
        False,
        "carry the inner optimizer's state (Adam's moments) from task to task and into "
        "test-time adaptation, as the paper's code does (supervised_reptile/reptile.py:24-26); "
        "without it, each task starts the optimizer afresh",
    )
    test_steps: int | None = test_steps_option()

    def make(
        self, loss_fn: LossFn, *, has_aux: bool = False, head: LinearHead | None = None
    ) -> MetaLearner:
        optimizer = (
            functools.partial(optax.adam, b1=0.0) if self.inner_optimizer == "adam" else None
        )
        return reptile(
            loss_fn,
            inner_lr=self.inner_lr,
            inner_steps=self.inner_steps,
            inner_optimizer=optimizer,
            inner_batch_size=self.inner_batch_size,
            carry_inner_state=self.carry_inner_state,
            has_aux=has_aux,
        )

    @property
    def label(self) -> str:
        return "Reptile"

    def describe(self) -> str:
        batches = f" of {self.inner_batch_size} examples" if self.inner_batch_size else ""
        return inner_steps_text(self.inner_steps) + batches

    def setting_warnings(self, support_curvature: Callable[[], float]) -> list[str]:
        warned = super().setting_warnings(support_curvature)
        if self.inner_steps == 1:
            warned.append(
                "Reptile with `inner_steps` 1 moves the meta-parameters along the support loss's "
                "gradient: plain multi-task training, which does not learn to adapt (Nichol et "
                "al., 2018, section 5); set `inner_steps` to 5 or more, as the paper does"
            )
        return warned

    def adaptation_text(self) -> str:
        optimizer = "" if self.inner_optimizer == "sgd" else "adam, "
        carried = "carried state, " if self.carry_inner_state else ""
        return f"{optimizer}{carried}inner lr {self.inner_lr:g}"
