"""The settings of an evaluation (the options of ``metajax eval``) and what they decide: which
values of K, how many query examples, and whether a step size is tuned."""

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

from metajax import options
from metajax._validation import MAX_SEED, OptionError
from metajax.config import registry
from metajax.config.algorithm import Algorithm
from metajax.config.family import TaskFamily
from metajax.config.run_config import presets
from metajax.data.overlap import POLICIES as OVERLAP_POLICIES
from metajax.options import Options

STEP_SIZE_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
"""Adaptation step sizes tried on validation tasks when a step size is tuned (the MAML paper's
pretrained baseline used 0.01 and 0.02)."""


@dataclasses.dataclass(frozen=True)
class EvalSettings(Options):
    """How to evaluate (the options of ``metajax eval``)."""

    renamed_options: ClassVar[Mapping[str, str]] = {
        "steps": "adapt_steps",
        "query_points": "query_shots",
    }

    num_tasks: int = options.integer(600, "held-out test tasks", minimum=2)
    shots: tuple[int, ...] | None = options.sizes(
        None,
        "support examples to adapt on (per class, for classification), one or more values of K",
        distinct=True,
        metavar="K",
        optional=True,
        default_text="the task family's",
    )
    adapt_steps: int | None = options.integer(
        None,
        "adaptation steps; results are reported after 0 to S of them",
        minimum=0,
        metavar="S",
        optional=True,
        default_text=(
            "the run's test-time steps: its algorithm's test_steps, else its inner_steps "
            "(none for protonet)"
        ),
    )
    inner_lr: float | None = options.number(
        None,
        "adaptation step size",
        metavar="LR",
        optional=True,
        default_text=(
            "the run's; for a baseline such as pretrain, the best of "
            + ", ".join(f"{lr:g}" for lr in STEP_SIZE_GRID)
            + " on validation tasks"
        ),
    )
    tune_inner_lr: bool | None = options.flag(
        None,
        "choose the step size on validation tasks, one for each K",
        optional=True,
        default_text="for baselines only",
    )
    query_shots: int | str | None = options.count_or_word(
        None,
        "query examples per task (per class, for classification), or shots for as many as "
        "the support set has, as in the MAML paper's code",
        word="shots",
        optional=True,
        default_text="the task family's",
    )
    eval_seed: int = options.integer(
        0, "seed of the test and validation tasks", minimum=0, maximum=MAX_SEED, metavar="SEED"
    )
    validation_tasks: int = options.integer(
        200, "validation tasks for choosing a step size", minimum=2
    )

    test_data: str | None = options.text(
        None,
        "image runs: test on the classes of this image set (a folder or zip of one folder per "
        "class) instead of the run's test split",
        metavar="PATH",
        optional=True,
        default_text="the run's test split",
    )
    test_overlap: str | None = options.choice(
        None,
        OVERLAP_POLICIES,
        "image runs: what to do with test classes that are training classes, by name or by "
        "any image in any rotation: refuse, keep (the report says how many), or drop them",
        optional=True,
        default_text="the run's, refuse unless it was trained otherwise",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tune_inner_lr and self.inner_lr is not None:
            raise OptionError("inner_lr", "left unset when tuning it", self.inner_lr)
        if self.tune_inner_lr and self.adapt_steps == 0:
            raise OptionError("adapt_steps", "at least 1 when tuning the step size", 0)

    def steps_for(self, algorithm: Algorithm) -> int:
        """The adaptation steps to evaluate a run of ``algorithm`` with: these settings', or
        the steps the algorithm is meant to be tested with (:meth:`Algorithm.test_adapt_steps`).
        """
        return algorithm.test_adapt_steps() if self.adapt_steps is None else self.adapt_steps

    def shots_for(self, family: TaskFamily) -> tuple[int, ...]:
        """The values of K to evaluate a run of ``family`` with: these settings', or the
        family's."""
        return self.shots or family.eval_shots

    def tunes(self, algorithm: Algorithm) -> bool:
        """Whether a run of ``algorithm`` gets its step size tuned (with 0 steps, none
        matters)."""
        if self.tune_inner_lr is not None:
            return self.tune_inner_lr
        return algorithm.tunes_inner_lr and self.inner_lr is None and self.steps_for(algorithm) > 0


class EvaluationError(ValueError):
    """An evaluation that cannot be done as asked, e.g. with a baseline on other tasks."""


def family_defaults() -> dict[str, dict[str, str]]:
    """The evaluation settings whose defaults each registered family chooses, with each family's
    default: ``{"shots": {"sinusoid": "5 10 20", ...}, "query_shots": {...}}``."""
    defaults: dict[str, dict[str, str]] = {"shots": {}, "query_shots": {}}
    for name, family_type in registry.families().items():
        family = next(iter(presets(family_type).values())).task
        defaults["shots"][name] = " ".join(map(str, family.eval_shots))
        defaults["query_shots"][name] = str(family.eval_query_shots())
    return defaults


def query_size(family: TaskFamily, settings: EvalSettings, shots: int) -> int:
    """The number of query examples of the K-shot tasks."""
    if settings.query_shots is None:
        return family.eval_query_shots()
    return shots if settings.query_shots == "shots" else int(settings.query_shots)
