"""MAML++ (Antoniou et al., 2019, "How to train your MAML"): MAML with learned per-layer,
per-step inner step sizes, a multi-step loss with annealed weights, first order for the first
meta-steps, and per-step batch-normalisation parameters."""

import dataclasses
import re
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array, lax

from metajax import _validation, options
from metajax.algorithms.inner_loop import inner_loop_learner
from metajax.algorithms.multi_step_loss import step_loss_weights
from metajax.config import registry
from metajax.config.algorithm import Algorithm, inner_steps_text, test_steps_option
from metajax.core.linear_head import LinearHead
from metajax.core.meta_learner import (
    LossFn,
    MetaLearner,
    Params,
    ScaledUpdates,
    cached_factory,
    gradient_step,
    loss_value,
)
from metajax.core.task import Task

BATCH_NORM = r"scale|offset"
"""The default ``per_step`` pattern: batch normalisation's parameters (``Conv4.scales[i]``,
``Conv4.offsets[i]``); in a model without such leaves, none."""


def per_step_mask(params: Params, pattern: str | None) -> Any:
    """Which leaves of ``params`` get one copy per inner step: those whose path (as
    ``jax.tree_util.keystr`` writes it) ``pattern`` is found in; none without a pattern.

    Raises:
      OptionError: if the pattern picks every leaf, leaving nothing to adapt.
    """
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    picked = [pattern is not None and re.search(pattern, path) is not None for path in paths]
    if picked and all(picked):
        raise _validation.OptionError(
            "per_step",
            f"a pattern that leaves some parameters to adapt ({', '.join(paths)})",
            pattern,
        )
    return jax.tree.unflatten(jax.tree.structure(params), picked)


@cached_factory
def maml_plus_plus(
    loss_fn: LossFn,
    *,
    initial_lr: float,
    inner_steps: int = 5,
    learn_step_sizes: bool = True,
    anneal_steps: int = 0,
    first_order_steps: int = 0,
    per_step: str | None = BATCH_NORM,
    step_size_lr_scale: float = 1.0,
    has_aux: bool = False,
) -> MetaLearner:
    """MAML++: MAML with the changes of Antoniou et al. (2019), each of which can be turned off.

    - Learned per-layer per-step step sizes (LSLR): every leaf of the parameters has one step
      size per inner step, starting at ``initial_lr`` and meta-learned with the
      initialisation, at ``step_size_lr_scale`` times the outer learning rate (Adam moves
      every parameter by about its rate a step: a tenth of a step size of 0.01 at 1e-3). With
      ``learn_step_sizes=False`` every step size stays ``initial_lr``.
    - The multi-step loss (MSL): the objective is the weighted sum of the query losses after
      each inner step, with weights that anneal towards the last step's loss alone over the
      first ``anneal_steps`` meta-steps (see :func:`step_loss_weights`).
    - Derivative-order annealing (DA): first order for the first ``first_order_steps``
      meta-steps, second order after.
    - Per-step batch normalisation (BNWB): the leaves ``per_step`` picks (batch norm's scales
      and offsets by default) have one meta-learned copy per inner step, which they do not
      adapt. As in MAML++'s code, step ``i`` (from 0) takes the support loss's gradient with
      copy ``i``, and the parameters it produces keep copy ``i``: the query loss after ``i + 1``
      steps uses it, so every copy is trained by a query loss under the multi-step loss, and
      the last one by the final query loss always. Their statistics are per step by
      construction, since a metajax model normalises with each batch's own.

    Adapting with more steps than ``inner_steps`` (at evaluation) reuses the last step's step
    sizes and batch-norm copy.

    Args:
      loss_fn: as for :func:`metajax.maml`.
      initial_lr: the step size every layer starts with, a number ``> 0``.
      inner_steps: the number of inner steps, ``>= 1``.
      learn_step_sizes: meta-learn a step size per leaf and per step.
      anneal_steps: meta-steps of multi-step loss; 0 for the last step's loss alone.
      first_order_steps: meta-steps of first order before second order.
      per_step: a regular expression over the leaves' paths: the leaves with a copy per step;
        ``None`` (or ``"none"``) for none.
      step_size_lr_scale: the step sizes' outer learning rate as a multiple of the weights',
        a number ``> 0`` (with ``learn_step_sizes``).
      has_aux: ``loss_fn`` returns ``(loss, aux)``; ``aux`` is the last step's.

    Returns:
      A :class:`~metajax.MetaLearner` with ``uses_meta_step``. Its meta-parameters are
      ``{"params": ..., "inner_lrs": ..., "per_step": ...}``: the initialisation (without the
      per-step leaves), the step sizes (``[inner_steps]`` per leaf, if learned) and the
      per-step copies (``[inner_steps, ...]`` per leaf, if any).

    Raises:
      OptionError: if a setting is out of range, or ``per_step`` picks every parameter.
    """
    initial_lr = _validation.positive_number("initial_lr", initial_lr)
    n = _validation.integer("inner_steps", inner_steps, 1)
    learn_step_sizes = _validation.boolean("learn_step_sizes", learn_step_sizes)
    anneal_steps = _validation.integer("anneal_steps", anneal_steps, 0)
    first_order_steps = _validation.integer("first_order_steps", first_order_steps, 0)
    if per_step == "none":
        per_step = None
    if per_step is not None:
        try:
            re.compile(per_step)
        except re.error as error:
            raise _validation.OptionError(
                "per_step", f"a regular expression ({error})", per_step
            ) from None
    step_size_lr_scale = _validation.positive_number("step_size_lr_scale", step_size_lr_scale)
    has_aux = _validation.boolean("has_aux", has_aux)
    return _MAMLPlusPlus(
        loss_fn,
        n,
        initial_lr,
        learn_step_sizes,
        anneal_steps,
        first_order_steps,
        per_step,
        step_size_lr_scale,
        has_aux,
    ).learner()


