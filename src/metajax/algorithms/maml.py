"""Model-Agnostic Meta-Learning (Finn et al., 2017), second and first order."""

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import optax

from metajax import _validation, options
from metajax.algorithms.inner_loop import (
    InnerOptimizer,
    inner_loop_learner,
    optimizer_inner_step,
)
from metajax.config import registry
from metajax.config.algorithm import Algorithm, inner_steps_text, test_steps_option
from metajax.core.linear_head import LinearHead
from metajax.core.meta_learner import (
    LossFn,
    MetaLearner,
    Params,
    cached_factory,
    gradient_step,
    loss_value,
)

INNER_OPTIMIZERS: dict[str, InnerOptimizer | None] = {
    "sgd": None,  # the built-in step, which optax.sgd equals bit for bit
    "momentum": functools.partial(optax.sgd, momentum=0.9),
    # eps_root keeps the derivative of Adam's square root finite where a gradient is exactly
    # zero (a dead ReLU unit), as optax advises for differentiating through Adam.
    "adam": functools.partial(optax.adam, eps_root=1e-12),
}
"""The inner optimizers the command line knows (``--inner-optimizer``), as functions of the
inner step size."""


@cached_factory
def maml(
    loss_fn: LossFn,
    *,
    inner_lr: Any,
    inner_steps: int = 1,
    first_order: bool = False,
    has_aux: bool = False,
    remat: bool = False,
    inner_optimizer: InnerOptimizer | None = None,
) -> MetaLearner:
    """MAML: meta-learn an initialisation that adapts well with a few gradient steps.

    The inner loop takes ``inner_steps`` steps of plain gradient descent, of size ``inner_lr``,
    on a task's support set, or of ``inner_optimizer(inner_lr)``, any optax optimizer. The
    meta-loss is the loss of the adapted parameters on the task's query set, averaged over a
    task batch; its gradient flows back through the inner loop, so it
    contains the Hessian-vector products of the inner losses (second order). With
    ``first_order=True`` the inner gradients are treated as constants (``stop_gradient``), which
    drops those terms: the first-order approximation of Finn et al. (2017).

    Equal calls return the same learner, so ``jax.jit(learner.meta_grad)`` compiles once for
    equal settings. To try many step sizes with one compilation, pass ``inner_lr`` as a traced
    argument instead: ``jax.vmap(lambda lr: maml(loss_fn, inner_lr=lr).meta_grad(p, tasks))``.

    Args:
      loss_fn: ``loss_fn(params, batch)`` for any pytree ``params`` of arrays, returning a
        scalar, or ``(loss, aux)`` with ``has_aux`` (see :data:`metajax.LossFn`). For an Equinox
        model, partition it first (``eqx.partition(model, eqx.is_inexact_array)``) and
        recombine inside ``loss_fn``.
      inner_lr: the inner-loop step size: a number ``> 0``, or a scalar JAX array (which may be
        traced, e.g. to ``vmap`` over step sizes).
      inner_steps: the number of inner-loop steps, ``>= 0``. With 0, MAML reduces to plain
        multi-task training on the query sets.
      first_order: stop gradients through the inner-loop gradients.
      has_aux: ``loss_fn`` returns ``(loss, aux)``; the meta-loss is then the pair of the mean
        loss and the mean ``aux`` over tasks, both for the query set after adaptation.
      remat: recompute the inner loop for the meta-gradient rather than keep it in memory
        (see :func:`metajax.algorithms.inner_loop.rematerialised_inner_loop`), for second
        order with many inner steps.
      inner_optimizer: a function of the step size returning an optax optimizer
        (``optax.adam``, ``functools.partial(optax.sgd, momentum=0.9)``; for a transformation
        with its own step size, ``lambda lr: transformation``). Its state starts afresh for
        each task, and the meta-gradient flows through its updates exactly. ``None``, plain
        gradient descent, equals ``optax.sgd`` bit for bit. Give Adam ``eps_root > 0``
        (``functools.partial(optax.adam, eps_root=1e-12)``, as ``--inner-optimizer adam``
        does): with optax's default 0, a parameter whose inner gradient is exactly zero (a
        dead ReLU unit) makes the meta-gradient NaN.

    Returns:
      A :class:`~metajax.MetaLearner`. Its meta-parameters are the model parameters themselves.

    Raises:
      OptionError: if ``inner_lr``, ``inner_steps``, ``first_order`` or ``has_aux`` is out of
        range.

    Example:
      >>> loss = lambda theta, a: 0.5 * (theta - a) ** 2
      >>> from metajax import Task
      >>> learner = maml(loss, inner_lr=0.1)
      >>> round(float(learner.task_loss(1.0, Task(support=0.0, query=0.0))), 6)  # 0.5 * 0.9**2
      0.405
    """
    inner_lr = _validation.step_size("inner_lr", inner_lr)
    default_steps = _validation.integer("inner_steps", inner_steps, 0)
    first_order = _validation.boolean("first_order", first_order)
    has_aux = _validation.boolean("has_aux", has_aux)
    inner_loss = loss_value(loss_fn, has_aux)
    if inner_optimizer is not None:
        if not callable(inner_optimizer):
            raise _validation.OptionError(
                "inner_optimizer",
                "a function of the step size returning an optax optimizer",
                inner_optimizer,
            )
        optimizer = inner_optimizer(inner_lr)
        if not isinstance(optimizer, optax.GradientTransformation):
            raise _validation.OptionError(
                "inner_optimizer",
                "a function of the step size returning an optax GradientTransformation (such "
                f"as optax.adam); it returned {type(optimizer).__name__}",
                inner_optimizer,
            )
        return inner_loop_learner(
            loss_fn,
            optimizer_inner_step(inner_loss, optimizer, first_order),
            inner_steps=default_steps,
            has_aux=has_aux,
            remat=remat,
            inner_state=optimizer.init,
        )

    def inner_step(params: Params, support: Any) -> Params:
        step_sizes = jax.tree.map(lambda _: inner_lr, params)
        return gradient_step(inner_loss, params, support, step_sizes, first_order)

    return inner_loop_learner(
        loss_fn, inner_step, inner_steps=default_steps, has_aux=has_aux, remat=remat
    )


