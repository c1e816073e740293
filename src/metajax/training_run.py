"""A meta-training run in a run directory: metrics, checkpoints, stop signals and resuming.

:func:`run` wraps :func:`~metajax.training.meta_train` so that nothing is lost when a run is
stopped: it checkpoints every ``checkpoint_every`` meta-steps, turns SIGINT and SIGTERM into a
checkpoint at the next compiled-call boundary, stops at the first non-finite meta-loss or
meta-gradient, and resumes from the newest checkpoint. Meta-step ``i`` always trains on the
tasks of ``fold_in(key, i)``, so a resumed run's parameters and metrics are bit for bit those of
a run that was never stopped. In a multi-process run (see :mod:`metajax.multi_process`), only
process 0 writes, and a signal to any process stops all of them at the same step.
"""

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import optax
from jax.sharding import Mesh

from metajax import checkpoints, metrics, multi_process, run_dir
from metajax.algorithms.meta_learner import MetaLearner
from metajax.stop_signals import Interrupted, StopSignals
from metajax.training import NonFiniteError, TaskSampler, TrainState, meta_train

if TYPE_CHECKING:
    from metajax.config import TrainSettings

FINAL_LOSS_WINDOW = 1000
"""A run's final meta-loss is the mean over this many last meta-steps."""


class RunOutcome(NamedTuple):
    """What :func:`run` returns.

    Attributes:
      state: the final training state.
      recent: the metrics of the last steps (at least ``FINAL_LOSS_WINDOW`` of them, or all),
        ``meta_loss`` first, then the aux metrics, float64, ending at the final step; from
        checkpoints too when resumed.
      resumed_from: the step this session started from (0 for a new run).
      compile_seconds: time this session spent compiling.
      train_seconds: time this session spent in compiled meta-steps.
    """

    state: TrainState
    recent: dict[str, np.ndarray]
    resumed_from: int
    compile_seconds: float
    train_seconds: float

    @property
    def final_meta_loss(self) -> float:
        """The mean meta-loss over the last ``FINAL_LOSS_WINDOW`` steps (or all)."""
        return float(np.mean(self.recent["meta_loss"][-FINAL_LOSS_WINDOW:]))


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


