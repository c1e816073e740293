"""The files of a run directory, written so that an interrupted write never leaves half a file."""

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from metajax._files import check_writable_folder, replace_atomically
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


SET_ASIDE = ".replaced-run"
"""The hidden folder of a run directory where ``--overwrite`` keeps the earlier run's files
until the new run has started."""


class SetAside:
    """An earlier run's files, moved into ``SET_ASIDE`` of their directory while a new run
    starts there: :meth:`put_back` if the new run fails before its first meta-steps (a
    setting refused, the memory estimate, the data), :meth:`discard` once they are done.
    Moving within one directory is a rename, so nothing is copied and nothing is half moved
    but the one file being renamed."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path, self.names, self.folder = path, [], path / SET_ASIDE
        self.folder.mkdir()
        try:
            for name in names:
                os.replace(path / name, self.folder / name)
                self.names.append(name)
        except BaseException:
            self.put_back()
            raise

    def put_back(self) -> None:
        """Removes what the new run wrote and returns the earlier run's files."""
        if not self.folder.exists():
            return
        remove_run_files(self.path)
        for name in self.names:
            os.replace(self.folder / name, self.path / name)
        self.folder.rmdir()

    def discard(self) -> None:
        """Deletes the earlier run's files, for good."""
        if self.folder.exists():
            shutil.rmtree(self.folder)


def prepare(path: str | os.PathLike, *, overwrite: bool = False) -> SetAside | None:
    """Creates the run directory ``path``, refusing to replace an earlier run's files.

    With ``overwrite=True`` the files of an earlier run (and only those, its checkpoints and
    evaluation included) are set aside, not deleted: the caller puts them back if the new run
    fails to start and discards them once it has (see :class:`SetAside`).

    Returns:
      The earlier run's files set aside, or ``None`` if there were none.

    Raises:
      RunDirError: if ``path`` is a file, holds an earlier run's files and ``overwrite`` is
        false, or holds files that an earlier ``overwrite`` set aside and never put back.
      FolderError: if ``path`` lies under a file or cannot be written.
    """
    path = Path(path)
    check_writable(path)
    if (path / SET_ASIDE).exists():
        raise RunDirError(
            f"'{path / SET_ASIDE}' holds the files of a run that an --overwrite set aside, and "
            "the process that did so stopped before the new run started (killed, say); move "
            f"them back into '{path}' (after removing the files the new run left there), or "
            "delete the folder if the run is not wanted"
        )
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
    path.mkdir(parents=True, exist_ok=True)
    return SetAside(path, existing) if existing else None


def check_writable(path: str | os.PathLike) -> None:
    """Checks, before any work, that a run directory can be created or written at ``path``.

    Raises:
      RunDirError: if ``path`` is a file.
      FolderError: if it is empty, lies under a file, or cannot be written.
    """
    if os.path.isfile(path):
        raise RunDirError(f"run directory '{path}' is a file; choose a directory")
    check_writable_folder(path)


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


def save_params(path: Path, params: Any) -> str:
    """Saves a pytree's arrays (``equinox.tree_serialise_leaves``), atomically; returns the
    file's SHA-256, which a run's ``summary.json`` records for :func:`load_params` to check."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, params)
    data = buffer.getvalue()
    replace_atomically(path, lambda file: file.write(data))
    return hashlib.sha256(data).hexdigest()


def load_params(path: Path, like: Any, sha256: str | None = None) -> Any:
    """Loads arrays saved by :func:`save_params` into a pytree shaped like ``like``, checking
    the file against ``sha256`` if given.

    Raises:
      RunDirError: naming the file, if it is missing, damaged, or not the file that was saved.
    """
    path = Path(path)
    if not path.exists():
        if (path.parent / CHECKPOINTS).is_dir():
            raise RunDirError(
                f"'{path}' is missing: the run in '{path.parent}' has not finished; continue it "
                f"with: metajax train --resume {path.parent}"
            )
        raise RunDirError(f"'{path}' is missing; is '{path.parent}' a finished run?")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise RunDirError(
            f"'{path}' is not the file the run saved: its SHA-256 differs from the one "
            f"'{path.parent / SUMMARY}' records, so its bytes were changed or damaged since; "
            "restore it from a copy, or train the run again"
        )
    try:
        # Read as numpy, then put on the device: jnp.load compiles a program for each leaf.
        host = eqx.tree_deserialise_leaves(io.BytesIO(data), jax.tree.map(_on_host, like))
    except Exception as error:  # numpy and equinox raise many kinds on a damaged file
        raise RunDirError(f"'{path}' could not be read ({error}); the file is damaged") from None
    return jax.tree.map(
        lambda leaf, like: jax.device_put(leaf) if _is_array(like) else leaf, host, like
    )


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct))


def _on_host(like: Any) -> Any:
    """A leaf of ``like`` with an array as a numpy array of its shape and dtype."""
    return np.empty(like.shape, like.dtype) if _is_array(like) else like


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
