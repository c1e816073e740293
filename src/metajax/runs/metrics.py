"""Where training metrics go: ``metrics.jsonl`` always, TensorBoard or your own sink too.

``metrics.jsonl`` is the source of truth: one JSON record per line, ``{"step": ..., "meta_loss":
..., ...}``, written as training goes and cut back to the newest checkpoint when a run resumes.
Other sinks receive the same records: :class:`TensorBoardMetrics` (``metajax train
--tensorboard``, with ``pip install 'metajax[tensorboard]'``), or any object with the methods
of :class:`MetricsSink`.
"""

import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from metajax._files import replace_atomically
from metajax.runs.run_dir import RunDirError


class MetricsSink(Protocol):
    """What receives the metrics of a run.

    ``write`` gets one record per ``log_every`` meta-steps (and one for a last, shorter
    window): the step count after the window and the mean of each metric over it
    (``meta_loss``, and the aux metrics of a task family's loss). After a resume, records after
    the checkpoint the run resumed from are written again.
    """

    def write(self, step: int, metrics: dict[str, float]) -> None: ...

    def flush(self) -> None:
        """Makes what was written durable; called before each checkpoint."""

    def close(self) -> None: ...


class JsonlMetrics:
    """Appends one JSON record per line to ``metrics.jsonl``, flushed as it goes."""

    def __init__(self, path: Path):
        self._file = open(path, "a")  # noqa: SIM115 (open for the whole run, see close)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}) + "\n")
        self._file.flush()

    def flush(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class TensorBoardMetrics:
    """Writes each metric as a TensorBoard scalar ``train/NAME`` (needs tensorboardX).

    Args:
      logdir: the directory of the event files (a run's ``tensorboard/``).
      resumed_through: when a run resumes, the step of the last record it keeps; TensorBoard
        then discards the events written after it, which the resumed run writes again.
    """

    def __init__(self, logdir: Path, resumed_through: int | None = None):
        writer_type = tensorboard_writer()
        purge = None if resumed_through is None else resumed_through + 1
        # Event files are named by the second they were opened in, and TensorBoard reads them in
        # the order of their names: a resume within the same second must neither overwrite the
        # file of the run it resumes nor be read before it.
        suffix = f".{time.time_ns():020d}"
        self._writer = writer_type(logdir=str(logdir), purge_step=purge, filename_suffix=suffix)
        self._closed = False

    def write(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(f"train/{name}", value, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        if not self._closed:
            self._writer.close()
            self._closed = True


class MissingDependencyError(ImportError):
    """An optional feature whose package is not installed; the message says what to install."""


def tensorboard_writer() -> Any:
    """tensorboardX's ``SummaryWriter``.

    Raises:
      MissingDependencyError: if tensorboardX is not installed.
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise MissingDependencyError(
            "TensorBoard logging needs tensorboardX: pip install 'metajax[tensorboard]'"
        ) from None
    return SummaryWriter


class WindowedMetrics:
    """Turns per-step metrics into one record per ``log_every`` steps, for every sink.

    Records fall at multiples of ``log_every``, plus one for the last, partial window at the end.

    Args:
      sinks: where records go.
      log_every: meta-steps per record.
      step: the step count after the last pending value.
      pending: the values of the steps after the last record, by metric name.
    """

    def __init__(self, sinks: list[Any], log_every: int, step: int, pending: dict[str, np.ndarray]):
        self._sinks = sinks
        self._log_every = log_every
        self._step = step
        self._pending = pending

    def __call__(self, step: int, values: dict[str, np.ndarray]) -> None:
        """Adds the values of the steps up to ``step`` and writes the windows they complete."""
        empty = np.zeros(0)
        pending = {
            name: np.concatenate([self._pending.get(name, empty), value])
            for name, value in values.items()
        }
        self._step = step
        count = len(next(iter(pending.values())))
        full = count // self._log_every * self._log_every
        first = step - count
        for i in range(full // self._log_every):
            window = slice(i * self._log_every, (i + 1) * self._log_every)
            self._write(first + (i + 1) * self._log_every, pending, window)
        self._pending = {name: value[full:] for name, value in pending.items()}

    def _write(self, step: int, values: dict[str, np.ndarray], window: slice) -> None:
        record = {name: float(value[window].mean()) for name, value in values.items()}
        for sink in self._sinks:
            sink.write(step, record)

    def flush(self) -> None:
        """Writes the last, partial window."""
        if len(next(iter(self._pending.values()))):
            self._write(self._step, self._pending, slice(None))
            self._pending = {name: value[:0] for name, value in self._pending.items()}


def truncate(path: Path, through_step: int) -> None:
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
            "or start the run again with --overwrite (overwrite=True in Python)"
        )
    replace_atomically(path, lambda file: file.write("".join(kept).encode()))


VALIDATION_PREFIX = "validation_"
"""Validation records hold ``step`` and metrics named ``validation_<metric>`` only."""


def read(
    path: Path, fields: tuple[str, ...] = ("step", "meta_loss"), *, validation: bool = False
) -> list[dict[str, Any]]:
    """The training records of a ``metrics.jsonl`` file (or, with ``validation``, its
    validation records), each checked to hold ``fields``."""
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
        if isinstance(record, dict) and _is_validation(record) != validation:
            continue
        if not isinstance(record, dict) or not all(field in record for field in fields):
            raise RunDirError(f"'{path}' line {number} lacks one of {', '.join(fields)}")
        records.append(record)
    return records


def _is_validation(record: dict[str, Any]) -> bool:
    return any(key.startswith(VALIDATION_PREFIX) for key in record)
