"""A meta-training run in a run directory: metrics, checkpoints, stop signals and resuming.

:func:`run` wraps :func:`~metajax.training.meta_train` so that nothing is lost when a run is
stopped: it checkpoints every ``checkpoint_every`` meta-steps, turns SIGINT and SIGTERM into a
checkpoint at the next compiled-call boundary, stops at the first non-finite meta-loss or
meta-gradient, and resumes from the newest checkpoint. Meta-step ``i`` always trains on the
tasks of ``fold_in(key, i)``, so a resumed run's parameters and metrics are bit for bit those of
a run that was never stopped.
"""

import dataclasses
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optax

from metajax import _validation, checkpoints, run_dir
from metajax.algorithms.meta_learner import MetaLearner
from metajax.training import NonFiniteError, TaskSampler, TrainState, meta_train

FINAL_LOSS_WINDOW = 1000
"""A run's final meta-loss is the mean over this many last meta-steps."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How long a run trains and how it records its progress.

    Attributes:
      steps: meta-steps in all.
      steps_per_call: the most meta-steps fused into one compiled call.
      log_every: meta-steps per record in ``metrics.jsonl``.
      checkpoint_every: meta-steps between checkpoints.
      keep_checkpoints: how many of the newest checkpoints to keep.
    """

    steps: int
    steps_per_call: int = 1000
    log_every: int = 100
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = _validation.integer(
                field.name, getattr(self, field.name), 1, _validation.MAX_INT32
            )
            object.__setattr__(self, field.name, value)


class RunOutcome(NamedTuple):
    """What :func:`run` returns.

    Attributes:
      state: the final training state.
      recent_losses: the meta-losses of the last steps (at least ``FINAL_LOSS_WINDOW`` of them,
        or all), float64, ending at the final step; from checkpoints too when resumed.
      resumed_from: the step this session started from (0 for a new run).
      compile_seconds: time this session spent compiling.
      train_seconds: time this session spent in compiled meta-steps.
    """

    state: TrainState
    recent_losses: np.ndarray
    resumed_from: int
    compile_seconds: float
    train_seconds: float


class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after saving a checkpoint.

    Attributes:
      signal: the signal received.
      exit_status: the status a command should exit with, 128 + the signal number.
      step: the meta-step the checkpoint holds.
      checkpoint: the checkpoint's directory.
      run_dir: the run directory, for resuming.
    """

    def __init__(
        self, received: signal.Signals, step: int, steps: int, checkpoint: Path, out: Path
    ):
        self.signal = received
        self.exit_status = 128 + received.value
        self.step = step
        self.checkpoint = checkpoint
        self.run_dir = out
        super().__init__(
            f"stopped by {received.name} at meta-step {step} of {steps}; the run is saved in "
            f"checkpoint '{checkpoint}'"
        )


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
            f"(meta-step {checkpoint.step}). Resuming would repeat it: start a new run with a "
            "smaller inner_lr or meta_lr"
        )


class StopSignals:
    """A context in which SIGINT and SIGTERM ask for a stop instead of killing the process.

    The first signal is recorded in :attr:`received`; a run checks it between compiled calls
    and between the stages around training, then saves what it has and raises
    :class:`Interrupted`. A second SIGINT raises ``KeyboardInterrupt`` at once, for a user who
    will not wait (the newest checkpoint on disk is then the place to resume from). A signal
    the process ignores (a background job's SIGINT) stays ignored. Outside the main thread,
    where Python cannot install handlers, this does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: signal.Signals | None = None
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: Any) -> None:
        if self.received is None:
            self.received = signal.Signals(number)
            # os.write, not print: a handler may run in the middle of another write to stderr.
            message = (
                f"\nmetajax: {self.received.name} received; saving a checkpoint after the "
                "current compiled call (press Ctrl-C again to stop at once)\n"
            )
            try:
                os.write(sys.stderr.fileno(), message.encode())
            except (AttributeError, OSError, ValueError):  # no file behind it (Jupyter, pytest)
                sys.stderr.write(message)
        elif number == signal.SIGINT:
            raise KeyboardInterrupt

    def raise_if_received(self, out: str | Path, step: int, steps: int) -> None:
        """Raises :class:`Interrupted` if a signal has arrived; the run in ``out`` must hold a
        checkpoint at ``step``."""
        received = self.received
        if received is not None:
            newest = checkpoints.latest(Path(out) / run_dir.CHECKPOINTS)
            raise Interrupted(received, step, steps, newest.path, Path(out))


