"""A meta-training run in a run directory: metrics, checkpoints, stop signals and resuming.

:func:`run` wraps :func:`~metajax.meta_train` so that nothing is lost when a run is
stopped: it checkpoints every ``checkpoint_every`` meta-steps, turns SIGINT and SIGTERM into a
checkpoint at the next compiled-call boundary, stops at the first non-finite meta-loss or
meta-gradient, and resumes from the newest checkpoint. Meta-step ``i`` always trains on the
tasks of ``fold_in(key, i)``, so a resumed run's parameters and metrics are bit for bit those of
a run that was never stopped. In a multi-process run (see :mod:`metajax.core.multi_process`), only
process 0 writes, and a signal to any process stops all of them at the same step.
"""

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optax
from jax.sharding import Mesh

from metajax.config.training_settings import TrainSettings
from metajax.core import multi_process
from metajax.core.meta_learner import MetaLearner
from metajax.core.meta_steps import TaskSampler, TrainState
from metajax.core.training_loop import NonFiniteError, OnChunk, TrainResult, meta_train
from metajax.runs import checkpoints, metrics, run_dir
from metajax.runs.recording import (
    FINAL_LOSS_WINDOW,
    Recorder,
    diverged_finitely,
    save_checkpoint,
)
from metajax.runs.restoring import restore
from metajax.runs.stop_signals import StopSignals


class RunOutcome(NamedTuple):
    """What :func:`run` returns.

    Attributes:
      state: the final training state.
      recent: the metrics of the last steps (at least ``FINAL_LOSS_WINDOW`` of them, or all),
        ``meta_loss`` first, then the aux metrics, float64, ending at the final step; from
        checkpoints too when resumed.
      initial_loss: the first meta-step's loss, that of the untrained meta-parameters
        (``None`` for a run resumed from a checkpoint written before metajax kept it).
      resumed_from: the step this session started from (0 for a new run).
      compile_seconds: time this session spent compiling.
      train_seconds: time this session spent in compiled meta-steps.
    """

    state: TrainState
    recent: dict[str, np.ndarray]
    initial_loss: float | None
    resumed_from: int
    compile_seconds: float
    train_seconds: float

    @property
    def final_meta_loss(self) -> float:
        """The mean meta-loss over the last ``FINAL_LOSS_WINDOW`` steps (or all)."""
        return float(np.mean(self.recent["meta_loss"][-FINAL_LOSS_WINDOW:]))

    @property
    def diverged(self) -> bool:
        """Whether the run ended more than ``DIVERGED_FACTOR`` times above its first meta-loss."""
        return diverged_finitely(self.initial_loss, self.final_meta_loss)


class Diverged(Exception):
    """A run stopped at a non-finite meta-loss or meta-gradient; nothing after it was saved.

    Attributes:
      step: the first non-finite meta-step.
      quantities: ``"meta-loss"``, ``"meta-gradient"`` (or both), or ``"meta-parameters"``.
      checkpoint: the newest checkpoint, all of it finite.
    """

    def __init__(self, error: NonFiniteError, checkpoint: checkpoints.Checkpoint):
        self.step = error.step
        self.quantities = error.quantities
        self.checkpoint = checkpoint
        super().__init__(
            f"meta-training stopped: {error}; the last good checkpoint is '{checkpoint.path}' "
            f"(meta-step {checkpoint.step}). Resuming would repeat it: start a new run with "
            "smaller step sizes (meta_lr, or the algorithm's inner step size)"
        )


class DivergenceWarning(UserWarning):
    """A run trained to its last step with every value finite, but ended far above the loss it
    started from (see :data:`metajax.runs.recording.DIVERGED_FACTOR`): its meta-parameters
    are not usable."""


