"""iMAML (Rajeswaran et al., 2019): meta-learning with implicit gradients."""

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax
from jax import Array
from jax.scipy.sparse.linalg import cg

from metajax import _validation, options
from metajax.algorithms.inner_loop import inner_loop_learner
from metajax.config import registry
from metajax.config.algorithm import Algorithm, inner_steps_text, test_steps_option
from metajax.core.linear_head import LinearHead
from metajax.core.meta_learner import (
    LossFn,
    MetaLearner,
    Params,
    cached_factory,
    gradient_learner,
    gradient_step,
    loss_value,
)
from metajax.core.task import Task

INNER_SOLVERS = ("gd", "lbfgs")
"""iMAML's inner solvers: gradient descent, L-BFGS."""


@cached_factory
def imaml(
    loss_fn: LossFn,
    *,
    inner_lr: Any,
    inner_steps: int = 10,
    prox_lambda: float = 1.0,
    cg_steps: int = 5,
    cg_damping: float = 0.0,
    lambda_damping: float = 0.0,
    proximal_inner_loop: bool = True,
    inner_solver: str = "gd",
    has_aux: bool = False,
) -> MetaLearner:
    """iMAML: the adapted parameters minimise the support loss plus a proximal term that keeps
    them near the meta-parameters, and the meta-gradient comes from the implicit function
    theorem instead of from differentiating the inner loop.

    The inner loop takes ``inner_steps`` steps of gradient descent, of size ``inner_lr``, on
    ``L_support(phi) + prox_lambda / 2 * |phi - theta|^2`` from ``phi = theta``. At a minimum
    ``phi*`` of that objective, ``d phi* / d theta = (I + H / prox_lambda)^-1``, where ``H`` is
    the Hessian of the support loss at ``phi*``; the meta-gradient of a task is this matrix
    times the gradient of the query loss at ``phi*``, solved for by ``cg_steps`` iterations of
    conjugate gradient with Hessian-vector products. Memory does not grow with the number of
    inner steps, which are never differentiated; the gradient is exact as far as the inner loop
    reaches the minimum and conjugate gradient converges. Adaptation at test time takes the
    same proximal steps.

    The official code (aravindr93/imaml_dev) differs in two ways, both offered here. It damps
    the linear system: it solves ``(1 + cg_damping) v + H v / (prox_lambda + lambda_damping)``
    with ``cg_damping`` 1 and ``lambda_damping`` 10 (``implicit_maml/learner_model.py:152``).
    And it takes its inner steps on the support loss alone and then one step on the proximal
    term, ``phi - inner_lr * prox_lambda * (phi - theta)`` (``omniglot_implicit_maml.py:107-112``);
    it tests with lambda 0, so adaptation at test time is plain gradient descent. With
    ``proximal_inner_loop=False`` this learner does the same: ``adapt`` takes plain steps and
    the meta-gradient's inner loop adds the one proximal step.

    With ``inner_solver="lbfgs"`` the inner loop is ``inner_steps`` iterations of L-BFGS
    (``optax.lbfgs``, its zoom line search and 10 past steps) instead of gradient descent, and
    ``inner_lr`` sets only the official code's one proximal step. Gradient descent reaches the
    minimum only below its stability bound, 2 / (largest curvature + ``prox_lambda``), and
    meta-training can sharpen the support loss past any fixed step size (on the MAML paper's
    sinusoids every step size tried diverged within 5 300 meta-steps); a line search cannot
    overshoot, so L-BFGS keeps converging wherever the curvature goes.

    Args:
      loss_fn: as for :func:`metajax.maml`.
      inner_lr: the inner step size, a number ``> 0`` or a scalar JAX array.
      inner_steps: the default number of inner steps, ``>= 0``.
      prox_lambda: the proximal term's strength, ``> 0``: larger keeps the adapted parameters
        nearer the meta-parameters.
      cg_steps: conjugate-gradient iterations, ``>= 1``; as many as there are parameters
        solve exactly in exact arithmetic.
      cg_damping: added to the identity of the linear system, ``>= 0``.
      lambda_damping: added to ``prox_lambda`` where it divides the Hessian, ``>= 0``.
      proximal_inner_loop: take the inner steps on the support loss plus the proximal term;
        ``False``: on the support loss alone, then one proximal step in meta-training.
      inner_solver: ``"gd"`` (gradient descent of step size ``inner_lr``) or ``"lbfgs"``.
      has_aux: ``loss_fn`` returns ``(loss, aux)``.

    Returns:
      A :class:`~metajax.MetaLearner` whose meta-parameters are the model parameters.

    Raises:
      OptionError: if a setting is out of range.
    """
    inner_lr = _validation.step_size("inner_lr", inner_lr)
    steps = _validation.integer("inner_steps", inner_steps, 0)
    prox_lambda = _validation.positive_number("prox_lambda", prox_lambda)
    cg_steps = _validation.integer("cg_steps", cg_steps, 1)
    cg_damping = _validation.positive_number("cg_damping", cg_damping, zero=True)
    lambda_damping = _validation.positive_number("lambda_damping", lambda_damping, zero=True)
    proximal_inner_loop = _validation.boolean("proximal_inner_loop", proximal_inner_loop)
    if inner_solver not in INNER_SOLVERS:
        raise _validation.OptionError("inner_solver", f"one of {INNER_SOLVERS}", inner_solver)
    has_aux = _validation.boolean("has_aux", has_aux)
    inner_loss = loss_value(loss_fn, has_aux)
    strength = prox_lambda if proximal_inner_loop else 0.0

    def adapt(meta_params: Params, support: Any, inner_steps: int | None = None) -> Params:
        descent = proximal_descent(
            loss_fn, inner_loss, meta_params, inner_lr, strength, steps, inner_solver
        )
        return descent.adapt(meta_params, support, inner_steps)

    def adapt_then_pull_back(meta_params: Params, support: Any) -> Params:
        phi = adapt(meta_params, support)
        if proximal_inner_loop:
            return phi
        pull = inner_lr * prox_lambda
        return jax.tree.map(lambda p, a: p - pull * (p - a), phi, meta_params)

    def adapt_trajectory(
        meta_params: Params,
        support: Any,
        inner_steps: int | None = None,
        observe: Callable[[Params], Any] | None = None,
    ) -> Any:
        descent = proximal_descent(
            loss_fn, inner_loss, meta_params, inner_lr, strength, steps, inner_solver
        )
        return descent.adapt_trajectory(meta_params, support, inner_steps, observe)

    adapted = implicitly_differentiated(
        adapt_then_pull_back, inner_loss, prox_lambda, cg_steps, cg_damping, lambda_damping
    )

    def task_loss(meta_params: Params, task: Task) -> Any:
        return loss_fn(adapted(meta_params, task.support), task.query)

    return gradient_learner(
        task_loss, adapt=adapt, adapt_trajectory=adapt_trajectory, has_aux=has_aux
    )


