"""The unit the registry knows a task family by: its settings and what it provides."""

import abc
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol

import equinox as eqx
from jax import Array

from metajax.config.algorithm import Algorithm
from metajax.core.linear_head import LinearHead
from metajax.core.meta_learner import LossFn, MetaLearner, Params
from metajax.core.task import Task
from metajax.options import Options


class Metric(NamedTuple):
    """How a family's metric is shown and compared.

    Attributes:
      label: its name in tables and figures, e.g. ``"accuracy"``.
      higher_is_better: whether larger values are better (accuracy) or worse (a loss).
    """

    label: str
    higher_is_better: bool = False


class TrainedRun(Protocol):
    """What a family's figure (:meth:`TaskFamily.plot_example`) is given of a trained run: a
    :class:`metajax.LoadedRun`, as :func:`metajax.load` reads it."""

    @property
    def learner(self) -> MetaLearner:
        """The algorithm, built as in training."""

    @property
    def meta_params(self) -> Params:
        """The meta-trained meta-parameters."""

    @property
    def static(self) -> Any:
        """The part of the model that is not parameters."""

    @property
    def algorithm(self) -> Algorithm:
        """The algorithm's hyper-parameters."""

    def model(self, params: Params | None = None) -> Any:
        """The model with ``params`` (by default the unadapted ones)."""

    def adapt(self, support: Any, inner_steps: int | None = None) -> Params:
        """The model parameters adapted to one task's ``support`` set."""