def run(
    out: str | Path,
    config: dict[str, Any],
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sample_tasks: TaskSampler,
    initial_state: TrainState,
    settings: TrainSettings,
    *,
    resume: bool = False,
    progress: bool = True,
    stop: StopSignals | None = None,
    sinks: Sequence[metrics.MetricsSink] = (),
    steps_per_draw: int | None = None,
    mesh: Mesh | None = None,
    validate: Callable[[Any], dict[str, float]] | None = None,
    on_started: Callable[[], None] | None = None,
) -> RunOutcome:
    """Meta-trains in the run directory ``out``, or resumes the run there.

    A new run checkpoints ``initial_state`` first, so that a run stopped at any moment can be
    resumed. Then, after every compiled call, ``metrics.jsonl`` (and every sink) gets its new
    records and, every ``checkpoint_every`` meta-steps and at the end,
    ``checkpoints/step_<step>`` is written (see :mod:`metajax.runs.checkpoints`).

    Args:
      out: the run directory (created if missing). A new run refuses one that already holds
        checkpoints or metrics.
      config: the run's config, JSON-ready; every checkpoint records it, and resuming refuses
        a checkpoint written for another config.
      learner, optimizer, sample_tasks: as for :func:`~metajax.meta_train`.
      initial_state: the state before the first meta-step; when resuming, it also gives the
        shapes to restore into.
      settings: the run's length, logging and checkpointing: ``meta_steps``,
        ``steps_per_call``, ``log_every``, ``checkpoint_every`` and ``keep_checkpoints`` (the
        other training settings are the caller's to apply).
      resume: continue from the newest checkpoint (from ``initial_state`` if there is none).
      progress: show a progress bar.
      stop: the caller's :class:`~metajax.runs.stop_signals.StopSignals`, already entered, when
        signals should also stop the work around this call (the CLI's figures, say); by default
        ``run`` handles signals itself, from start to end.
      sinks: more places for the metrics records than ``metrics.jsonl`` (see
        :class:`metajax.runs.metrics.MetricsSink`); process 0 alone writes to them in a
        multi-process run.
      steps_per_draw, mesh: as for :func:`~metajax.meta_train`.
      validate: ``validate(meta_params) -> {name: value}``, scores of the meta-parameters on
        validation tasks; called at every ``checkpoint_every`` meta-steps and at the end,
        before the checkpoint, and written as a record of its own at that step.
      on_started: called once, after the first compiled call of meta-steps has run (its
        memory estimate passed) and before its records and checkpoint are written.

    Returns:
      A :class:`RunOutcome`.

    Raises:
      Interrupted: SIGINT or SIGTERM arrived; the run is in a checkpoint.
      Diverged: a meta-loss, meta-gradient or meta-parameter was not finite.
      CheckpointError: when resuming, the newest checkpoint is damaged or from another config,
        or the processes of a multi-process run found different ones.
      ProcessFailed: another process of a multi-process run failed to start or resume it.
      RunDirError: a new run's directory already holds checkpoints or metrics, or (resuming)
        ``metrics.jsonl`` lacks records up to the checkpoint.
    """
    with contextlib.ExitStack() as stack:
        if stop is None:  # the run handles signals itself, from start to end
            stop = stack.enter_context(StopSignals())
        out = Path(out)
        config = _comparable(config)
        writer = multi_process.is_writer()
        state, recent, initial_loss, first_step = _start(
            out, config, initial_state, settings, resume, writer
        )
        stop.raise_if_received(out, first_step, settings.meta_steps, agreed=True)
        recorder = Recorder(
            out, config, settings, sinks, recent, initial_loss, first_step, writer, validate, stop
        )
        result = None
        try:
            if resume and first_step % settings.log_every and recorder.validation_due(first_step):
                # Its record came after the last one kept; the scores are those of that state.
                recorder.write_validation(state)
            if first_step < settings.meta_steps:
                result = _meta_train(
                    out,
                    learner,
                    optimizer,
                    sample_tasks,
                    state,
                    settings,
                    progress=progress,
                    steps_per_draw=steps_per_draw,
                    mesh=mesh,
                    on_chunk=_first_calling(on_started, recorder.on_chunk),
                )
            recorder.flush()
        finally:
            recorder.close()
        stop.raise_if_received(out, settings.meta_steps, settings.meta_steps, agreed=True)
    if result is None:  # a resumed run with no steps left
        return RunOutcome(state, recorder.recent, recorder.initial_loss, first_step, 0.0, 0.0)
    return RunOutcome(
        result.state,
        recorder.recent,
        recorder.initial_loss,
        first_step,
        result.compile_seconds,
        result.train_seconds,
    )