@registry.register_algorithm
@dataclasses.dataclass(frozen=True)
class MAML(Algorithm):
    """MAML's hyper-parameters (``--algorithm maml``); see :func:`maml`."""

    name: ClassVar[str] = "maml"
    description: ClassVar[str] = "MAML (Finn et al., 2017), second order unless --first-order"

    inner_lr: Any = options.number(
        0.01, "inner-loop (adaptation) step size", metavar="LR", traceable=True
    )
    inner_steps: int = options.integer(
        1, "inner-loop gradient steps; 0 is plain multi-task training", minimum=0, metavar="S"
    )
    test_steps: int | None = test_steps_option()
    first_order: bool = options.flag(
        False, "first-order MAML: no gradients through the inner-loop gradients"
    )
    remat: bool = options.flag(
        False,
        "recompute the inner loop for the meta-gradient instead of keeping it: memory that "
        "grows with the square root of --inner-steps, the same numbers, more time",
    )
    inner_optimizer: str = options.choice(
        "sgd",
        tuple(INNER_OPTIMIZERS),
        "the inner loop's optimizer, with step size --inner-lr: sgd (plain gradient descent), "
        "momentum (optax.sgd, momentum 0.9) or adam (optax.adam); differentiated through",
    )

    def make(
        self, loss_fn: LossFn, *, has_aux: bool = False, head: LinearHead | None = None
    ) -> MetaLearner:
        return maml(
            loss_fn,
            inner_lr=self.inner_lr,
            inner_steps=self.inner_steps,
            first_order=self.first_order,
            has_aux=has_aux,
            remat=self.remat,
            inner_optimizer=INNER_OPTIMIZERS[self.inner_optimizer],
        )

    @property
    def label(self) -> str:
        return "first-order MAML" if self.first_order else "MAML"

    def describe(self) -> str:
        return inner_steps_text(self.inner_steps)

    def adaptation_text(self) -> str:
        optimizer = "" if self.inner_optimizer == "sgd" else f"{self.inner_optimizer}, "
        return f"{optimizer}inner lr {self.inner_lr:g}"
