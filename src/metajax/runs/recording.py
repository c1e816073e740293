"""What a run keeps of its training as it goes: the metrics records (``metrics.jsonl`` and any
other sinks, one record per ``log_every`` meta-steps), the validation scores, the metrics of
the last steps, and the checkpoints, saved every ``checkpoint_every`` meta-steps and when a
signal asks the run to stop."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from metajax.config.training_settings import TrainSettings
from metajax.core.meta_steps import TrainState
from metajax.runs import checkpoints, metrics, run_dir
from metajax.runs.stop_signals import Interrupted, StopSignals

FINAL_LOSS_WINDOW = 1000
"""A run's final meta-loss is the mean over this many last meta-steps."""

DIVERGED_FACTOR = 10.0
"""A run whose final meta-loss is more than this many times its first meta-step's (the loss of
the untrained meta-parameters) has diverged, though every value stayed finite: training that
learns ends below where it started, and training that learns nothing ends near it."""


def diverged_finitely(initial_loss: float | None, final_loss: float) -> bool:
    """Whether a run that ends at ``final_loss`` from ``initial_loss`` diverged; ``False`` when
    the initial loss is unknown (a run resumed from a checkpoint written before metajax kept
    it) or not positive (a log-likelihood, say, whose scale that does not tell)."""
    return initial_loss is not None and 0 < DIVERGED_FACTOR * initial_loss < final_loss


def save_checkpoint(
    out: Path,
    state: TrainState,
    recent: dict[str, np.ndarray],
    config: dict[str, Any],
    settings: TrainSettings,
    writer: bool,
    initial_loss: float | None,
) -> Path:
    """Saves ``state`` with the run's config, its ``recent`` metrics and its first meta-step's
    loss, once known (process 0 alone writes it: the ``writer``); returns the checkpoint's
    directory."""
    checkpoint_dir = out / run_dir.CHECKPOINTS
    if not writer:
        return checkpoint_dir / checkpoints.directory_name(int(state.step))
    aux = {name: values.tolist() for name, values in recent.items() if name != "meta_loss"}
    metadata = {"config": config, "recent_losses": recent["meta_loss"].tolist()}
    if aux:
        metadata["recent_aux"] = aux
    if initial_loss is not None:
        metadata["initial_meta_loss"] = initial_loss
    return checkpoints.save(
        checkpoint_dir,
        state,
        step=int(state.step),
        metadata=metadata,
        keep=settings.keep_checkpoints,
    )


class Recorder:
    """Records a run from ``first_step`` on; :meth:`on_chunk` takes each compiled call's results.

    Args:
      out: the run directory.
      config: the run's config as checkpoints record it.
      settings: the run's training settings.
      sinks: the places for the metrics records besides ``metrics.jsonl``.
      recent: the metrics of the steps before ``first_step`` that a checkpoint kept.
      initial_loss: the first meta-step's loss, that a checkpoint kept (``None`` before it).
      first_step: the step the run starts or resumes from.
      writer: whether this process writes the run's files (process 0).
      validate: ``validate(meta_params) -> {name: value}``, or ``None`` for no validation.
      stop: the run's signals, entered.
    """

    def __init__(
        self,
        out: Path,
        config: dict[str, Any],
        settings: TrainSettings,
        sinks: Sequence[metrics.MetricsSink],
        recent: dict[str, np.ndarray],
        initial_loss: float | None,
        first_step: int,
        writer: bool,
        validate: Callable[[Any], dict[str, float]] | None,
        stop: StopSignals,
    ):
        self.out, self.config, self.settings = out, config, settings
        self.writer, self.validate, self.stop = writer, validate, stop
        self.recent, self.initial_loss = recent, initial_loss
        in_window = first_step % settings.log_every
        pending = {name: values[len(values) - in_window :] for name, values in recent.items()}
        self.sinks = [metrics.JsonlMetrics(out / run_dir.METRICS), *sinks] if writer else []
        self.windows = metrics.WindowedMetrics(self.sinks, settings.log_every, first_step, pending)
        self.tail_length = max(FINAL_LOSS_WINDOW, settings.log_every)
        self.step_size = settings.meta_step_size()

    def validation_due(self, step: int) -> bool:
        """Whether validation scores are recorded at ``step``."""
        settings = self.settings
        regular = step % settings.checkpoint_every == 0 or step == settings.meta_steps
        return self.validate is not None and step > 0 and regular

    def write_validation(self, state: TrainState) -> None:
        """Records the validation scores of ``state``'s meta-parameters at its step."""
        assert self.validate is not None
        scores = self.validate(state.meta_params)
        for sink in self.sinks:
            sink.write(int(state.step), scores)

    def on_chunk(self, state: TrainState, losses: np.ndarray, aux: dict) -> None:
        """After a compiled call: records its metrics, scores validation tasks when due, and
        saves a checkpoint when due or when a signal arrived (then raises :class:`Interrupted`).
        """
        settings = self.settings
        step = int(state.step)
        values = {"meta_loss": losses, **aux}
        if step == len(losses):  # the first call's first loss is the untrained parameters'
            self.initial_loss = float(losses[0])
        if callable(self.step_size):  # under a schedule, each meta-step's step size is a metric
            steps = np.arange(step - len(losses), step)
            values["meta_lr"] = np.asarray(self.step_size(steps), dtype=np.float64)
        self.windows(step, values)
        self.recent = {
            name: np.concatenate([self.recent.get(name, np.zeros(0)), v])[-self.tail_length :]
            for name, v in values.items()
        }
        due = step % settings.checkpoint_every == 0 or step == settings.meta_steps
        if self.validation_due(step):
            self.write_validation(state)
        # Agreed, so that a signal to any process stops all of them here.
        if due or self.stop.agreed() is not None:
            for sink in self.sinks:  # the records up to a checkpoint are on disk before it
                sink.flush()
            path = save_checkpoint(
                self.out, state, self.recent, self.config, settings, self.writer, self.initial_loss
            )
            received = self.stop.agreed()  # a signal during the save counts too
            if received is not None:
                raise Interrupted(received, step, settings.meta_steps, path, self.out)

    def flush(self) -> None:
        """Writes the record of the last window, if it is not complete."""
        self.windows.flush()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