class TaskFamily(Options, abc.ABC):
    """A family of tasks, as a frozen dataclass of its settings with what metajax needs.

    A new task family is one module: a subclass of this class, decorated with
    ``@dataclasses.dataclass(frozen=True)`` and :func:`metajax.register_family`, whose fields
    (declared with :mod:`metajax.options`) are the family's settings (the task distribution,
    the number of support and query examples, the model's sizes). They become the keys of the
    ``task`` section of a run's ``config.json`` and the flags of ``metajax train NAME``. The
    run machinery, the evaluation harness and the command line do the rest.

    Class attributes:
      name: the name in configs and on the command line (``metajax train NAME``).
      description: a paragraph for ``metajax train NAME --help``.
      metrics: the family's metrics by name, in the order tables show them. The first is the
        loss that :meth:`loss` returns, the others are the entries of its ``aux`` dict.
      primary_metric: the metric that evaluation reports first and tunes step sizes by
        (``None``: the first).
      eval_shots: the values of K that ``metajax eval`` evaluates unless told otherwise.
      steps_per_draw: how many meta-steps' task batches the training loop draws at once:
        ``None`` draws those of a whole compiled call together (fastest for small tasks), 1
        draws each step's inside the loop (least memory, for large tasks such as images).
      eval_batch_size: how many held-out tasks evaluation adapts at once (``None``: all);
        bounds evaluation's memory for large tasks.
      renamed_options: settings renamed since an older config format, old name to new (see
        :class:`~metajax.options.Options`).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    metrics: ClassVar[Mapping[str, Metric]]
    primary_metric: ClassVar[str | None] = None
    eval_shots: ClassVar[tuple[int, ...]]
    steps_per_draw: ClassVar[int | None] = None
    eval_batch_size: ClassVar[int | None] = None

    @classmethod
    def loss_metric(cls) -> str:
        """The name of the metric that is the loss: the first of :attr:`metrics`."""
        return next(iter(cls.metrics))

    @classmethod
    def primary(cls) -> str:
        """The name of the primary metric."""
        return cls.primary_metric or cls.loss_metric()

    @classmethod
    @abc.abstractmethod
    def presets(cls) -> Mapping[str, Any]:
        """Complete run configs (:class:`metajax.RunConfig`) by name; the first is the default
        of ``metajax train NAME``. Read them with :func:`metajax.presets`, which checks them."""

    def prepare(self) -> dict[str, Any] | None:
        """Loads and checks what the family's tasks need (data, say) before a run writes
        anything; returns what the run directory's ``data.json`` should record of it (``None``:
        nothing to record). Raises an error that says what to fix."""
        return None

    @abc.abstractmethod
    def build_model(self, key: Array) -> Any:
        """The model meta-training starts from: any pytree, e.g. an Equinox module. Its
        floating-point arrays are the parameters; the rest is kept as it is."""

    @abc.abstractmethod
    def loss(self, model: Any, batch: Any) -> tuple[Array, dict[str, Array]]:
        """``(loss, aux)`` of ``model`` on one task's ``batch`` (its support or query set):
        the scalar that training minimises, and the other metrics of :attr:`metrics` from
        the same forward pass."""

    def linear_head(self) -> LinearHead | None:
        """For a classifier whose model ends in a linear layer: how the model (not yet
        partitioned into parameters) splits into an embedding and that layer, for metric-based
        algorithms such as ``protonet``; ``None`` (the default) for a model without one. Its
        tasks' support and query sets must then be ``(inputs, integer labels)``."""
        return None

    @abc.abstractmethod
    def sample_tasks(self, key: Array, num_tasks: int) -> Task:
        """A batch of ``num_tasks`` training tasks; pure and jit-able."""

    def task_sampler(self, num_tasks: int) -> Callable[[Array], Task]:
        """``sampler(key) -> Task``, the training tasks of one meta-step: by default
        :meth:`sample_tasks`. A family whose tasks are drawn from data returns a pytree (an
        ``equinox.Module``) holding the data's arrays, which meta-training then passes to its
        compiled loop as arguments rather than compiling them in as constants."""
        return functools.partial(self.sample_tasks, num_tasks=num_tasks)

    @abc.abstractmethod
    def eval_tasks(self, key: Array, num_tasks: int, shots: int, query_shots: int) -> Task:
        """Held-out tasks for ``shots``-shot evaluation, with ``query_shots`` query examples
        (per class, for classification). The tasks must not depend on ``shots`` except for
        their support sets, so that every K is evaluated on the same tasks."""

    def validation_tasks(self, key: Array, num_tasks: int, shots: int, query_shots: int) -> Task:
        """Tasks for choosing settings (a step size) and for scoring training as it goes, like
        :meth:`eval_tasks`; by default drawn the same way (from another key). A family with a
        split of validation classes draws them from it."""
        return self.eval_tasks(key, num_tasks, shots, query_shots)

    def validation_sizes(self) -> tuple[int, int]:
        """``(shots, query_shots)`` of the validation tasks that score training as it goes
        (``validation_tasks`` in :class:`~metajax.TrainSettings`): by default the first of
        :attr:`eval_shots` and :meth:`eval_query_shots`; a family with a ``shots`` setting
        gives the training tasks' sizes."""
        return self.eval_shots[0], self.eval_query_shots()

    @abc.abstractmethod
    def eval_query_shots(self) -> int:
        """The number of query examples evaluation uses unless told otherwise."""

    @abc.abstractmethod
    def task_distribution(self) -> Any:
        """What decides which tasks there are (not their sizes); runs whose distributions are
        equal are evaluated on the same held-out tasks and may be compared."""

    def test_overlap_record(self) -> dict[str, Any] | None:
        """What the test tasks share with the training data, where the run was told to keep
        it (the image families' ``test_overlap="keep"``), as ``eval.json`` records it;
        ``None``: nothing shared."""
        return None

    def describe(self) -> str:
        """A few words on the settings that shape a task, e.g. ``"K=20"``, for titles."""
        return ""

    @abc.abstractmethod
    def plot_example(self, path: Path, run: TrainedRun, adapt_steps: int, key: Array) -> None:
        """Draws the family's example figure (``adaptation.png``): the trained ``run`` adapting
        to one held-out task drawn with ``key``, after 0 to ``adapt_steps`` inner steps."""

    def prepare_example(self, run: TrainedRun, adapt_steps: int, key: Array) -> None:
        """Compiles what :meth:`plot_example` will compute, for a ``run`` whose parameters have
        the trained ones' shapes (training calls it with the initial ones, on a thread of its
        own, so that the figure's compilation overlaps training's); by default nothing."""

    @classmethod
    def upgrade_config(cls, values: dict[str, Any], config_format: int) -> dict[str, Any]:
        """A config of an older format as the current format's dict (see
        :meth:`metajax.RunConfig.from_dict`).

        Raises:
          ValueError: if the family had no configs in that format.
        """
        raise ValueError(f"config format {config_format} has no '{cls.name}' configs")


def family_loss(family: TaskFamily, static: Any) -> LossFn:
    """``loss_fn(params, batch) -> (loss, aux)``: the family's loss of the model that ``params``
    and ``static`` (the non-array part of the model) make."""

    def loss_fn(params: Params, batch: Any) -> Any:
        return family.loss(eqx.combine(params, static), batch)

    return loss_fn


def family_head(family: TaskFamily, static: Any) -> LinearHead | None:
    """The family's :meth:`~TaskFamily.linear_head` over the parameters that, with ``static``,
    make its model (``None`` if it has none)."""
    head = family.linear_head()
    if head is None:
        return None

    def features(params: Params, inputs: Any) -> Array:
        return head.features(eqx.combine(params, static), inputs)

    def replace(params: Params, weight: Array, bias: Array) -> Params:
        model = head.replace(eqx.combine(params, static), weight, bias)
        return eqx.filter(model, eqx.is_inexact_array)

    return LinearHead(features, replace, head.classes)


def family_learner(family: TaskFamily, algorithm: Algorithm, static: Any) -> MetaLearner:
    """``algorithm``'s learner on the family's loss (with its metrics as ``aux``) and head."""
    return algorithm.make(
        family_loss(family, static), has_aux=True, head=family_head(family, static)
    )
