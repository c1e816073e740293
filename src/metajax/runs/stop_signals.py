"""SIGINT and SIGTERM turned into a stop at the next safe point, with a checkpoint.

A run enters :class:`StopSignals` from the moment it is set up until its last file is written;
between compiled calls, and between the stages around training, it checks whether a signal has
arrived, saves what it has, and raises :class:`Interrupted`, which the command line turns into
its exit status and the command that resumes the run.
"""

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from metajax.core import multi_process
from metajax.runs import checkpoints, run_dir


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

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
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

    def agreed(self) -> signal.Signals | None:
        """The signal this process received or, in a multi-process run, that any process did
        (the same on every process), which this process then takes as received too.

        In a multi-process run this is a collective, called by every process at the same
        points, so that all of them stop at the same step.
        """
        numbers = multi_process.gather(0 if self.received is None else self.received.value)
        received = next((signal.Signals(number) for number in numbers if number), None)
        if self.received is None:
            self.received = received
        return received

    def raise_if_received(
        self, out: str | Path, step: int, steps: int, *, agreed: bool = False
    ) -> None:
        """Raises :class:`Interrupted` if a signal has arrived; the run in ``out`` must hold a
        checkpoint at ``step``. With ``agreed``, a signal to any process of a multi-process run
        counts (see :meth:`agreed`)."""
        received = self.agreed() if agreed else self.received
        if received is not None:
            # Named, not listed: another process may just have written it (process 0 writes).
            checkpoint = Path(out) / run_dir.CHECKPOINTS / checkpoints.directory_name(step)
            if multi_process.is_writer() and not checkpoint.is_dir():  # every caller saves it
                raise RuntimeError(f"'{out}' holds no checkpoint of meta-step {step} to stop at")
            raise Interrupted(received, step, steps, checkpoint, Path(out))