class _WindowedMetrics:
    """Turns per-step meta-losses into one ``metrics.jsonl`` record per ``log_every`` steps.

    Records fall at multiples of ``log_every``, plus one for the last, partial window at the end.
    """

    def __init__(self, log: run_dir.MetricsLog, log_every: int, step: int, pending: np.ndarray):
        self._log = log
        self._log_every = log_every
        self._step = step  # the step count after the last pending loss
        self._pending = pending  # the losses of the steps after the last record

    def __call__(self, step: int, losses: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, losses])
        self._step = step
        full = len(self._pending) // self._log_every * self._log_every
        first = step - len(self._pending)
        for i, window in enumerate(self._pending[:full].reshape(-1, self._log_every)):
            self._write(first + (i + 1) * self._log_every, window)
        self._pending = self._pending[full:]

    def _write(self, step: int, window: np.ndarray) -> None:
        self._log.write({"step": step, "meta_loss": float(window.mean())})

    def flush(self) -> None:
        """Writes the last, partial window."""
        if len(self._pending):
            self._write(self._step, self._pending)
            self._pending = self._pending[:0]


def run(
    out: str | Path,
    config: dict[str, Any],
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sample_tasks: TaskSampler,
    initial_state: TrainState,
    settings: RunSettings,
    *,
    resume: bool = False,
    progress: bool = True,
    stop: StopSignals | None = None,
) -> RunOutcome:
    """Meta-trains in the run directory ``out``, or resumes the run there.

    A new run checkpoints ``initial_state`` first, so that a run stopped at any moment can be
    resumed. Then, after every compiled call, ``metrics.jsonl`` gets its new records and, every
    ``checkpoint_every`` meta-steps and at the end, ``checkpoints/step_<step>`` is written (see
    :mod:`metajax.checkpoints`).

    Args:
      out: the run directory (created if missing). A new run refuses one that already holds
        checkpoints or metrics.
      config: the run's resolved config, JSON-ready; every checkpoint records it, and resuming
        refuses a checkpoint written for another config.
      learner, optimizer, sample_tasks: as for :func:`~metajax.meta_train`.
      initial_state: the state before the first meta-step; when resuming, it also gives the
        shapes to restore into.
      settings: the run's length, logging and checkpointing.
      resume: continue from the newest checkpoint (from ``initial_state`` if there is none).
      progress: show a progress bar.
      stop: the caller's :class:`StopSignals`, already entered, when signals should also stop
        the work around this call (the CLI's figures, say); by default ``run`` handles signals
        itself, from start to end.

    Returns:
      A :class:`RunOutcome`.

    Raises:
      Interrupted: SIGINT or SIGTERM arrived; the run is in a checkpoint.
      Diverged: a meta-loss, meta-gradient or meta-parameter was not finite.
      CheckpointError: when resuming, the newest checkpoint is damaged or from another config.
      RunDirError: a new run's directory already holds checkpoints or metrics, or (resuming)
        ``metrics.jsonl`` lacks records up to the checkpoint.
    """
    if stop is None:
        with StopSignals() as stop:
            return run(
                out,
                config,
                learner,
                optimizer,
                sample_tasks,
                initial_state,
                settings,
                resume=resume,
                progress=progress,
                stop=stop,
            )
    out = Path(out)
    checkpoint_dir = out / run_dir.CHECKPOINTS
    config = _comparable(config)

    def save(state: TrainState, recent: np.ndarray) -> Path:
        metadata = {"config": config, "recent_losses": recent.tolist()}
        return checkpoints.save(
            checkpoint_dir,
            state,
            step=int(state.step),
            metadata=metadata,
            keep=settings.keep_checkpoints,
        )

    if resume:
        state, recent = _restore(out, config, initial_state, settings)
        first_step = int(state.step)
        # Drop the records written after that checkpoint; the partial window is redone below.
        logged_through = first_step - first_step % settings.log_every
        run_dir.truncate_metrics(out / run_dir.METRICS, logged_through)
    else:
        existing = [
            name for name in (run_dir.CHECKPOINTS, run_dir.METRICS) if (out / name).exists()
        ]
        if existing:
            raise run_dir.RunDirError(
                f"'{out}' already holds a run's {' and '.join(existing)}; resume it "
                "(resume=True), or choose another directory"
            )
        out.mkdir(parents=True, exist_ok=True)
        state, recent, first_step = initial_state, np.zeros(0), 0
    if checkpoints.latest(checkpoint_dir) is None:  # a new run, or one stopped before this
        save(state, recent)
    stop.raise_if_received(out, first_step, settings.steps)

    pending = recent[len(recent) - first_step % settings.log_every :]
    log = run_dir.MetricsLog(out / run_dir.METRICS)
    metrics = _WindowedMetrics(log, settings.log_every, first_step, pending)
    tail_length = max(FINAL_LOSS_WINDOW, settings.log_every)
    compile_seconds = train_seconds = 0.0
    try:
        if first_step < settings.steps:

            def on_chunk(state: TrainState, losses: np.ndarray) -> None:
                nonlocal recent
                step = int(state.step)
                metrics(step, losses)
                recent = np.concatenate([recent, losses])[-tail_length:]
                due = step % settings.checkpoint_every == 0 or step == settings.steps
                if due or stop.received is not None:
                    log.sync()  # the records up to a checkpoint are on disk before it
                    path = save(state, recent)
                    received = stop.received  # a signal during the save counts too
                    if received is not None:
                        raise Interrupted(received, step, settings.steps, path, out)

            try:
                result = meta_train(
                    learner,
                    optimizer,
                    sample_tasks,
                    state,
                    num_steps=settings.steps - first_step,
                    steps_per_call=settings.steps_per_call,
                    checkpoint_every=settings.checkpoint_every,
                    progress=progress,
                    on_chunk=on_chunk,
                )
            except NonFiniteError as error:
                raise Diverged(error, checkpoints.latest(checkpoint_dir)) from None
            state = result.state
            compile_seconds, train_seconds = result.compile_seconds, result.train_seconds
        metrics.flush()
    finally:
        log.close()
    stop.raise_if_received(out, settings.steps, settings.steps)
    return RunOutcome(state, recent, first_step, compile_seconds, train_seconds)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The config as checkpoints record it: JSON's types, without the metajax version."""
    return {key: value for key, value in config.items() if key != "metajax_version"}


