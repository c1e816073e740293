"""Figures, drawn with matplotlib's object API (no pyplot, no global state): the only module
that imports matplotlib, which the others import only where they draw. It imports no other
part of metajax."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_adaptation(
    path: Path,
    x: np.ndarray,
    target: np.ndarray,
    predictions: Sequence[tuple[str, np.ndarray]],
    support: tuple[np.ndarray, np.ndarray],
    title: str,
) -> None:
    """Few-shot adaptation on one task: the target, the model's predictions, the support points.

    Args:
      path: where to write the PNG.
      x: the inputs of the curves, shape ``[num_points]``.
      target: the true function at ``x``.
      predictions: ``(label, values at x)`` for each curve, in order (before adaptation first).
      support: the support points ``(x, y)`` the model adapted on.
      title: the figure's title.
    """
    figure = Figure(figsize=(7.5, 4.5))
    axes = figure.add_subplot()
    axes.plot(x, target, color="black", linewidth=2.5, label="target")
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, len(predictions)))
    for (label, values), color in zip(predictions, colors, strict=True):
        style = "--" if label.startswith("pre-update") else "-"
        axes.plot(x, values, style, color=color, linewidth=1.5, label=label)
    axes.scatter(
        np.ravel(support[0]),
        np.ravel(support[1]),
        marker="^",
        s=40,
        color="tab:red",
        zorder=3,
        label=f"K = {np.size(support[0])} support points",
    )
    axes.set_xlabel("x")
    axes.set_ylabel("y")
    axes.set_title(title)
    axes.legend(fontsize="small", loc="best")
    _save(figure, path)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average; the first ``window - 1`` values average what exists so far."""
    values = np.asarray(values, dtype=np.float64)
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    starts = np.arange(1, len(values) + 1) - counts
    return (cumulative[1:] - cumulative[starts]) / counts


def plot_meta_loss(
    path: Path, steps: np.ndarray, losses: np.ndarray, title: str, ylabel: str = "meta-loss"
) -> None:
    """The meta-loss against meta-steps, logged values faint and a moving average bold.

    Args:
      path: where to write the PNG.
      steps: the meta-step of each logged value.
      losses: the logged meta-losses (each the mean over its logging window).
      title: the figure's title.
      ylabel: the label of the loss axis.
    """
    figure = Figure(figsize=(7.5, 4.5))
    axes = figure.add_subplot()
    window = max(1, len(losses) // 40)
    axes.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1, label="logged")
    axes.plot(
        steps,
        moving_average(losses, window),
        color="tab:blue",
        linewidth=2,
        label=f"moving average of {window}",
    )
    if np.all(np.asarray(losses) > 0):
        axes.set_yscale("log")
    axes.set_xlabel("meta-step")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    _save(figure, path)


def plot_curves_with_bands(
    path: Path,
    curves: Sequence[dict],
    title: str,
    xlabel: str,
    ylabel: str,
    ymax: float | None = None,
    log_scale: bool = True,
) -> None:
    """Curves over steps 0, 1, 2, ... with shaded confidence bands.

    Args:
      path: where to write the PNG.
      curves: each a dict with ``label``, ``mean`` and ``ci95`` (sequences over steps; the band
        is mean +- ci95; nan leaves a gap), ``color`` (an index into the tab10 colours) and
        ``dashed``.
      title, xlabel, ylabel: the figure's texts.
      ymax: the top of the y axis, if given; what lies above is cut off.
      log_scale: a logarithmic y axis where every mean is positive (for errors; not for
        accuracies, whose differences near 1 matter).
    """
    figure = Figure(figsize=(7.5, 4.8))
    axes = figure.add_subplot()
    colors = matplotlib.colormaps["tab10"].colors  # type: ignore[attr-defined]
    positive = True
    for curve in curves:
        mean, ci95 = np.asarray(curve["mean"]), np.asarray(curve["ci95"])
        steps = np.arange(len(mean))
        color = colors[curve["color"] % len(colors)]
        axes.plot(
            steps,
            mean,
            "--" if curve["dashed"] else "-",
            marker="s" if curve["dashed"] else "o",
            markersize=4,
            color=color,
            label=curve["label"],
        )
        axes.fill_between(steps, mean - ci95, mean + ci95, color=color, alpha=0.15, linewidth=0)
        positive = positive and bool(np.all(mean[np.isfinite(mean)] > 0))
    if positive and log_scale:
        axes.set_yscale("log")
    if ymax is not None:
        axes.set_ylim(top=ymax)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize="medium")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small", ncol=2 if len(curves) > 3 else 1)
    _save(figure, path)


def plot_classification_example(
    path: Path,
    support: tuple[np.ndarray, np.ndarray],
    query: tuple[np.ndarray, np.ndarray],
    probabilities: np.ndarray,
    title: str,
) -> None:
    """One few-shot classification task: the support images by class, and each query image
    with the adapted model's prediction.

    Args:
      path: where to write the PNG.
      support: images ``[num_support, size, size, channels]`` in [0, 1] and labels.
      query: query images and their true labels, one query image per class or more.
      probabilities: the adapted model's class probabilities, ``[num_query, ways]``.
      title: the figure's title.
    """
    images, labels = support
    ways = probabilities.shape[1]
    shots = max(int(np.sum(labels == c)) for c in range(ways))
    columns = shots + 1
    figure = Figure(figsize=(max(1.3 * columns + 0.6, 4.0), 1.3 * ways + 1.0))
    grid = figure.add_gridspec(ways, columns)
    for c in range(ways):
        for column, image in enumerate(images[labels == c]):
            axes = figure.add_subplot(grid[c, column])
            _show(axes, image)
            if column == 0:
                axes.set_ylabel(f"class {c}", fontsize="small")
            if c == 0:
                axes.set_title("support", fontsize="small")
        (shown,) = np.flatnonzero(query[1] == c)[:1]
        predicted = int(np.argmax(probabilities[shown]))
        axes = figure.add_subplot(grid[c, shots])
        _show(axes, query[0][shown])
        right = predicted == c
        axes.set_title(
            f"query: {predicted} ({probabilities[shown, predicted]:.0%})",
            fontsize="small",
            color="tab:green" if right else "tab:red",
        )
    figure.suptitle(title, fontsize="medium")
    _save(figure, path)


def _show(axes: Axes, image: np.ndarray) -> None:
    grey = image.shape[-1] == 1
    axes.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=1)
    axes.set_xticks([])
    axes.set_yticks([])
