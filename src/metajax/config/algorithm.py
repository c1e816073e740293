"""The unit the registry knows an algorithm by: its hyper-parameters and how to build it."""

import abc
from collections.abc import Callable
from typing import Any, ClassVar

from metajax import options
from metajax.core.linear_head import LinearHead
from metajax.core.meta_learner import LossFn, MetaLearner
from metajax.options import Options


def inner_steps_text(inner_steps: int) -> str:
    """``"1 inner step"``, ``"5 inner steps"``: how algorithms describe their inner loop."""
    return f"{inner_steps} inner step{'s' * (inner_steps != 1)}"


class SettingWarning(UserWarning):
    """A setting known to make a run diverge or not learn, named when the run starts."""


def test_steps_option() -> Any:
    """The ``test_steps`` setting of an algorithm with an inner loop: the adaptation steps it is
    meant to be tested with when they differ from its training's (the MAML paper trains 5-way
    Omniglot with 1 step and tests with 3)."""
    return options.integer(
        None,
        "adaptation steps at test time, metajax eval's default (the paper's test-time steps)",
        minimum=0,
        metavar="S",
        optional=True,
        default_text="--inner-steps",
    )


class Algorithm(Options, abc.ABC):
    """An algorithm's hyper-parameters, as a frozen dataclass of declared settings.

    A new algorithm is one module: a factory that returns a :class:`~metajax.MetaLearner`,
    and a subclass of this class decorated with ``@dataclasses.dataclass(frozen=True)`` and
    :func:`metajax.register_algorithm`, whose fields (declared with :mod:`metajax.options`) are
    its hyper-parameters. They become the keys of the ``hparams`` section of a run's
    ``config.json`` and the algorithm's flags on the command line.

    Class attributes:
      name: the name in configs and on the command line (``--algorithm NAME``).
      description: one line for ``--help``.
      objective: what the meta-loss measures, with ``{loss}`` standing for the task family's
        loss: ``"query {loss}"`` (after adaptation) by default, ``"{loss} on all examples"``
        for the pretrained baseline. It labels the meta-loss figure.
      tunes_inner_lr: ``metajax eval`` chooses the adaptation step size on validation tasks
        unless told otherwise, as for a baseline that was never trained to adapt.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    objective: ClassVar[str] = "query {loss}"
    tunes_inner_lr: ClassVar[bool] = False

    @abc.abstractmethod
    def make(
        self, loss_fn: LossFn, *, has_aux: bool = False, head: LinearHead | None = None
    ) -> MetaLearner:
        """The learner with these hyper-parameters on ``loss_fn``.

        ``head`` is given for a classifier whose model ends in a linear layer (the image
        families'): how its parameters split into an embedding and that layer, which
        metric-based algorithms set from class prototypes. Other algorithms ignore it; one that
        needs it and gets ``None`` raises an :class:`~metajax.OptionError` that says so."""

    @property
    def label(self) -> str:
        """The algorithm's name in figures and tables, e.g. ``"first-order MAML"``."""
        return self.name

    def describe(self) -> str:
        """A few words on the settings that shape training, e.g. ``"1 inner step"``."""
        return ""

    def test_adapt_steps(self) -> int:
        """The adaptation steps ``metajax eval`` takes unless told: the ``test_steps`` setting if
        the algorithm declares it and it is set, else its ``inner_steps``, else none."""
        steps = getattr(self, "test_steps", None)
        return int(getattr(self, "inner_steps", 0) if steps is None else steps)

    def adapts_with_inner_lr(self) -> bool:
        """Whether adaptation takes steps of size ``inner_lr``, which ``metajax eval`` can then
        set or tune: if the algorithm declares one."""
        return "inner_lr" in options.declared(self)

    def setting_warnings(self, support_curvature: Callable[[], float]) -> list[str]:
        """Settings of this algorithm known to make a run diverge or not learn, each a sentence
        that names the setting in backticks (the command line shows its flag there); a run
        warns of them (:class:`SettingWarning`) when it starts.

        ``support_curvature()`` measures, when called, the largest eigenvalue (in magnitude)
        of the support loss's Hessian at the initial parameters on the run's first training
        task, for rules about step sizes. By default: a test with more steps than the
        algorithm learned something for (its :meth:`adaptation_note`)."""
        steps = self.test_adapt_steps()
        note = self.adaptation_note(steps)
        return [f"tested with {steps} steps (`test_steps`), {note}"] if note else []

    def adaptation_text(self) -> str:
        """A few words on how a model adapts at test time, e.g. ``"inner lr 0.1"``."""
        return ""

    def adaptation_note(self, adapt_steps: int) -> str:
        """A caveat for evaluating with ``adapt_steps`` steps, printed under the results
        (step sizes learned for fewer steps, say); empty for none."""
        return ""
