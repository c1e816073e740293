"""The files of a run directory, written so that an interrupted write never leaves half a file."""

import json
import os
import shutil
from pathlib import Path
from typing import Any

import equinox as eqx

from metajax._files import replace_atomically
from metajax.config.run_config import RunConfig

CONFIG = "config.json"
DATA = "data.json"
METRICS = "metrics.jsonl"
PARAMS = "params.eqx"
SUMMARY = "summary.json"
ADAPTATION_PLOT = "adaptation.png"
META_LOSS_PLOT = "meta_loss.png"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
RUN_FILES = (
    CONFIG,
    DATA,
    METRICS,
    PARAMS,
    SUMMARY,
    ADAPTATION_PLOT,
    META_LOSS_PLOT,
    CHECKPOINTS,
    TENSORBOARD,
)
"""What ``train`` writes: files, the directory of checkpoints and, if asked, TensorBoard's."""
EVAL = "eval.json"
EVAL_PLOT = "eval.png"
EVAL_FILES = (EVAL, EVAL_PLOT)
"""What ``evaluate`` adds to a run directory."""


class RunDirError(ValueError):
    """A run directory that is missing, incomplete or would be overwritten."""


def prepare(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Creates the run directory ``path``, refusing to replace an earlier run's files.

    With ``overwrite=True`` the files of an earlier run (and only those, its checkpoints and
    evaluation included) are deleted first.

    Raises:
      RunDirError: if ``path`` is a file, or holds an earlier run's files and ``overwrite`` is
        false.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory '{path}' is a file; choose a directory")
    existing = [name for name in (*RUN_FILES, *EVAL_FILES) if (path / name).exists()]
    if existing and not overwrite:
        if SUMMARY in existing:
            state, choices = "a finished run", "choose another directory, or pass --overwrite"
        else:
            state = "an unfinished run"
            choices = "continue it with --resume, choose another directory, or pass --overwrite"
        raise RunDirError(
            f"run directory '{path}' already holds {state} ({', '.join(existing)}); {choices} "
            "to replace it (resume() or overwrite=True in Python)"
        )
    remove_run_files(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_run_files(path: Path) -> None:
    """Deletes the files of a run (and of its evaluation) in ``path``, and nothing else."""
    for name in (*RUN_FILES, *EVAL_FILES):
        if (path / name).is_dir():
            shutil.rmtree(path / name)
        elif (path / name).exists():
            (path / name).unlink()


def write_json(path: Path, value: Any) -> None:
    """Writes ``value`` as indented JSON, atomically."""
    text = json.dumps(value, indent=2) + "\n"
    replace_atomically(path, lambda file: file.write(text.encode()))


def read_json(path: Path) -> Any:
    """Reads a JSON file, with an error that names the file when it is missing or invalid."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunDirError(f"'{path}' is missing; is '{Path(path).parent}' a metajax run?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirError(f"'{path}' is not valid JSON: {error}") from None


def save_params(path: Path, params: Any) -> None:
    """Saves a pytree's arrays (``equinox.tree_serialise_leaves``), atomically."""
    replace_atomically(path, lambda file: eqx.tree_serialise_leaves(file, params))


def load_params(path: Path, like: Any) -> Any:
    """Loads arrays saved by :func:`save_params` into a pytree shaped like ``like``."""
    path = Path(path)
    if not path.exists():
        if (path.parent / CHECKPOINTS).is_dir():
            raise RunDirError(
                f"'{path}' is missing: the run in '{path.parent}' has not finished; continue it "
                f"with: metajax train --resume {path.parent}"
            )
        raise RunDirError(f"'{path}' is missing; is '{path.parent}' a finished run?")
    try:
        return eqx.tree_deserialise_leaves(path, like)
    except Exception as error:  # numpy and equinox raise many kinds on a damaged file
        raise RunDirError(f"'{path}' could not be read ({error}); the file is damaged") from None


def load_config(path: str | os.PathLike) -> RunConfig:
    """Reads a config file, such as a run's ``config.json``.

    Raises:
      RunDirError: naming the file, if it is missing, not JSON, or not a valid config.
    """
    path = Path(path)
    if path.is_dir():
        raise RunDirError(f"'{path}' is a directory; give a config file such as '{path / CONFIG}'")
    if not path.exists():
        raise RunDirError(f"config file '{path}' does not exist")
    values = read_json(path)
    try:
        return RunConfig.from_dict(values)
    except (ValueError, TypeError, OverflowError) as error:
        raise RunDirError(f"'{path}' is not a usable config: {error}") from None
