"""ANIL, "almost no inner loop" (Raghu et al., 2020): MAML whose inner loop adapts only a chosen
part of the parameters, the head by default."""

import dataclasses
import re
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax

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
    gradient_step,
    loss_value,
)

HEAD = "head"
"""The default ``adapted`` pattern: parameters whose path names a head (``Conv4.head_weight``,
``params["head"]``), or, in a model without one, the last layer (see :func:`adapted_mask`)."""


def adapted_mask(params: Params, adapted: str | Callable[[str], bool]) -> Any:
    """Which leaves of ``params`` the inner loop adapts, as a pytree of bools.

    Args:
      params: the model parameters (any pytree of arrays).
      adapted: a regular expression searched for in each leaf's path (as
        ``jax.tree_util.keystr`` writes it: ``.head_weight``, ``['head']['w']``,
        ``.weights[2]``), or a function from that path to a bool. The default pattern,
        :data:`HEAD`, picks the leaves whose path names ``head``; in a model with no such leaf,
        it picks the last layer instead: of the leaves at the end of a sequence (``weights[i]``,
        ``biases[i]``), those with the largest index, as in metajax's MLP.

    Raises:
      OptionError: if no leaf, or every leaf, is picked.
    """
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]
    if callable(adapted):
        picked = [bool(adapted(path)) for path in paths]
    else:
        picked = [re.search(adapted, path) is not None for path in paths]
        if adapted == HEAD and not any(picked):
            picked = _last_layer(params)
    if not any(picked) or all(picked):
        shown = ", ".join(paths)
        which = "no parameter" if not any(picked) else "every parameter"
        raise _validation.OptionError(
            "adapted",
            f"a pattern that picks some of the parameters ({shown}), not {which}",
            adapted if isinstance(adapted, str) else getattr(adapted, "__name__", adapted),
        )
    return jax.tree.unflatten(jax.tree.structure(params), picked)


def _last_layer(params: Params) -> list[bool]:
    """The leaves that end a sequence with the largest index among such leaves."""
    ends = []
    for path, _ in jax.tree_util.tree_leaves_with_path(params):
        last = path[-1] if path else None
        ends.append(last.idx if isinstance(last, jax.tree_util.SequenceKey) else None)
    indices = [index for index in ends if index is not None]
    return [index is not None and index == max(indices) for index in ends]


@cached_factory
def anil(
    loss_fn: LossFn,
    *,
    inner_lr: Any,
    inner_steps: int = 1,
    first_order: bool = False,
    adapted: str | Callable[[str], bool] = HEAD,
    has_aux: bool = False,
    remat: bool = False,
) -> MetaLearner:
    """ANIL: MAML in which the inner loop adapts only some parameters (the head by default) and
    leaves the others (the body) as they are; the outer loop meta-learns them all, through the
    inner loop as MAML does.

    Args:
      loss_fn: as for :func:`metajax.maml`.
      inner_lr: the inner-loop step size, a number ``> 0`` or a scalar JAX array.
      inner_steps: the default number of inner steps, ``>= 0``.
      first_order: stop gradients through the inner-loop gradients.
      adapted: which parameters adapt: a regular expression over each leaf's path, or a
        function of the path (see :func:`adapted_mask`); the head by default.
      has_aux: ``loss_fn`` returns ``(loss, aux)``.
      remat: recompute the inner loop for the meta-gradient rather than keep it (see
        :func:`metajax.algorithms.inner_loop.rematerialised_inner_loop`).

    Returns:
      A :class:`~metajax.MetaLearner` whose meta-parameters are the model parameters.

    Raises:
      OptionError: if a setting is out of range; when the learner first meets the parameters,
        if ``adapted`` picks none of them or all.
    """
    inner_lr = _validation.step_size("inner_lr", inner_lr)
    first_order = _validation.boolean("first_order", first_order)
    if isinstance(adapted, str):
        try:
            re.compile(adapted)
        except re.error as error:
            raise _validation.OptionError(
                "adapted", f"a regular expression ({error})", adapted
            ) from None
    inner_loss = loss_value(loss_fn, has_aux)

    def inner_step(params: Params, support: Any) -> Params:
        # Only the adapted part is differentiated: the body's inner gradients are never formed.
        head, body = eqx.partition(params, adapted_mask(params, adapted))
        step_sizes = jax.tree.map(lambda _: inner_lr, head)

        def head_loss(head: Params, support: Any) -> Any:
            return inner_loss(eqx.combine(head, body), support)

        return eqx.combine(gradient_step(head_loss, head, support, step_sizes, first_order), body)

    return inner_loop_learner(
        loss_fn, inner_step, inner_steps=inner_steps, has_aux=has_aux, remat=remat
    )


@registry.register_algorithm
@dataclasses.dataclass(frozen=True)
class ANIL(Algorithm):
    """ANIL's hyper-parameters (``--algorithm anil``); see :func:`anil`."""

    name: ClassVar[str] = "anil"
    description: ClassVar[str] = (
        "ANIL (Raghu et al., 2020): MAML whose inner loop adapts only the parameters --adapted "
        "picks (the head)"
    )

    inner_lr: Any = options.number(
        0.01, "inner-loop (adaptation) step size", metavar="LR", traceable=True
    )
    inner_steps: int = options.integer(1, "inner-loop gradient steps", minimum=0, metavar="S")
    test_steps: int | None = test_steps_option()
    first_order: bool = options.flag(False, "no gradients through the inner-loop gradients")
    adapted: str = options.text(
        HEAD,
        "a regular expression over the parameters' paths (.head_weight, .weights[2]): the ones "
        "the inner loop adapts; head: the model's head, or its last layer",
        metavar="REGEX",
    )
    remat: bool = options.flag(
        False,
        "recompute the inner loop for the meta-gradient instead of keeping it: memory that "
        "grows with the square root of --inner-steps, the same numbers, more time",
    )

    def make(
        self, loss_fn: LossFn, *, has_aux: bool = False, head: LinearHead | None = None
    ) -> MetaLearner:
        return anil(
            loss_fn,
            inner_lr=self.inner_lr,
            inner_steps=self.inner_steps,
            first_order=self.first_order,
            adapted=self.adapted,
            has_aux=has_aux,
            remat=self.remat,
        )

    @property
    def label(self) -> str:
        return "first-order ANIL" if self.first_order else "ANIL"

    def describe(self) -> str:
        steps = inner_steps_text(self.inner_steps)
        return steps if self.adapted == HEAD else f"{steps} on {self.adapted}"

    def adaptation_text(self) -> str:
        return f"inner lr {self.inner_lr:g}, {self.adapted} only"
