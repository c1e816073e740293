"""Reptile (Nichol, Achiam and Schulman, 2018): move the initialisation towards each task's
adapted parameters."""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from metajax import _validation, options
from metajax.algorithms.maml import maml
from metajax.config import registry
from metajax.config.algorithm import Algorithm, inner_steps_text, test_steps_option
from metajax.core.linear_head import LinearHead
from metajax.core.meta_learner import LossFn, MetaLearner, Params, cached_factory
from metajax.core.task import Task


@cached_factory
def reptile(
    loss_fn: LossFn,
    *,
    inner_lr: Any,
    inner_steps: int = 5,
    inner_optimizer: Any = None,
    has_aux: bool = False,
) -> MetaLearner:
    """Reptile: adapt to each task with plain gradient steps, then move the meta-parameters
    towards the adapted ones.

    For each task of a batch, ``inner_steps`` steps of gradient descent of size ``inner_lr``
    (or of ``inner_optimizer(inner_lr)``, any optax optimizer, its state new for each task) on
    its support set take the meta-parameters ``theta`` to ``phi``. The update direction is the
    mean over the batch of ``theta - phi``: ``meta_grad`` returns it in place of a gradient,
    so that the outer optimizer's step on it is Reptile's update (with ``optax.sgd(epsilon)``
    exactly ``theta + epsilon * mean(phi - theta)``). No derivative flows through the inner
    loop. With one inner step the direction is ``inner_lr`` times the gradient of the support
    loss at ``theta``: plain multi-task training; Reptile needs more steps than one.

    The meta-loss that ``meta_grad`` reports with the direction (and that ``meta_loss`` and
    ``task_loss`` compute) is the query loss after adaptation, as for MAML, so that the two are
    monitored and evaluated alike; Reptile itself never looks at the query set.

    Args:
      loss_fn: ``loss_fn(params, batch)``, a scalar or, with ``has_aux``, ``(loss, aux)``.
      inner_lr: the inner-loop step size, a number ``> 0`` or a scalar JAX array.
      inner_steps: the default number of inner steps, ``>= 1``.
      inner_optimizer: a function of the step size returning an optax optimizer; ``None``,
        plain gradient descent. The paper's is Adam with beta1 0
        (``functools.partial(optax.adam, b1=0.0)``, ``--inner-optimizer adam``).
      has_aux: ``loss_fn`` returns ``(loss, aux)``.

    Returns:
      A :class:`~metajax.MetaLearner` whose meta-parameters are the model parameters.

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
    adaptation = maml(
        loss_fn,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        has_aux=has_aux,
        inner_optimizer=inner_optimizer,
    )

    def task_loss_and_direction(meta_params: Params, task: Task) -> tuple[Any, Params]:
        adapted = adaptation.adapt(meta_params, task.support)
        direction = jax.tree.map(jnp.subtract, meta_params, adapted)
        return loss_fn(adapted, task.query), direction

    def meta_grad(meta_params: Params, tasks: Task) -> tuple[Any, Params]:
        losses, directions = jax.vmap(task_loss_and_direction, in_axes=(None, 0))(
            meta_params, tasks
        )
        mean = jax.tree.map(jnp.mean, losses)
        return mean, jax.tree.map(lambda leaf: jnp.mean(leaf, axis=0), directions)

    return adaptation._replace(meta_grad=meta_grad)


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
            has_aux=has_aux,
        )

    @property
    def label(self) -> str:
        return "Reptile"

    def describe(self) -> str:
        return inner_steps_text(self.inner_steps)

    def setting_warnings(self, support_curvature: Callable[[], float]) -> list[str]:
        warned = super().setting_warnings(support_curvature)
        if self.inner_steps == 1:
            warned.append(
                "Reptile with inner_steps 1 moves the meta-parameters along the support loss's "
                "gradient: plain multi-task training, which does not learn to adapt (Nichol et "
                "al., 2018, section 5); take 5 or more inner steps, as the paper does"
            )
        return warned

    def adaptation_text(self) -> str:
        optimizer = "" if self.inner_optimizer == "sgd" else "adam, "
        return f"{optimizer}inner lr {self.inner_lr:g}"