def _restore(
    out: Path, config: dict[str, Any], initial_state: TrainState, settings: RunSettings
) -> tuple[TrainState, np.ndarray]:
    """The newest checkpoint's state and recent losses, checked against the run's config."""
    checkpoint_dir = out / run_dir.CHECKPOINTS
    checkpoints.remove_partial(checkpoint_dir)
    found = checkpoints.latest(checkpoint_dir)
    if found is None:  # stopped before its first checkpoint: the state is the initial one
        return initial_state, np.zeros(0)
    manifest_path = found.path / checkpoints.MANIFEST_FILE
    # The configs first: a checkpoint of another model would not even fit the arrays.
    saved = _read_checkpoint(checkpoint_dir, found, checkpoints.read_manifest).get("config")
    saved = saved if isinstance(saved, dict) else {}
    if saved != config:
        differences = sorted(
            key for key in set(config) | set(saved) if saved.get(key) != config.get(key)
        )
        raise checkpoints.CheckpointError(
            f"checkpoint '{manifest_path}' was written for another config than "
            f"'{out / run_dir.CONFIG}' (they differ in {', '.join(differences)}); restore the "
            "run's config.json, or start a new run"
        )
    state, manifest = _read_checkpoint(
        checkpoint_dir, found, lambda path: checkpoints.load(path, initial_state)
    )
    step = int(state.step)
    if step != found.step or manifest["step"] != step:
        raise checkpoints.CheckpointError(
            f"checkpoint '{manifest_path}' is damaged: it holds meta-step {manifest['step']!r} "
            f"(state {step}), not the {found.step} of its directory's name"
        )
    recent = manifest.get("recent_losses")
    # At least the losses of the pending metrics window and of the final meta-loss's window.
    needed = min(step, max(step % settings.log_every, FINAL_LOSS_WINDOW))
    if not (
        isinstance(recent, list)
        and len(recent) >= needed
        and all(type(v) is float and math.isfinite(v) for v in recent)
    ):
        raise checkpoints.CheckpointError(
            f"checkpoint '{manifest_path}' is damaged: recent_losses must list the meta-losses "
            "of its last steps"
        )
    if step > settings.steps:
        raise checkpoints.CheckpointError(
            f"checkpoint '{found.path}' is at meta-step {step}, past the run's {settings.steps}"
        )
    return state, np.asarray(recent, dtype=np.float64)


def _read_checkpoint(checkpoint_dir: Path, found: checkpoints.Checkpoint, read):
    """``read(found.path)``, with the way to the checkpoint before added to its errors."""
    try:
        return read(found.path)
    except checkpoints.CheckpointError as error:
        older = [c for c in checkpoints.list_complete(checkpoint_dir) if c.step < found.step]
        if not older:
            raise
        raise checkpoints.CheckpointError(
            f"{error}. To resume from the checkpoint before it (meta-step {older[-1].step}), "
            f"move '{found.path}' out of '{checkpoint_dir}'"
        ) from None