def proximal_descent(
    loss_fn: LossFn,
    inner_loss: Callable[[Params, Any], Array],
    anchor: Params,
    inner_lr: Any,
    prox_lambda: float,
    inner_steps: int,
    solver: str = "gd",
) -> MetaLearner:
    """The inner loop of ``inner_steps`` (by default) steps of gradient descent (``solver``
    ``"gd"``) or L-BFGS (``"lbfgs"``) on the support loss plus the proximal term
    ``prox_lambda / 2 * |params - anchor|^2``."""

    def proximal_loss(params: Params, support: Any) -> Any:
        if not prox_lambda:  # the support loss alone, with no term that adds zero
            return inner_loss(params, support)
        distance = sum(
            jnp.sum(jnp.square(p - a))
            for p, a in zip(jax.tree.leaves(params), jax.tree.leaves(anchor), strict=True)
        )
        return inner_loss(params, support) + 0.5 * prox_lambda * distance

    if solver == "lbfgs":
        lbfgs = optax.lbfgs()

        def lbfgs_step(carry: tuple[Params, Any], support: Any) -> tuple[Params, Any]:
            params, state = carry

            def objective(params: Params) -> Any:
                return proximal_loss(params, support)

            # The line search keeps the value and gradient at the point it accepts: reused.
            value, grad = optax.value_and_grad_from_state(objective)(params, state=state)
            updates, state = lbfgs.update(
                grad, state, params, value=value, grad=grad, value_fn=objective
            )
            return optax.apply_updates(params, updates), state

        return inner_loop_learner(
            loss_fn, lbfgs_step, inner_steps=inner_steps, inner_state=lbfgs.init
        )

    def inner_step(params: Params, support: Any) -> Params:
        step_sizes = jax.tree.map(lambda _: inner_lr, params)
        return gradient_step(proximal_loss, params, support, step_sizes, False)

    return inner_loop_learner(loss_fn, inner_step, inner_steps=inner_steps)


def implicitly_differentiated(
    adapt: Callable[[Params, Any], Params],
    inner_loss: Callable[[Params, Any], Array],
    prox_lambda: float,
    cg_steps: int,
    cg_damping: float = 0.0,
    lambda_damping: float = 0.0,
) -> Callable[[Params, Any], Params]:
    """``adapt(meta_params, support)`` with the implicit function theorem's derivative: the
    cotangent of the adapted parameters ``phi`` times ``(I + H / prox_lambda)^-1``, ``H`` the
    support loss's Hessian at ``phi``, solved by ``cg_steps`` iterations of conjugate gradient
    with Hessian-vector products; damped, ``((1 + cg_damping) I + H / (prox_lambda +
    lambda_damping))^-1``."""

    @jax.custom_vjp
    def adapted(meta_params: Params, support: Any) -> Params:
        return adapt(meta_params, support)

    def forward(meta_params: Params, support: Any) -> tuple[Params, tuple[Params, Any]]:
        phi = adapt(meta_params, support)
        return phi, (phi, support)

    def backward(residuals: tuple[Params, Any], cotangent: Params) -> tuple[Params, None]:
        phi, support = residuals

        def gradient(params: Params) -> Params:
            return jax.grad(inner_loss)(params, support)

        def matvec(vector: Params) -> Params:
            hvp = jax.jvp(gradient, (phi,), (vector,))[1]
            return jax.tree.map(
                lambda v, h: (1 + cg_damping) * v + h / (prox_lambda + lambda_damping),
                vector,
                hvp,
            )

        # tol=0: exactly cg_steps iterations, unless the residual vanishes first.
        solution, _ = cg(matvec, cotangent, maxiter=cg_steps, tol=0.0)
        return solution, None

    adapted.defvjp(forward, backward)
    return adapted


