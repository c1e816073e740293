"""Resuming a run: its newest checkpoint, checked against the run's config, with the recent
metrics that the run's records and final meta-loss need."""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from metajax.config.training_settings import TrainSettings
from metajax.core.meta_steps import TrainState
from metajax.runs import checkpoints, run_dir
from metajax.runs.recording import FINAL_LOSS_WINDOW


def restore(
    out: Path,
    config: dict[str, Any],
    initial_state: TrainState,
    settings: TrainSettings,
    writer: bool,
) -> tuple[TrainState, dict[str, np.ndarray], float | None]:
    """The newest checkpoint's state, recent metrics and the run's first meta-step's loss
    (``None`` if it holds none), checked against the run's config; the ``writer`` also deletes
    what interrupted checkpoint writes left."""
    checkpoint_dir = out / run_dir.CHECKPOINTS
    if writer:
        checkpoints.remove_partial(checkpoint_dir)
    found = checkpoints.latest(checkpoint_dir)
    if found is None:  # stopped before its first checkpoint: the state is the initial one
        return initial_state, {"meta_loss": np.zeros(0)}, None
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
    initial_loss = manifest.get("initial_meta_loss")
    usable = type(initial_loss) is float and math.isfinite(initial_loss)
    if initial_loss is not None and not usable:
        raise checkpoints.CheckpointError(
            f"checkpoint '{manifest_path}' is damaged: initial_meta_loss must be the first "
            f"meta-step's loss, a finite number, not {initial_loss!r}"
        )
    if step > settings.meta_steps:
        raise checkpoints.CheckpointError(
            f"checkpoint '{found.path}' is at meta-step {step}, past the run's "
            f"{settings.meta_steps}"
        )
    recent_arrays = {name: np.asarray(values, dtype=np.float64) for name, values in recent.items()}
    return state, recent_arrays, initial_loss


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