def run(
    out: str | Path,
    config: dict[str, Any],
    learner: MetaLearner,
    optimizer: optax.GradientTransformation,
    sample_tasks: TaskSampler,
    initial_state: TrainState,
    settings: "TrainSettings",
    *,
    resume: bool = False,
    progress: bool = True,
    stop: StopSignals | None = None,
    sinks: Sequence[metrics.MetricsSink] = (),
    steps_per_draw: int | None = None,
    mesh: Mesh | None = None,
    validate: Callable[[Any], dict[str, float]] | None = None,
) -> RunOutcome:
    """Meta-trains in the run directory ``out``, or resumes the run there.

    A new run checkpoints ``initial_state`` first, so that a run stopped at any moment can be
    resumed. Then, after every compiled call, ``metrics.jsonl`` (and every sink) gets its new
    records and, every ``checkpoint_every`` meta-steps and at the end,
    ``checkpoints/step_<step>`` is written (see :mod:`metajax.checkpoints`).

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
      stop: the caller's :class:`~metajax.stop_signals.StopSignals`, already entered, when
        signals should also stop the work around this call (the CLI's figures, say); by default
        ``run`` handles signals itself, from start to end.
      sinks: more places for the metrics records than ``metrics.jsonl`` (see
        :class:`metajax.metrics.MetricsSink`); process 0 alone writes to them in a
        multi-process run.
      steps_per_draw, mesh: as for :func:`~metajax.meta_train`.
      validate: ``validate(meta_params) -> {name: value}``, scores of the meta-parameters on
        validation tasks; called at every ``checkpoint_every`` meta-steps and at the end,
        before the checkpoint, and written as a record of its own at that step.

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
                sinks=sinks,
                steps_per_draw=steps_per_draw,
                mesh=mesh,
                validate=validate,
            )
    out = Path(out)
    checkpoint_dir = out / run_dir.CHECKPOINTS
    config = _comparable(config)
    writer = multi_process.is_writer()

    def save(state: TrainState, recent: dict[str, np.ndarray]) -> Path:
        if not writer:  # process 0 writes it
            return checkpoint_dir / checkpoints.directory_name(int(state.step))
        aux = {name: values.tolist() for name, values in recent.items() if name != "meta_loss"}
        metadata = {"config": config, "recent_losses": recent["meta_loss"].tolist()}
        if aux:
            metadata["recent_aux"] = aux
        return checkpoints.save(
            checkpoint_dir,
            state,
            step=int(state.step),
            metadata=metadata,
            keep=settings.keep_checkpoints,
        )

    with multi_process.together("resuming the run" if resume else "starting the run"):
        if resume:
            state, recent = _restore(out, config, initial_state, settings, writer)
            first_step = int(state.step)
            if writer:  # drop the records after that checkpoint; the partial window is redone
                logged_through = first_step - first_step % settings.log_every
                metrics.truncate(out / run_dir.METRICS, logged_through)
        else:
            if writer:
                _make_run_dir(out)
            state, recent, first_step = initial_state, {"meta_loss": np.zeros(0)}, 0
        if writer and checkpoints.latest(checkpoint_dir) is None:  # new, or stopped before it
            save(state, recent)
    steps = multi_process.gather(first_step)
    if len(set(steps)) > 1:
        raise checkpoints.CheckpointError(
            f"the processes restored different checkpoints of '{checkpoint_dir}' (meta-steps "
            f"{', '.join(map(str, steps))}, by process): every process must see the run "
            "directory at the same path, on a shared filesystem"
        )
    stop.raise_if_received(out, first_step, settings.meta_steps, agreed=True)

    in_window = first_step % settings.log_every
    pending = {name: values[len(values) - in_window :] for name, values in recent.items()}
    all_sinks = [metrics.JsonlMetrics(out / run_dir.METRICS), *sinks] if writer else []
    windows = metrics.WindowedMetrics(all_sinks, settings.log_every, first_step, pending)
    tail_length = max(FINAL_LOSS_WINDOW, settings.log_every)
    compile_seconds = train_seconds = 0.0

    def validation_due(step: int) -> bool:
        regular = step % settings.checkpoint_every == 0 or step == settings.meta_steps
        return validate is not None and step > 0 and regular

    def write_validation(state: TrainState) -> None:
        assert validate is not None
        scores = validate(state.meta_params)
        for sink in all_sinks:
            sink.write(int(state.step), scores)

    try:
        if resume and first_step % settings.log_every and validation_due(first_step):
            # Its record came after the last one kept; the scores are those of the same state.
            write_validation(state)
        if first_step < settings.meta_steps:

            def on_chunk(state: TrainState, losses: np.ndarray, aux: dict) -> None:
                nonlocal recent
                step = int(state.step)
                values = {"meta_loss": losses, **aux}
                windows(step, values)
                recent = {
                    name: np.concatenate([recent.get(name, np.zeros(0)), v])[-tail_length:]
                    for name, v in values.items()
                }
                due = step % settings.checkpoint_every == 0 or step == settings.meta_steps
                if validation_due(step):
                    write_validation(state)
                # Agreed, so that a signal to any process stops all of them here.
                if due or stop.agreed() is not None:
                    for sink in all_sinks:  # the records up to a checkpoint are on disk before it
                        sink.flush()
                    path = save(state, recent)
                    received = stop.agreed()  # a signal during the save counts too
                    if received is not None:
                        raise Interrupted(received, step, settings.meta_steps, path, out)

            try:
                result = meta_train(
                    learner,
                    optimizer,
                    sample_tasks,
                    state,
                    meta_steps=settings.meta_steps - first_step,
                    steps_per_call=settings.steps_per_call,
                    steps_per_draw=steps_per_draw,
                    mesh=mesh,
                    checkpoint_every=settings.checkpoint_every,
                    progress=progress,
                    on_chunk=on_chunk,
                )
            except NonFiniteError as error:
                newest = checkpoints.latest(checkpoint_dir)
                if newest is None:  # the run saved one before training
                    raise
                raise Diverged(error, newest) from None
            state = result.state
            compile_seconds, train_seconds = result.compile_seconds, result.train_seconds
        windows.flush()
    finally:
        for sink in all_sinks:
            sink.close()
    stop.raise_if_received(out, settings.meta_steps, settings.meta_steps, agreed=True)
    return RunOutcome(state, recent, first_step, compile_seconds, train_seconds)


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


def _restore(
    out: Path,
    config: dict[str, Any],
    initial_state: TrainState,
    settings: "TrainSettings",
    writer: bool,
) -> tuple[TrainState, dict[str, np.ndarray]]:
    """The newest checkpoint's state and recent metrics, checked against the run's config;
    the ``writer`` also deletes what interrupted checkpoint writes left."""
    checkpoint_dir = out / run_dir.CHECKPOINTS
    if writer:
        checkpoints.remove_partial(checkpoint_dir)
    found = checkpoints.latest(checkpoint_dir)
    if found is None:  # stopped before its first checkpoint: the state is the initial one
        return initial_state, {"meta_loss": np.zeros(0)}
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
    aux = manifest.get("recent_aux", {})
    recent = {"meta_loss": manifest.get("recent_losses"), **(aux if isinstance(aux, dict) else {})}
    # At least the values of the pending metrics window and of the final meta-loss's window.
    needed = {"meta_loss": min(step, max(step % settings.log_every, FINAL_LOSS_WINDOW))}
    if not (
        isinstance(aux, dict)
        and all(
            isinstance(values, list)
            and len(values) >= needed.get(name, step % settings.log_every)
            and all(type(v) is float for v in values)
            for name, values in recent.items()
        )
        and all(math.isfinite(v) for v in recent["meta_loss"])
    ):
        raise checkpoints.CheckpointError(
            f"checkpoint '{manifest_path}' is damaged: recent_losses must list the meta-losses "
            "of its last steps"
        )
    if step > settings.meta_steps:
        raise checkpoints.CheckpointError(
            f"checkpoint '{found.path}' is at meta-step {step}, past the run's "
            f"{settings.meta_steps}"
        )
    return state, {name: np.asarray(values, dtype=np.float64) for name, values in recent.items()}


def _read_checkpoint(
    checkpoint_dir: Path, found: checkpoints.Checkpoint, read: Callable[[Path], Any]
) -> Any:
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
