"""Few-shot evaluation of finished runs, the way papers report it, for any task family.

Every run of a task family is evaluated on the same held-out tasks: they come from an
evaluation seed's test stream, which training never draws from, so runs trained with other
seeds and other algorithms are compared task for task. For each K, a task adapts on its K-shot
support set for 0 to ``adapt_steps`` inner steps, and the family's metrics are measured on its
query set; the report gives, for each metric and step, the mean and 95% confidence interval
over tasks, the median, and how many tasks diverged.
"""

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from metajax import memory, options, registry, reports, run_dir
from metajax._validation import MAX_SEED, OptionError
from metajax.algorithms.algorithm import Algorithm
from metajax.algorithms.meta_learner import Params
from metajax.config import TEST_STREAM, VALIDATION_STREAM, stream_key
from metajax.evaluation import adaptation_curve, summarise
from metajax.loaded_run import LoadedRun, family_loss, load
from metajax.options import Options, declared
from metajax.tasks.family import TaskFamily
from metajax.tasks.task import Task

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
    adapt_steps: int = options.integer(
        10,
        "adaptation steps; results are reported after 0 to S of them",
        minimum=0,
        metavar="S",
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tune_inner_lr and self.inner_lr is not None:
            raise OptionError("inner_lr", "left unset when tuning it", self.inner_lr)
        if self.tune_inner_lr and self.adapt_steps == 0:
            raise OptionError("adapt_steps", "at least 1 when tuning the step size", 0)

    def shots_for(self, family: TaskFamily) -> tuple[int, ...]:
        """The values of K to evaluate a run of ``family`` with: these settings', or the
        family's."""
        return self.shots or family.eval_shots

    def tunes(self, algorithm: Algorithm) -> bool:
        """Whether a run of ``algorithm`` gets its step size tuned (with 0 steps, none
        matters)."""
        if self.tune_inner_lr is not None:
            return self.tune_inner_lr
        return algorithm.tunes_inner_lr and self.inner_lr is None and self.adapt_steps > 0


class EvaluationError(ValueError):
    """An evaluation that cannot be done as asked, e.g. with a baseline on other tasks."""


def family_defaults() -> dict[str, dict[str, str]]:
    """The evaluation settings whose defaults each registered family chooses, with each family's
    default: ``{"shots": {"sinusoid": "5 10 20", ...}, "query_shots": {...}}``."""
    defaults: dict[str, dict[str, str]] = {"shots": {}, "query_shots": {}}
    for name, family_type in registry.families().items():
        family = next(iter(family_type.presets().values())).task
        defaults["shots"][name] = " ".join(map(str, family.eval_shots))
        defaults["query_shots"][name] = str(family.eval_query_shots())
    return defaults


def query_size(family: TaskFamily, settings: EvalSettings, shots: int) -> int:
    """The number of query examples of the K-shot tasks."""
    if settings.query_shots is None:
        return family.eval_query_shots()
    return shots if settings.query_shots == "shots" else int(settings.query_shots)


class _Tasks(NamedTuple):
    """Which held-out tasks to draw: ``family.eval_tasks(key, *sizes)``, or
    ``family.validation_tasks`` for the validation stream."""

    key: jax.Array
    num_tasks: int
    shots: int
    query_shots: int
    stream: int

    def draw(self, family: TaskFamily) -> Task:
        sizes = (self.key, self.num_tasks, self.shots, self.query_shots)
        if self.stream == VALIDATION_STREAM:
            return family.validation_tasks(*sizes)
        return family.eval_tasks(*sizes)


def _which_tasks(
    family: TaskFamily, settings: EvalSettings, shots: int, stream: int = TEST_STREAM
) -> _Tasks:
    num_tasks = settings.num_tasks if stream == TEST_STREAM else settings.validation_tasks
    key = stream_key(settings.eval_seed, stream)
    return _Tasks(key, num_tasks, shots, query_size(family, settings, shots), stream)


def evaluation_tasks(
    family: TaskFamily, settings: EvalSettings, shots: int, stream: int = TEST_STREAM
) -> Task:
    """The held-out K-shot tasks, from the evaluation seed's ``stream`` (test or validation)."""
    return _which_tasks(family, settings, shots, stream).draw(family)


@eqx.filter_jit
def _curves(
    family: TaskFamily,
    algorithm: Algorithm,
    meta_params: Params,
    static: Any,
    which: _Tasks,
    adapt_steps: int,
    inner_lrs: jax.Array | None,
) -> dict[str, jax.Array]:
    """Every metric of every task after 0..adapt_steps steps, for each step size in
    ``inner_lrs`` (or the algorithm's own if ``None``): leaves of shape [G, N, S + 1].

    The tasks are drawn inside, so that memory is checked before they take any. Compiled once
    per run config and task sizes: the meta-parameters and the key are traced."""
    tasks = which.draw(family)
    loss_fn = family_loss(family, static)
    loss_name = family.loss_metric()

    def metrics(params: Params, batch: Any) -> dict[str, jax.Array]:
        loss, aux = loss_fn(params, batch)
        return {loss_name: loss, **aux}

    def with_step_size(inner_lr: jax.Array | None) -> dict[str, jax.Array]:
        changed = algorithm if inner_lr is None else options.replace(algorithm, inner_lr=inner_lr)
        learner = changed.make(loss_fn, has_aux=True)
        return adaptation_curve(
            learner, metrics, meta_params, tasks, adapt_steps, batch_size=family.eval_batch_size
        )

    if inner_lrs is None:
        return jax.tree.map(lambda leaf: leaf[None], with_step_size(None))
    return jax.vmap(with_step_size)(inner_lrs)


def _run_curves(run: LoadedRun, which: _Tasks, adapt_steps: int, inner_lrs: Any) -> dict:
    args = (
        run.config.task,
        run.config.algorithm,
        run.meta_params,
        run.static,
        which,
        adapt_steps,
        inner_lrs,
    )
    memory.compile_checked(_curves, *args, what="evaluation")
    with memory.converted("evaluation"):
        return jax.tree.map(lambda leaf: np.asarray(leaf, dtype=np.float64), _curves(*args))


def evaluate_run(run: LoadedRun, settings: EvalSettings = EvalSettings()) -> list[dict[str, Any]]:
    """Evaluates a loaded run; one result per K (see :func:`evaluate`).

    Raises:
      EvaluationError: if the step size cannot be overridden or tuned, or every step size of
        the grid diverges on the validation tasks.
    """
    family, algorithm = run.config.task, run.config.algorithm
    has_step_size = "inner_lr" in declared(algorithm)
    tune = settings.tunes(algorithm)
    if (tune or settings.inner_lr is not None) and not has_step_size:
        raise EvaluationError(
            f"algorithm '{algorithm.name}' has no inner_lr to set or tune; evaluate it with its "
            "own adaptation"
        )
    primary, loss_name = family.primary(), family.loss_metric()
    higher = family.metrics[primary].higher_is_better
    results = []
    for shots in settings.shots_for(family):
        result: dict[str, Any] = {
            "shots": shots,
            "query_shots": query_size(family, settings, shots),
        }
        if tune:
            validation = _which_tasks(family, settings, shots, VALIDATION_STREAM)
            curves = _step_size_curves(run, validation, settings.adapt_steps, STEP_SIZE_GRID)
            scores = curves[primary][..., 1:].mean(axis=(1, 2))
            # A step size whose loss diverges on any validation task loses.
            diverged = ~np.isfinite(curves[loss_name][..., 1:]).all(axis=(1, 2))
            scores = np.where(diverged, np.nan, scores)
            if not np.isfinite(scores).any():
                raise EvaluationError(
                    f"every step size in {list(STEP_SIZE_GRID)} diverges on the {shots}-shot "
                    "validation tasks; give one yourself (inner_lr; --inner-lr on the command "
                    "line)"
                )
            worst = -np.inf if higher else np.inf
            ranked = np.where(np.isfinite(scores), scores, worst)
            best = int(np.argmax(ranked) if higher else np.argmin(ranked))
            inner_lr, source = STEP_SIZE_GRID[best], "validation"
            result["validation"] = {
                "grid": list(STEP_SIZE_GRID),
                primary: [float(v) if np.isfinite(v) else None for v in scores],
            }
        elif settings.inner_lr is not None:
            inner_lr, source = settings.inner_lr, "option"
        else:
            inner_lr, source = getattr(algorithm, "inner_lr", 0.0), "run"
        test = _which_tasks(family, settings, shots)
        step_sizes = (inner_lr,) if has_step_size else None
        (curves,) = _split_step_sizes(
            _step_size_curves(run, test, settings.adapt_steps, step_sizes)
        )
        if has_step_size:
            result.update(inner_lr=inner_lr, inner_lr_from=source)
        for name, metric in family.metrics.items():
            summary = summarise(curves[name], higher_is_better=metric.higher_is_better)
            for statistic in ("mean", "ci95", "median"):
                result[f"{name}_{statistic}"] = summary[statistic]
            if name == loss_name:  # a task diverged when its loss is not finite
                result["non_finite"] = summary["non_finite"]
        results.append(result)
    return results


def _step_size_curves(
    run: LoadedRun, which: _Tasks, adapt_steps: int, step_sizes: tuple[float, ...] | None
) -> dict[str, np.ndarray]:
    """:func:`_curves` with each step size (the algorithm's own if ``None``): in one vmapped
    call if the algorithm's ``inner_lr`` may be traced, else one call for each."""
    if step_sizes is None:
        return _run_curves(run, which, adapt_steps, None)
    if getattr(declared(run.config.algorithm)["inner_lr"], "traceable", False):
        return _run_curves(run, which, adapt_steps, jnp.asarray(step_sizes))
    each = [
        _run_curves(run._replace(config=run.config.replace(inner_lr=lr)), which, adapt_steps, None)
        for lr in step_sizes
    ]
    return {name: np.concatenate([curves[name] for curves in each]) for name in each[0]}


def _split_step_sizes(curves: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    count = len(next(iter(curves.values())))
    return [{name: values[g] for name, values in curves.items()} for g in range(count)]


def _report_of(run: LoadedRun, settings: EvalSettings) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        results = evaluate_run(run, settings)
    except memory.OutOfMemoryError as error:
        family = run.config.task
        shots = settings.shots_for(family)
        sizes = {
            "num_tasks": settings.num_tasks,
            "adapt_steps": settings.adapt_steps,
            "shots": shots,
            "query_shots": sorted({query_size(family, settings, k) for k in shots}),
        }
        if settings.tunes(run.config.algorithm):
            sizes["validation_tasks"] = settings.validation_tasks
        raise error.with_sizes(sizes) from None
    return {
        "run": str(run.path),
        "family": run.config.family,
        "algorithm": run.config.algorithm.name,
        "label": run.config.algorithm.label,
        "note": run.config.algorithm.adaptation_note(settings.adapt_steps),
        "results": results,
        "seconds": round(time.perf_counter() - start, 3),
    }


def evaluate(
    path: str | Path,
    settings: EvalSettings = EvalSettings(),
    *,
    baseline: str | Path | None = None,
    out: str | Path | None = None,
    plots: bool = True,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluates a finished run, and optionally a baseline run on the same tasks.

    Writes ``eval.json`` and, with ``plots``, ``eval.png`` (the primary metric against
    adaptation steps, one line per K with its 95% confidence band, the baseline dashed) into
    ``out``, by default the run directory.

    Args:
      path: the run directory.
      settings: see :class:`EvalSettings`.
      baseline: another run directory to evaluate alongside, e.g. a pretrained run.
      out: where to write the files (created if missing); by default ``path``.
      plots: draw ``eval.png``.
      write: write the files at all.

    Returns:
      What ``eval.json`` holds: ``settings``; for the run, ``run``, ``family``, ``algorithm``,
      ``label``, ``seconds`` and ``results``, one per K: ``shots``, ``query_shots``, and, for
      an algorithm with a step size, ``inner_lr`` and ``inner_lr_from`` (``run``, ``option`` or
      ``validation``); for each of the family's metrics (``mse`` for sinusoids) lists over
      0..adapt_steps steps: ``<metric>_mean`` and ``<metric>_ci95`` over all tasks (``None``
      where a task's value is not finite: adaptation diverged), ``<metric>_median`` (a diverged
      task counting as the worst), and ``non_finite``, the number of tasks whose loss is not
      finite; when tuned, ``validation`` (the grid and its mean validation score, ``None``
      where it diverged). And ``baseline``, the same for the baseline run, if any.

    Raises:
      RunDirError: if a directory is not a finished run.
      EvaluationError: if the baseline comes from other tasks, or tuning fails.
      OutOfMemoryError: if the evaluation needs more memory than the device has.
    """
    run = load(path)
    baseline_run = None
    if baseline is not None:  # loaded and checked before any work is done
        baseline_run = load(baseline)
        ours, theirs = run.config.task, baseline_run.config.task
        if (ours.name, ours.task_distribution()) != (theirs.name, theirs.task_distribution()):
            raise EvaluationError(
                f"the baseline '{baseline}' was trained on other tasks ({theirs.name}: "
                f"{theirs.task_distribution()}) than '{path}' ({ours.name}: "
                f"{ours.task_distribution()}); both must come from one task family to be "
                "evaluated on the same tasks"
            )
    shots = settings.shots_for(run.config.task)
    report = {
        "settings": {**settings.to_json(), "shots": list(shots)},
        **_report_of(run, settings),
    }
    if baseline_run is not None:
        report["baseline"] = _report_of(baseline_run, settings)
    if write:
        destination = Path(path) if out is None else Path(out)
        destination.mkdir(parents=True, exist_ok=True)
        run_dir.write_json(destination / run_dir.EVAL, report)
        if plots:
            reports.plot(destination / run_dir.EVAL_PLOT, report, run.config.task, settings)
    return report