@dataclasses.dataclass(frozen=True)
class _MAMLPlusPlus:
    """MAML++'s functions over its checked settings (see :func:`maml_plus_plus`)."""

    loss_fn: LossFn
    inner_steps: int
    initial_lr: float
    learn_step_sizes: bool
    anneal_steps: int
    first_order_steps: int
    per_step: str | None
    step_size_lr_scale: float
    has_aux: bool

    def learner(self) -> MetaLearner:
        scaled = None
        if self.learn_step_sizes and self.step_size_lr_scale != 1:
            scaled = ScaledUpdates(
                lambda meta_params: {key: key == "inner_lrs" for key in meta_params},
                self.step_size_lr_scale,
            )
        return MetaLearner(
            init=self.init,
            model_params=self.model_params,
            adapt=self.adapt,
            adapt_trajectory=self.adapt_trajectory,
            task_loss=self.task_loss,
            meta_loss=self.meta_loss,
            meta_grad=self.meta_grad,
            has_aux=self.has_aux,
            uses_meta_step=True,
            scaled_updates=scaled,
        )

    def init(self, params: Params) -> Params:
        n = self.inner_steps
        copied, adapted = eqx.partition(params, per_step_mask(params, self.per_step))
        meta_params = {"params": adapted}
        if self.learn_step_sizes:
            meta_params["inner_lrs"] = jax.tree.map(
                lambda p: jnp.full((n,), self.initial_lr, p.dtype), adapted
            )
        # Without per-step leaves, a tree of Nones: eqx.combine still fills it in.
        meta_params["per_step"] = jax.tree.map(lambda p: jnp.stack([p] * n), copied)
        return meta_params

    def copies_at(self, meta_params: Params, index: Array) -> Params:
        """The per-step leaves of inner step ``index`` (the last step's after more)."""
        last = self.inner_steps - 1
        return jax.tree.map(lambda c: c[jnp.minimum(index, last)], meta_params["per_step"])

    def model_params(self, meta_params: Params) -> Params:
        return eqx.combine(meta_params["params"], self.copies_at(meta_params, jnp.int32(0)))

    def inner_loop(self, meta_params: Params, first_order: bool) -> MetaLearner:
        """The inner loop with these meta-parameters' step sizes and copies: a loop over
        ``(params, index)``, ``index`` the steps taken."""
        inner_loss = loss_value(self.loss_fn, self.has_aux)

        def inner_step(carry: tuple[Params, Array], support: Any) -> tuple[Params, Array]:
            params, index = carry
            adapted = eqx.filter(params, per_step_mask(params, self.per_step), inverse=True)
            copied = self.copies_at(meta_params, index)
            if self.learn_step_sizes:
                step = jnp.minimum(index, self.inner_steps - 1)
                step_sizes = jax.tree.map(lambda lrs: lrs[step], meta_params["inner_lrs"])
            else:
                step_sizes = jax.tree.map(lambda _: self.initial_lr, adapted)

            def adapted_loss(adapted: Params, support: Any) -> Array:
                return inner_loss(eqx.combine(adapted, copied), support)

            adapted = gradient_step(adapted_loss, adapted, support, step_sizes, first_order)
            return eqx.combine(adapted, copied), index + 1

        return inner_loop_learner(
            self.loss_fn,
            inner_step,
            inner_steps=self.inner_steps,
            has_aux=self.has_aux,
            inner_state=lambda _: jnp.zeros((), jnp.int32),
        )

    def adapt(self, meta_params: Params, support: Any, inner_steps: int | None = None) -> Params:
        inner = self.inner_loop(meta_params, False)
        return inner.adapt(self.model_params(meta_params), support, inner_steps)

    def adapt_trajectory(
        self,
        meta_params: Params,
        support: Any,
        inner_steps: int | None = None,
        observe: Callable[[Params], Any] | None = None,
    ) -> Any:
        return self.inner_loop(meta_params, False).adapt_trajectory(
            self.model_params(meta_params), support, inner_steps, observe
        )

    def weighted_loss(
        self, meta_params: Params, task: Task, weights: Array | None, first_order: bool
    ) -> Any:
        """The query losses after steps 1..N, weighted (the last one alone with ``weights``
        ``None``); ``aux`` of the last."""
        loss_fn = self.loss_fn
        start = self.model_params(meta_params)
        inner = self.inner_loop(meta_params, first_order)
        if weights is None:  # the last step's loss alone: no trajectory to keep
            return loss_fn(inner.adapt(start, task.support), task.query)
        losses = inner.adapt_trajectory(
            start, task.support, observe=lambda params: loss_fn(params, task.query)
        )
        loss, aux = losses if self.has_aux else (losses, None)
        # In the loss's dtype: float64 weights (under x64) must not promote a float32 loss.
        weighted = jnp.dot(weights.astype(loss.dtype), loss[1:])
        if not self.has_aux:
            return weighted
        return weighted, jax.tree.map(lambda leaf: leaf[-1], aux)

    def mean_loss(
        self, meta_params: Params, tasks: Task, weights: Array | None, first_order: bool
    ) -> Any:
        per_task = jax.vmap(self.weighted_loss, in_axes=(None, 0, None, None))
        return jax.tree.map(jnp.mean, per_task(meta_params, tasks, weights, first_order))

    def meta_loss(self, meta_params: Params, tasks: Task) -> Any:
        return self.mean_loss(meta_params, tasks, None, False)

    def task_loss(self, meta_params: Params, task: Task) -> Any:
        return self.weighted_loss(meta_params, task, None, False)

    def meta_grad(self, meta_params: Params, tasks: Task, meta_step: Array) -> tuple[Any, Params]:
        """The objective of ``meta_step`` and its gradient: first order for the first
        ``first_order_steps`` meta-steps, the multi-step loss for the first ``anneal_steps``."""
        value_and_grad = jax.value_and_grad(self.mean_loss, has_aux=self.has_aux)
        anneal_steps = self.anneal_steps

        def objective(first_order: bool, multi_step: bool) -> Callable[[Params], Any]:
            weights = (
                step_loss_weights(meta_step, self.inner_steps, anneal_steps) if multi_step else None
            )
            return lambda meta_params: value_and_grad(meta_params, tasks, weights, first_order)

        def with_order(first_order: bool) -> Callable[[Params], Any]:
            # Once annealed, the last step's loss alone: no query loss after every step.
            if anneal_steps == 0:
                return objective(first_order, False)
            return lambda meta_params: lax.cond(
                meta_step < anneal_steps,
                objective(first_order, True),
                objective(first_order, False),
                meta_params,
            )

        if self.first_order_steps == 0:
            return with_order(False)(meta_params)
        return lax.cond(
            meta_step < self.first_order_steps, with_order(True), with_order(False), meta_params
        )


