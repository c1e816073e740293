"""Few-shot evaluation of sinusoid runs, the way papers report it.

Every run is evaluated on the same held-out tasks: they come from an evaluation seed's test
stream, which training never draws from, so a MAML run and a baseline trained with other seeds
are compared task for task. For each K, a task adapts on K support points drawn for that K, for
0 to ``num_steps`` gradient steps, and the error is measured on its query points.
"""

import dataclasses
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from metajax import _validation, run_dir
from metajax.evaluation import adaptation_curve, mean_and_ci95
from metajax.experiments.sinusoid import (
    TEST_STREAM,
    VALIDATION_STREAM,
    SinusoidConfig,
    algorithm_label,
    load,
    make_learner,
    regression_loss,
    stream_key,
)
from metajax.models import MLP
from metajax.tasks.task import Task

EVAL_FILE = run_dir.EVAL
EVAL_PLOT = run_dir.EVAL_PLOT
STEP_SIZE_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
"""Fine-tuning step sizes tried on validation tasks (the paper's baseline used 0.01 and 0.02)."""


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How to evaluate.

    Attributes:
      num_tasks: held-out test tasks.
      shots: the values of K, support points to adapt on.
      num_steps: adaptation steps; the error is reported after 0 to ``num_steps`` of them.
      inner_lr: the adaptation step size; ``None`` takes the run's, or tunes it.
      tune_inner_lr: choose the step size for each K from ``STEP_SIZE_GRID``, by the mean
        validation error over steps 1 to ``num_steps``; ``None`` tunes for pretrained runs only.
      query_points: query points per task, drawn uniformly over the x range; ``"k"`` uses K
        query points for K-shot, as the MAML paper's code did.
      eval_seed: the seed of the test and validation tasks.
      validation_tasks: tasks for tuning the step size.
    """

    num_tasks: int = 600
    shots: tuple[int, ...] = (5, 10, 20)
    num_steps: int = 10
    inner_lr: float | None = None
    tune_inner_lr: bool | None = None
    query_points: int | str = 100
    eval_seed: int = 0
    validation_tasks: int = 200

    def __post_init__(self):
        check = _validation
        values = {
            "num_tasks": check.integer("num_tasks", self.num_tasks, 2),
            "shots": check.sizes("shots", self.shots, 1),
            "num_steps": check.integer("num_steps", self.num_steps, 0),
            "eval_seed": check.integer("eval_seed", self.eval_seed, 0),
            "validation_tasks": check.integer("validation_tasks", self.validation_tasks, 2),
        }
        if len(set(values["shots"])) != len(values["shots"]):
            raise check.OptionError("shots", "distinct values of K", self.shots)
        if self.inner_lr is not None:
            values["inner_lr"] = check.positive_number("inner_lr", self.inner_lr)
        if self.tune_inner_lr is not None:
            values["tune_inner_lr"] = check.boolean("tune_inner_lr", self.tune_inner_lr)
            if values["tune_inner_lr"] and self.inner_lr is not None:
                raise check.OptionError("inner_lr", "left unset when tuning it", self.inner_lr)
            if values["tune_inner_lr"] and values["num_steps"] == 0:
                raise check.OptionError("num_steps", "at least 1 when tuning the step size", 0)
        if self.query_points != "k":
            try:
                values["query_points"] = check.integer("query_points", self.query_points, 1)
            except check.OptionError:
                raise check.OptionError(
                    "query_points", "an integer >= 1 or 'k'", self.query_points
                ) from None
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def tunes(self, config: SinusoidConfig) -> bool:
        """Whether a run with ``config`` gets its step size tuned (with 0 steps, none matters)."""
        if self.tune_inner_lr is not None:
            return self.tune_inner_lr
        return config.algorithm == "pretrain" and self.inner_lr is None and self.num_steps > 0


class EvaluationError(ValueError):
    """An evaluation that cannot be done as asked, e.g. with a baseline on other tasks."""


def evaluation_tasks(
    config: SinusoidConfig, settings: EvalSettings, k: int, stream: int = TEST_STREAM
) -> Task:
    """The held-out tasks for K-shot evaluation, from the evaluation seed's ``stream``.

    The sinusoids and the query points are the same for every K (unless ``query_points`` is
    ``"k"``); the K support points are drawn for that K alone, so a K's tasks do not depend on
    which other values of K are evaluated.
    """
    num_tasks = settings.num_tasks if stream == TEST_STREAM else settings.validation_tasks
    num_query = k if settings.query_points == "k" else settings.query_points
    sinusoid_key, support_key, query_key = jax.random.split(
        stream_key(settings.eval_seed, stream), 3
    )
    family = config.family
    sinusoids = family.sample_sinusoids(sinusoid_key, num_tasks)
    return Task(
        support=family.sample_points(jax.random.fold_in(support_key, k), sinusoids, k),
        query=family.sample_points(jax.random.fold_in(query_key, num_query), sinusoids, num_query),
    )


@eqx.filter_jit
def _curves(config: SinusoidConfig, model: MLP, tasks: Task, num_steps: int, inner_lrs):
    """Query MSE of every task after 0..num_steps steps, for each step size: [G, N, S + 1].

    (Compiled once per config and task shapes: the model's arrays are traced.)
    """
    params, static = eqx.partition(model, eqx.is_inexact_array)
    loss_fn = regression_loss(static)

    def with_step_size(inner_lr):
        learner = make_learner(config, loss_fn, inner_lr=inner_lr)
        return adaptation_curve(learner, loss_fn, params, tasks, num_steps)

    return jax.vmap(with_step_size)(inner_lrs)


def evaluate_model(
    config: SinusoidConfig, model: MLP, settings: EvalSettings = EvalSettings()
) -> list[dict[str, Any]]:
    """Evaluates a model trained with ``config``; one result per K (see :func:`evaluate`).

    Raises:
      EvaluationError: if every step size of the grid diverges on the validation tasks.
    """
    tune = settings.tunes(config)
    results = []
    for k in settings.shots:
        result: dict[str, Any] = {"k_shot": k}
        if tune:
            validation = evaluation_tasks(config, settings, k, VALIDATION_STREAM)
            curves = _curves(
                config, model, validation, settings.num_steps, jnp.asarray(STEP_SIZE_GRID)
            )
            scores = np.asarray(jnp.mean(curves[..., 1:], axis=(1, 2)), dtype=np.float64)
            if not np.isfinite(scores).any():
                raise EvaluationError(
                    f"every step size in {list(STEP_SIZE_GRID)} diverges on the {k}-shot "
                    "validation tasks; give one with --inner-lr (inner_lr in Python)"
                )
            # A step size that diverges on any validation task loses.
            best = np.argmin(np.where(np.isfinite(scores), scores, np.inf))
            inner_lr, source = STEP_SIZE_GRID[int(best)], "validation"
            result["validation"] = {"grid": list(STEP_SIZE_GRID), "mse": _finite_or_none(scores)}
        elif settings.inner_lr is not None:
            inner_lr, source = settings.inner_lr, "option"
        else:
            inner_lr, source = config.inner_lr, "run"
        test = evaluation_tasks(config, settings, k)
        (curve,) = _curves(config, model, test, settings.num_steps, jnp.asarray([inner_lr]))
        mean, ci95 = mean_and_ci95(curve, axis=0)
        result.update(
            inner_lr=inner_lr,
            inner_lr_from=source,
            mse_mean=_finite_or_none(mean),
            mse_ci95=_finite_or_none(ci95),
            # A diverged task counts as infinitely bad.
            mse_median=_finite_or_none(np.median(np.where(np.isnan(curve), np.inf, curve), 0)),
            non_finite=np.sum(~np.isfinite(curve), axis=0).tolist(),
        )
        results.append(result)
    return results


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    """A list for JSON, which has no nan: a value that is not finite becomes None (null)."""
    return [float(value) if np.isfinite(value) else None for value in np.asarray(values)]


def _evaluate_run(path: Path, config: SinusoidConfig, model: MLP, settings) -> dict[str, Any]:
    start = time.perf_counter()
    results = evaluate_model(config, model, settings)
    return {
        "run": str(path),
        "task": "sinusoid",
        "algorithm": config.algorithm,
        "label": algorithm_label(config),
        "results": results,
        "seconds": round(time.perf_counter() - start, 3),
    }


def evaluate(
    path: str | Path,
    settings: EvalSettings = EvalSettings(),
    *,
    baseline: str | Path | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluates a finished run, and optionally a baseline run on the same tasks.

    Writes ``eval.json`` and ``eval.png`` (the query MSE against adaptation steps, one line
    per K with its 95% confidence band, the baseline dashed) into the run directory.

    Args:
      path: the run directory.
      settings: see :class:`EvalSettings`.
      baseline: another run directory to evaluate alongside, e.g. a pretrained run.
      write: write ``eval.json`` and ``eval.png``.

    Returns:
      What ``eval.json`` holds: ``settings``; for the run, ``run``, ``task``, ``algorithm``,
      ``label``, ``seconds`` and ``results``, one per K: ``k_shot``, ``inner_lr``,
      ``inner_lr_from`` (``run``, ``option`` or ``validation``); lists over 0..num_steps
      adaptation steps: ``mse_mean`` and ``mse_ci95`` over all tasks (``None`` where a task's
      error is not finite: adaptation diverged), ``mse_median`` (a diverged task counting as
      infinitely bad), and ``non_finite``, the number of tasks whose error is not finite; when
      tuned, ``validation`` (the grid and its mean validation MSE, ``None`` where it diverged).
      And ``baseline``, the same for the baseline run, if any.

    Raises:
      RunDirError: if a directory is not a finished sinusoid run.
      EvaluationError: if the baseline comes from another task family, or tuning fails.
    """
    path = Path(path)
    config, model = load(path)
    if baseline is not None:  # loaded and checked before any work is done
        baseline = Path(baseline)
        baseline_config, baseline_model = load(baseline)
        if baseline_config.family != config.family:
            raise EvaluationError(
                f"the baseline '{baseline}' was trained on other tasks "
                f"({baseline_config.family}) than '{path}' ({config.family}); both must come "
                "from one task family to be evaluated on the same tasks"
            )
    settings_record = {**dataclasses.asdict(settings), "shots": list(settings.shots)}
    report = {"settings": settings_record, **_evaluate_run(path, config, model, settings)}
    if baseline is not None:
        report["baseline"] = _evaluate_run(baseline, baseline_config, baseline_model, settings)
    if write:
        run_dir.write_json(path / EVAL_FILE, report)
        from metajax import plots  # matplotlib is imported only by the code that draws

        curves = _plot_curves(report)
        plots.plot_curves_with_bands(
            path / EVAL_PLOT,
            curves,
            title=f"{settings.num_tasks} held-out sinusoid tasks: mean and 95% confidence interval",
            xlabel="adaptation steps on the K support points",
            ylabel=f"query MSE ({_query_label(settings)})",
            # Adaptation that diverges on a few tasks must not squash the other curves.
            ymax=2 * max(curve["mean"][0] for curve in curves),
        )
    return report


def _query_label(settings: EvalSettings) -> str:
    if settings.query_points == "k":
        return "K query points"
    return f"{settings.query_points} query points"


def _plot_curves(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's curves solid, the baseline's dashed, one colour per K."""
    curves = []
    for run, dashed in ((report, False), (report.get("baseline"), True)):
        if run is None:
            continue
        for index, result in enumerate(run["results"]):
            label = f"{run['label']}, K={result['k_shot']}"
            if result["inner_lr_from"] != "run":
                label += f", step {result['inner_lr']:g}"
            if max(result["non_finite"]):
                label += f" ({max(result['non_finite'])} tasks diverge)"
            curves.append(
                {
                    "label": label,
                    "mean": np.array(result["mse_mean"], dtype=float),  # None becomes nan
                    "ci95": np.array(result["mse_ci95"], dtype=float),
                    "color": index,
                    "dashed": dashed,
                }
            )
    return curves
