"""How an evaluation report is shown: the text table ``metajax eval`` prints, and ``eval.png``.

Both are drawn from the report alone, as :func:`metajax.evaluate` returns it and ``eval.json``
holds it (its ``settings`` included), so a saved report can be shown again.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from metajax.config.family import TaskFamily


def plot(path: Path, report: Mapping[str, Any], family: TaskFamily | type[TaskFamily]) -> None:
    """Draws ``eval.png``: the primary metric against adaptation steps, one line per K with
    its 95% confidence band, the baseline dashed."""
    from metajax import plots  # matplotlib is imported only by the code that draws

    primary = family.primary()
    metric = family.metrics[primary]
    curves: list[dict[str, Any]] = []
    for run, dashed in ((report, False), (report.get("baseline"), True)):
        if run is None:
            continue
        for index, result in enumerate(run["results"]):
            label = f"{run['label']}, K={result['shots']}"
            if result.get("inner_lr_from", "run") != "run":
                label += f", step {result['inner_lr']:g}"
            if max(result["non_finite"]):
                label += f" ({max(result['non_finite'])} tasks diverge)"
            curves.append(
                {
                    "label": label,
                    "mean": np.array(result[f"{primary}_mean"], dtype=float),  # None: nan
                    "ci95": np.array(result[f"{primary}_ci95"], dtype=float),
                    "color": index,
                    "dashed": dashed,
                }
            )
    settings = report["settings"]
    queries = "K query examples" if settings["query_shots"] == "shots" else "query set"
    plots.plot_curves_with_bands(
        path,
        curves,
        title=(
            f"{settings['num_tasks']} held-out {family.name} tasks: mean and 95% confidence "
            "interval"
        ),
        xlabel="adaptation steps on the K-shot support set",
        ylabel=f"{metric.label} on the {queries}",
        # Adaptation that diverges on a few tasks must not squash the other curves.
        ymax=None if metric.higher_is_better else 2 * max(c["mean"][0] for c in curves),
        log_scale=not metric.higher_is_better,
    )


def format_table(
    run: Mapping[str, Any], family: TaskFamily | type[TaskFamily], settings: Mapping[str, Any]
) -> str:
    """A run's results (the report, or its ``baseline``) as a text table of the primary metric:
    mean +- 95% CI [median] after 0, 1, 5, 10 and the last adaptation step. ``settings`` are
    the report's (its ``settings`` entry)."""
    primary = family.primary()
    worst = "-inf" if family.metrics[primary].higher_is_better else "inf"
    steps = settings["adapt_steps"]
    shown = sorted({0, 1, 5, 10, steps} & set(range(steps + 1)))
    header = f"{'K':>4} {'step size':>10} " + " ".join(
        f"{f'{s} step' + ('s' if s != 1 else ''):>27}" for s in shown
    )
    lines = [
        f"{run['label']} ({run['run']}): {family.metrics[primary].label} over "
        f"{settings['num_tasks']} held-out tasks, mean +- 95% CI [median]",
        header,
    ]
    for result in run["results"]:
        cells = " ".join(_cell(result, primary, step, worst) for step in shown)
        step_size = "-"
        if "inner_lr" in result and steps > 0:  # with no step taken, no step size was used
            step_size = f"{result['inner_lr']:g}"
            step_size += "*" if result["inner_lr_from"] == "validation" else ""
        lines.append(f"{result['shots']:>4} {step_size:>10} {cells}")
    if any(result.get("inner_lr_from") == "validation" for result in run["results"]):
        lines.append("     * chosen on validation tasks")
    if any(result["non_finite"][s] for result in run["results"] for s in shown):
        lines.append(
            "     diverged: the loss of some tasks is not finite (non_finite in eval.json)"
        )
    if settings.get("adapt_steps_from") == "run":  # older eval.json files have none
        lines.append(
            f"     {steps} adaptation step{'s' * (steps != 1)}: the run's test-time steps "
            "(--adapt-steps to change)"
        )
    if run.get("note"):  # eval.json files of metajax 0.2 have none
        lines.append(f"     note: {run['note']}")
    if diverged := run.get("training_diverged"):
        final, initial = diverged["final_meta_loss"], diverged["initial_meta_loss"]
        lines.append(
            f"     diverged: meta-training ended at a meta-loss of {final:.4g}, from "
            f"{initial:.4g} at its first step (summary.json)"
        )
    if overlap := run.get("test_overlap"):
        lines.append(
            f"     not held out: {overlap['classes']} of the {overlap['of_classes']} test classes "
            f"({overlap['images']} of {overlap['of_images']} images) are training classes, kept "
            "by --test-overlap keep (test_overlap in eval.json)"
        )
    return "\n".join(lines)


def _cell(result: Mapping[str, Any], metric: str, step: int, worst: str) -> str:
    mean, ci95, median = (result[f"{metric}_{s}"][step] for s in ("mean", "ci95", "median"))
    median_text = worst if median is None else f"{median:.4f}"
    if mean is None:
        diverged = f"diverged ({result['non_finite'][step]})"
        return f"{diverged:>17} [{median_text}]"
    return f"{mean:>8.4f} +- {ci95:<6.4f} [{median_text}]"
