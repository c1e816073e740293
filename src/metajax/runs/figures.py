"""A finished run's figures, drawn from its directory: the model adapting to a held-out task, and
the logged meta-loss."""

import dataclasses
from pathlib import Path

import numpy as np

from metajax import options
from metajax._files import check_writable_folder
from metajax.config.streams import TEST_STREAM, stream_key
from metajax.core import memory
from metajax.options import Options
from metajax.runs import metrics, run_dir
from metajax.runs.loaded_run import LoadedRun, load


@dataclasses.dataclass(frozen=True)
class PlotSettings(Options):
    """What ``metajax plot`` draws."""

    adapt_steps: int = options.integer(
        5, "show the model after 1 to N adaptation steps", maximum=50
    )


def plot(path: str | Path, *, adapt_steps: int = 5) -> list[Path]:
    """Draws a run's figures from its directory and returns their paths.

    ``adaptation.png``: the task family's figure of the model adapting to a held-out task (from
    the test stream of evaluation seed 0) after 0 to ``adapt_steps`` inner steps.
    ``meta_loss.png``: the logged meta-loss against meta-steps.

    Raises:
      OptionError: if ``adapt_steps`` is not an integer in [1, 50].
      RunDirError: if the directory is not a finished run.
      FolderError: if the figures cannot be written into it.
    """
    settings = PlotSettings(adapt_steps=adapt_steps)
    return draw(load(path), adapt_steps=settings.adapt_steps)


def draw(run: LoadedRun, *, adapt_steps: int) -> list[Path]:
    """:func:`plot` for a run already in memory (the one in ``run.path``), as training has it
    when it finishes, without reading its parameters back."""
    from metajax import plots  # matplotlib is imported only by the code that draws

    path = run.path
    check_writable_folder(path)
    config = run.config
    adaptation_path = path / run_dir.ADAPTATION_PLOT
    with memory.converted("drawing the adaptation figure"):
        config.task.plot_example(adaptation_path, run, adapt_steps, stream_key(0, TEST_STREAM))

    records = metrics.read(path / run_dir.METRICS)
    meta_loss_path = path / run_dir.META_LOSS_PLOT
    loss_label = config.task.metrics[config.task.loss_metric()].label
    details = [
        f"{config.training.meta_batch_size} tasks/step",
        config.task.describe(),
        config.algorithm.describe(),
    ]
    preset = f", preset {config.preset}" if config.preset else ""
    plots.plot_meta_loss(
        meta_loss_path,
        np.array([record["step"] for record in records]),
        np.array([record["meta_loss"] for record in records]),
        title=f"{config.algorithm.label}{preset}: {', '.join(d for d in details if d)}",
        ylabel=(
            f"{config.algorithm.objective.format(loss=loss_label)}, "
            f"mean of {config.training.log_every} steps"
        ),
    )
    return [adaptation_path, meta_loss_path]