@registry.register_algorithm
@dataclasses.dataclass(frozen=True)
class MAMLPlusPlus(Algorithm):
    """MAML++'s hyper-parameters (``--algorithm maml++``); see :func:`maml_plus_plus`."""

    name: ClassVar[str] = "maml++"
    description: ClassVar[str] = (
        "MAML++ (Antoniou et al., 2019): learned per-layer per-step step sizes, multi-step "
        "loss, first order then second order, per-step batch-norm parameters"
    )

    initial_lr: float = options.number(
        0.01,
        "the step size every layer starts with at every step (fixed with --no-learn-step-sizes)",
        metavar="LR",
    )
    inner_steps: int = options.integer(5, "inner-loop gradient steps", minimum=1, metavar="S")
    test_steps: int | None = test_steps_option()
    learn_step_sizes: bool = options.flag(
        True, "meta-learn one step size per layer (parameter array) and per inner step"
    )
    anneal_steps: int = options.integer(
        0,
        "multi-step loss: the meta-steps over which the weights of the query losses after "
        "each inner step anneal to the last step's alone; 0: the last step's alone",
        minimum=0,
        metavar="N",
    )
    first_order_steps: int = options.integer(
        0, "meta-steps of first order before second order", minimum=0, metavar="N"
    )
    per_step: str | None = options.text(
        BATCH_NORM,
        "a regular expression over the parameters' paths: those with their own meta-learned "
        "copy for each inner step, which the inner loop does not adapt (batch norm's: "
        ".scales[i] and .offsets[i] in the built-in Conv4; none in a model without them); "
        "none: no per-step copies",
        metavar="REGEX",
        optional=True,
    )
    step_size_lr_scale: float = options.number(
        1.0,
        "the learned step sizes' outer learning rate, as a multiple of the meta learning rate",
        metavar="SCALE",
    )

    def make(
        self, loss_fn: LossFn, *, has_aux: bool = False, head: LinearHead | None = None
    ) -> MetaLearner:
        return maml_plus_plus(
            loss_fn,
            initial_lr=self.initial_lr,
            inner_steps=self.inner_steps,
            learn_step_sizes=self.learn_step_sizes,
            anneal_steps=self.anneal_steps,
            first_order_steps=self.first_order_steps,
            per_step=self.per_step,
            step_size_lr_scale=self.step_size_lr_scale,
            has_aux=has_aux,
        )

    @property
    def label(self) -> str:
        return "MAML++"

    def describe(self) -> str:
        parts = [inner_steps_text(self.inner_steps)]
        if self.anneal_steps:
            parts.append(f"multi-step loss for {self.anneal_steps} meta-steps")
        if self.first_order_steps:
            parts.append(f"first order for {self.first_order_steps} meta-steps")
        return ", ".join(parts)

    def adaptation_text(self) -> str:
        return "learned step sizes" if self.learn_step_sizes else f"inner lr {self.initial_lr:g}"

    def adaptation_note(self, adapt_steps: int) -> str:
        if adapt_steps <= self.inner_steps:
            return ""
        learned = [
            what
            for what, on in (
                ("step sizes", self.learn_step_sizes),
                ("per-step parameters", self.per_step not in (None, "none")),
            )
            if on
        ]
        if not learned:
            return ""
        return (
            f"the {' and '.join(learned)} were learned for {inner_steps_text(self.inner_steps)}; "
            "later steps reuse the last step's and may diverge"
        )
