"""Few-shot evaluation of finished runs, the way papers report it, for any task family.

Every run of a task family is evaluated on the same held-out tasks: they come from an
evaluation seed's test stream, which training never draws from, so runs trained with other
seeds and other algorithms are compared task for task. For each K, a task adapts on its K-shot
support set for 0 to ``adapt_steps`` inner steps, and the family's metrics are measured on its
query set; the report gives, for each metric and step, the mean and 95% confidence interval
over tasks, the median, and how many tasks diverged.
"""

import time
from pathlib import Path
from typing import Any

import numpy as np

from metajax import options
from metajax._files import check_writable_folder
from metajax.config.streams import VALIDATION_STREAM
from metajax.core import memory
from metajax.evaluation import reports
from metajax.evaluation.adaptation import summarise
from metajax.evaluation.curves import held_out_tasks, split_step_sizes, step_size_curves
from metajax.evaluation.settings import (
    STEP_SIZE_GRID,
    EvalSettings,
    EvaluationError,
    query_size,
)
from metajax.options import declared
from metajax.runs import run_dir
from metajax.runs.loaded_run import LoadedRun, load


def evaluate_run(run: LoadedRun, settings: EvalSettings = EvalSettings()) -> list[dict[str, Any]]:
    """Evaluates a loaded run; one result per K (see :func:`evaluate`).

    Raises:
      EvaluationError: if the step size cannot be overridden or tuned, or every step size of
        the grid diverges on the validation tasks.
    """
    family, algorithm = run.config.task, run.config.algorithm
    steps = settings.steps_for(algorithm)
    has_step_size = algorithm.adapts_with_inner_lr()
    tune = settings.tunes(algorithm)
    if tune and steps == 0:
        raise EvaluationError(
            f"tuning the step size needs adaptation steps, and a run of {algorithm.name} is "
            "tested with none; give --adapt-steps (adapt_steps in Python)"
        )
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
            validation = held_out_tasks(family, settings, shots, VALIDATION_STREAM)
            curves = step_size_curves(run, validation, steps, STEP_SIZE_GRID)
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
        test = held_out_tasks(family, settings, shots)
        step_sizes = (inner_lr,) if has_step_size else None
        (curves,) = split_step_sizes(step_size_curves(run, test, steps, step_sizes))
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


def _report_of(run: LoadedRun, settings: EvalSettings) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        results = evaluate_run(run, settings)
    except memory.OutOfMemoryError as error:
        family = run.config.task
        shots = settings.shots_for(family)
        sizes = {
            "num_tasks": settings.num_tasks,
            "adapt_steps": settings.steps_for(run.config.algorithm),
            "shots": shots,
            "query_shots": sorted({query_size(family, settings, k) for k in shots}),
        }
        if settings.tunes(run.config.algorithm):
            sizes["validation_tasks"] = settings.validation_tasks
        raise error.with_sizes(sizes) from None
    report = {
        "run": str(run.path),
        "family": run.config.family,
        "algorithm": run.config.algorithm.name,
        "label": run.config.algorithm.label,
        "note": run.config.algorithm.adaptation_note(settings.steps_for(run.config.algorithm)),
        "results": results,
        "seconds": round(time.perf_counter() - start, 3),
    }
    overlap = run.config.task.test_overlap_record()
    if overlap is not None:
        report["test_overlap"] = overlap
    if run.summary.get("diverged"):  # older runs do not say
        report["training_diverged"] = {
            key: run.summary[key] for key in ("initial_meta_loss", "final_meta_loss")
        }
    return report


def _on_test_data(run: LoadedRun, settings: EvalSettings) -> LoadedRun:
    """The run, to be tested on ``settings.test_data`` and with ``settings.test_overlap``
    where they are given."""
    changes = {
        name: value
        for name in ("test_data", "test_overlap")
        if (value := getattr(settings, name)) is not None
    }
    if not changes:
        return run
    missing = [name for name in changes if name not in declared(run.config.task)]
    if missing:
        flag = "--" + missing[0].replace("_", "-")
        raise EvaluationError(
            f"{flag} is for runs of the image families; '{run.path}' is a run of "
            f"{run.config.family}, whose tasks come from no image data"
        )
    return run._replace(config=run.config.replace(**changes))


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
      where it diverged). For a run of the image families whose test classes share classes with
      its training data that were kept (``test_overlap="keep"``), ``test_overlap``: how many
      classes and images, and which. For a run whose meta-training diverged at finite values
      (``summary.json``'s ``diverged``), ``training_diverged``: its initial and final
      meta-losses. And ``baseline``, the same for the baseline run, if any.

    Raises:
      RunDirError: if a directory is not a finished run.
      EvaluationError: if the baseline comes from other tasks, or tuning fails, or
        ``settings.test_data`` is given for a run without image data.
      DataError: if the test data share classes with the run's training data and
        ``test_overlap`` is ``"refuse"`` (the run's own setting, unless the settings give one).
      OutOfMemoryError: if the evaluation needs more memory than the device has.
      FolderError: if the files cannot be written to ``out`` (checked before any work).
    """
    run = _on_test_data(load(path), settings)
    baseline_run = None
    if baseline is not None:  # loaded and checked before any work is done
        baseline_run = _on_test_data(load(baseline), settings)
        ours, theirs = run.config.task, baseline_run.config.task
        if (ours.name, ours.task_distribution()) != (theirs.name, theirs.task_distribution()):
            raise EvaluationError(
                f"the baseline '{baseline}' was trained on other tasks ({theirs.name}: "
                f"{theirs.task_distribution()}) than '{path}' ({ours.name}: "
                f"{ours.task_distribution()}); both must come from one task family to be "
                "evaluated on the same tasks"
            )
    if write:
        check_writable_folder(path if out is None else out)
    steps_from = "run" if settings.adapt_steps is None else "option"
    # The run's test-time steps, for the baseline too: both are scored after the same steps.
    settings = options.replace(settings, adapt_steps=settings.steps_for(run.config.algorithm))
    shots = settings.shots_for(run.config.task)
    report = {
        "settings": {**settings.to_json(), "shots": list(shots), "adapt_steps_from": steps_from},
        **_report_of(run, settings),
    }
    if baseline_run is not None:
        report["baseline"] = _report_of(baseline_run, settings)
    if write:
        destination = Path(path) if out is None else Path(out)
        destination.mkdir(parents=True, exist_ok=True)
        run_dir.write_json(destination / run_dir.EVAL, report)
        if plots:
            reports.plot(destination / run_dir.EVAL_PLOT, report, run.config.task)
    return report
