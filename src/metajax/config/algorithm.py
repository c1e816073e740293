"""The unit the registry knows an algorithm by: its hyper-parameters and how to build it."""

import abc
from typing import ClassVar

from metajax.core.meta_learner import LossFn, MetaLearner
from metajax.options import Options


def inner_steps_text(inner_steps: int) -> str:
    """``"1 inner step"``, ``"5 inner steps"``: how algorithms describe their inner loop."""
    return f"{inner_steps} inner step{'s' * (inner_steps != 1)}"


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
    def make(self, loss_fn: LossFn, *, has_aux: bool = False) -> MetaLearner:
        """The learner with these hyper-parameters on ``loss_fn``."""

    @property
    def label(self) -> str:
        """The algorithm's name in figures and tables, e.g. ``"first-order MAML"``."""
        return self.name

    def describe(self) -> str:
        """A few words on the settings that shape training, e.g. ``"1 inner step"``."""
        return ""

    def adaptation_text(self) -> str:
        """A few words on how a model adapts at test time, e.g. ``"inner lr 0.1"``."""
        return ""

    def adaptation_note(self, adapt_steps: int) -> str:
        """A caveat for evaluating with ``adapt_steps`` steps, printed under the results
        (step sizes learned for fewer steps, say); empty for none."""
        return ""
