"""The files of a run directory, written so that an interrupted write never leaves half a file."""

import json
import os
import shutil
from pathlib import Path
from typing import Any

import equinox as eqx

CONFIG = "config.json"
METRICS = "metrics.jsonl"
PARAMS = "params.eqx"
SUMMARY = "summary.json"
ADAPTATION_PLOT = "adaptation.png"
META_LOSS_PLOT = "meta_loss.png"
CHECKPOINTS = "checkpoints"
RUN_FILES = (CONFIG, METRICS, PARAMS, SUMMARY, ADAPTATION_PLOT, META_LOSS_PLOT, CHECKPOINTS)
"""What ``train`` writes: files, and the directory of checkpoints."""
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
    for name in existing:
        if (path / name).is_dir():
            shutil.rmtree(path / name)
        else:
            (path / name).unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_synced(path: Path, write) -> None:
    """Creates ``path`` with ``write(file)`` and flushes and fsyncs it before returning."""
    with open(path, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())


def _replace_atomically(path: Path, write) -> None:
    temporary = path.with_name(path.name + ".tmp")
    write_synced(temporary, write)
    os.replace(temporary, path)


def write_json(path: Path, value: Any) -> None:
    """Writes ``value`` as indented JSON, atomically."""
    text = json.dumps(value, indent=2) + "\n"
    _replace_atomically(path, lambda file: file.write(text.encode()))


def read_json(path: Path) -> Any:
    """Reads a JSON file, with an error that names the file when it is missing or invalid."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunDirError(f"'{path}' is missing; is '{Path(path).parent}' a metajax run?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunDirError(f"'{path}' is not valid JSON: {error}") from None


def save_model(path: Path, model: eqx.Module) -> None:
    """Saves a model's arrays (``equinox.tree_serialise_leaves``), atomically."""
    _replace_atomically(path, lambda file: eqx.tree_serialise_leaves(file, model))


def load_model(path: Path, like: eqx.Module) -> eqx.Module:
    """Loads arrays saved by :func:`save_model` into a model shaped like ``like``."""
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


class MetricsLog:
    """Appends one JSON record per line to ``metrics.jsonl``, flushed as it goes."""

    def __init__(self, path: Path):
        self._file = open(path, "a")  # noqa: SIM115 (open for the whole run, see close)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def sync(self) -> None:
        """Makes the records written so far durable (fsync), e.g. before a checkpoint."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def truncate_metrics(path: Path, through_step: int) -> None:
    """Cuts ``metrics.jsonl`` back to its records up to ``through_step``, atomically.

    Records after ``through_step`` (written after the checkpoint a run resumes from) and a last
    line cut short by a killed process are dropped.

    Raises:
      RunDirError: if an earlier line is damaged, or records up to ``through_step`` are missing.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    kept = []
    last_step = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not line.endswith("\n"):
                break  # the process was killed while writing this line
            raise RunDirError(f"'{path}' line {number} is not valid JSON") from None
        if not isinstance(record, dict) or type(record.get("step")) is not int:
            raise RunDirError(f"'{path}' line {number} lacks an integer step")
        if record["step"] > through_step:
            break
        kept.append(line if line.endswith("\n") else line + "\n")
        last_step = record["step"]
    if last_step != through_step:
        raise RunDirError(
            f"'{path}' has records up to step {last_step}, not {through_step} like the checkpoint "
            "the run resumes from, so the metrics cannot be completed. Move the newer "
            "checkpoints out of the run's checkpoints/ directory to resume from an older one, "
            "or start the run again with --overwrite"
        )
    _replace_atomically(path, lambda file: file.write("".join(kept).encode()))


def read_metrics(path: Path, fields: tuple[str, ...] = ("step", "meta_loss")) -> list[dict]:
    """The records of a ``metrics.jsonl`` file, each checked to hold ``fields``."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise RunDirError(f"'{path}' is missing; is '{Path(path).parent}' a metajax run?") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise RunDirError(f"'{path}' line {number} is not valid JSON: {error}") from None
        if not isinstance(record, dict) or not all(field in record for field in fields):
            raise RunDirError(f"'{path}' line {number} lacks one of {', '.join(fields)}")
        records.append(record)
    return records