@registry.register_algorithm
@dataclasses.dataclass(frozen=True)
class IMAML(Algorithm):
    """iMAML's hyper-parameters (``--algorithm imaml``); see :func:`imaml`."""

    name: ClassVar[str] = "imaml"
    description: ClassVar[str] = (
        "iMAML (Rajeswaran et al., 2019): proximal inner loop, implicit meta-gradient by "
        "conjugate gradient"
    )

    inner_lr: Any = options.number(
        0.01, "inner-loop (adaptation) step size", metavar="LR", traceable=True
    )
    inner_steps: int = options.integer(
        10,
        "inner-loop gradient steps on the support loss plus the proximal term",
        minimum=0,
        metavar="S",
    )
    test_steps: int | None = test_steps_option()
    prox_lambda: float = options.number(
        1.0,
        "strength lambda of the proximal term lambda/2 |phi - theta|^2 that keeps the adapted "
        "parameters phi near the meta-parameters theta",
        metavar="LAMBDA",
    )
    cg_steps: int = options.integer(
        5, "conjugate-gradient iterations for the implicit meta-gradient", minimum=1, metavar="N"
    )
    cg_damping: float = options.number(
        0.0,
        "D in the damped system (1 + D) v + H v / (lambda + E) that conjugate gradient solves "
        "(the official code's: 1)",
        metavar="D",
        zero=True,
    )
    lambda_damping: float = options.number(
        0.0,
        "E in the damped system (1 + D) v + H v / (lambda + E) (the official code's: 10)",
        metavar="E",
        zero=True,
    )
    proximal_inner_loop: bool = options.flag(
        True,
        "inner steps on the support loss plus the proximal term; --no-proximal-inner-loop: on "
        "the support loss alone, then one proximal step in training, as the official code",
    )

    inner_solver: str = options.choice(
        "gd",
        INNER_SOLVERS,
        "the inner loop's solver: gd (gradient descent of step size --inner-lr) or lbfgs "
        "(optax.lbfgs with its line search: converges at any curvature; --inner-lr then sets "
        "only --no-proximal-inner-loop's one proximal step)",
    )

    def make(
        self, loss_fn: LossFn, *, has_aux: bool = False, head: LinearHead | None = None
    ) -> MetaLearner:
        return imaml(
            loss_fn,
            inner_lr=self.inner_lr,
            inner_steps=self.inner_steps,
            prox_lambda=self.prox_lambda,
            cg_steps=self.cg_steps,
            cg_damping=self.cg_damping,
            lambda_damping=self.lambda_damping,
            proximal_inner_loop=self.proximal_inner_loop,
            inner_solver=self.inner_solver,
            has_aux=has_aux,
        )

    @property
    def label(self) -> str:
        return "iMAML"

    def describe(self) -> str:
        solver = " of L-BFGS" if self.inner_solver == "lbfgs" else ""
        return f"{inner_steps_text(self.inner_steps)}{solver}, lambda {self.prox_lambda:g}"

    def setting_warnings(self, support_curvature: Callable[[], float]) -> list[str]:
        # The implicit gradient is the proximal minimum's, which gradient descent reaches only
        # below the stability bound 2 / (largest curvature of what it descends).
        warned = super().setting_warnings(support_curvature)
        if not self.inner_steps or self.cg_damping or self.lambda_damping:
            return warned  # a damped system is an approximation by design
        if self.inner_solver == "lbfgs":
            return warned  # a line search has no step size to exceed
        strength = self.prox_lambda if self.proximal_inner_loop else 0.0
        curvature = support_curvature()
        bound = 2 / (curvature + strength)
        if self.inner_lr > bound:
            descended = "support loss plus the proximal term" if strength else "support loss"
            warned.append(
                f"iMAML's inner loop cannot converge at `inner_lr` {self.inner_lr:g}: the "
                f"{descended} curves by up to {curvature + strength:.3g} on the first training "
                f"task, so gradient descent is stable only below {bound:.3g}, and the implicit "
                "meta-gradient is that of a minimum the inner loop never reaches; lower "
                "`inner_lr`, solve it by L-BFGS (`inner_solver` lbfgs), or damp the system as "
                "the paper's code does: `cg_damping` 1 and `lambda_damping` 10 (as omniglot's "
                "paper-*-imaml presets do)"
            )
        return warned

    def adapts_with_inner_lr(self) -> bool:
        return self.inner_solver == "gd"  # L-BFGS's line search picks its own steps

    def adaptation_text(self) -> str:
        if self.inner_solver == "lbfgs":
            return f"L-BFGS, lambda {self.prox_lambda:g}"
        return f"inner lr {self.inner_lr:g}, lambda {self.prox_lambda:g}"