def _first_calling(first: Callable[[], None] | None, on_chunk: OnChunk) -> OnChunk:
    """``on_chunk`` that calls ``first()`` before it handles the first chunk."""
    if first is None:
        return on_chunk
    pending = [first]

    def calling_first(state: TrainState, losses: np.ndarray, aux: dict[str, np.ndarray]) -> None:
        while pending:
            pending.pop()()
        on_chunk(state, losses, aux)

    return calling_first


def _meta_train(
    out: Path,
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sample_tasks: TaskSampler,
    state: TrainState,
    settings: TrainSettings,
    *,
    progress: bool,
    steps_per_draw: int | None,
    mesh: Mesh | None,
    on_chunk: OnChunk,
) -> TrainResult:
    """:func:`~metajax.meta_train` from ``state`` to the run's last step, in calls that end at
    every checkpoint; a non-finite value raises :class:`Diverged`, naming the last good
    checkpoint."""
    try:
        return meta_train(
            learner,
            optimizer,
            sample_tasks,
            state,
            meta_steps=settings.meta_steps - int(state.step),
            steps_per_call=settings.steps_per_call,
            steps_per_draw=steps_per_draw,
            mesh=mesh,
            checkpoint_every=settings.checkpoint_every,
            progress=progress,
            on_chunk=on_chunk,
        )
    except NonFiniteError as error:
        newest = checkpoints.latest(out / run_dir.CHECKPOINTS)
        if newest is None:  # the run saved one before training
            raise
        raise Diverged(error, newest) from None


def _start(
    out: Path,
    config: dict[str, Any],
    initial_state: TrainState,
    settings: TrainSettings,
    resume: bool,
    writer: bool,
) -> tuple[TrainState, dict[str, np.ndarray], float | None, int]:
    """The state to train from, the recent metrics before it, the first meta-step's loss (once
    known) and its step: a new run's first checkpoint, or the newest one of a run that
    resumes; every process must find the same."""
    checkpoint_dir = out / run_dir.CHECKPOINTS
    with multi_process.together("resuming the run" if resume else "starting the run"):
        if resume:
            state, recent, initial_loss = restore(out, config, initial_state, settings, writer)
            first_step = int(state.step)
            if writer:  # drop the records after that checkpoint; the partial window is redone
                logged_through = first_step - first_step % settings.log_every
                metrics.truncate(out / run_dir.METRICS, logged_through)
        else:
            if writer:
                _make_run_dir(out)
            state, recent, initial_loss = initial_state, {"meta_loss": np.zeros(0)}, None
            first_step = 0
        if writer and checkpoints.latest(checkpoint_dir) is None:  # new, or stopped before it
            save_checkpoint(out, state, recent, config, settings, writer, initial_loss)
    steps = multi_process.gather(first_step)
    if len(set(steps)) > 1:
        raise checkpoints.CheckpointError(
            f"the processes restored different checkpoints of '{checkpoint_dir}' (meta-steps "
            f"{', '.join(map(str, steps))}, by process): every process must see the run "
            "directory at the same path, on a shared filesystem"
        )
    return state, recent, initial_loss, first_step


def _make_run_dir(out: Path) -> None:
    """Creates a new run's directory, refusing one that holds another run's training."""
    existing = [name for name in (run_dir.CHECKPOINTS, run_dir.METRICS) if (out / name).exists()]
    if existing:
        raise run_dir.RunDirError(
            f"'{out}' already holds a run's {' and '.join(existing)}; resume it (resume=True), "
            "or choose another directory"
        )
    out.mkdir(parents=True, exist_ok=True)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The config as checkpoints record it: JSON's types, without the metajax version."""
    return {key: value for key, value in config.items() if key != "metajax_version"}
