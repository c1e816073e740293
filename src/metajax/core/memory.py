"""Work too large for the device: refused before it runs, and explained by the sizes behind it.

XLA either refuses an allocation (``RESOURCE_EXHAUSTED``) or, on a CPU whose memory is
overcommitted, succeeds and lets the system kill the process later. So compiled programs are
checked against the memory available before they run (:func:`check_compiled`), and XLA's own
errors are turned into :class:`OutOfMemoryError` (:func:`converted`), which the run machinery
completes with the settings that set the sizes.
"""

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax


class OutOfMemoryError(MemoryError):
    """Work that needs more memory than the device has.

    Attributes:
      what: the work, e.g. ``"meta-training"``.
      detail: how much it needs, or XLA's message.
      sizes: the settings that set the memory it needs, by name (filled in by the caller that
        knows them; empty otherwise).
    """

    def __init__(self, what: str, detail: str, sizes: Mapping[str, Any] | None = None):
        self.what = what
        self.detail = detail
        self.sizes = dict(sizes or {})
        super().__init__(self.explain())

    def explain(self, name: Callable[[str], str] = lambda name: f"{name}=") -> str:
        """The message, with each setting written by ``name`` (the command line writes flags)."""
        message = f"{self.what} needs more memory than this device has: {self.detail}"
        if self.sizes:
            shown = ", ".join(f"{name(key)}{_show(value)}" for key, value in self.sizes.items())
            message += f". The sizes that set it: {shown}; choose smaller ones"
            if "meta_batch_size" in self.sizes:
                message += f", or split each meta-batch with {name('micro_batches')}M"
        return message

    def with_sizes(self, sizes: Mapping[str, Any]) -> "OutOfMemoryError":
        return OutOfMemoryError(self.what, self.detail, sizes)


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def _gib(count: float) -> str:
    return f"{count / 2**30:,.1f} GiB"


def available_bytes(device: jax.Device | None = None) -> int | None:
    """The memory a new computation on ``device`` (this process's first device) may take, or
    ``None`` if unknown: an accelerator's free memory, or the host's available memory."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def needed_bytes(compiled: Any) -> int | None:
    """The memory a compiled program needs at its peak, by XLA's memory analysis: its arguments,
    outputs and temporary buffers (``None`` where XLA has no analysis)."""
    compiled = getattr(compiled, "compiled", compiled)  # equinox wraps jax's Compiled
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    # The CPU backend's peak leaves out the temporary buffers; count them all.
    buffers = (
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        - analysis.alias_size_in_bytes
        + analysis.temp_size_in_bytes
    )
    return max(buffers, getattr(analysis, "peak_memory_in_bytes", 0))


def check_compiled(compiled: Any, what: str) -> None:
    """Raises :class:`OutOfMemoryError` if a compiled program needs more memory at its peak
    than is available now (by XLA's memory analysis; nothing is checked where XLA has none).
    """
    peak = needed_bytes(compiled)
    available = available_bytes()
    if peak is not None and available is not None and peak > available:
        raise OutOfMemoryError(
            what, f"about {_gib(peak)} at its peak, with {_gib(available)} available"
        )


def compile_checked(jitted: Any, *args: Any, what: str) -> Any:
    """``jitted.lower(*args).compile()``, checked by :func:`check_compiled`."""
    with converted(what):
        compiled = jitted.lower(*args).compile()
    check_compiled(compiled, what)
    return compiled


@contextlib.contextmanager
def converted(what: str) -> Iterator[None]:
    """Turns XLA's out-of-memory errors raised inside the block into :class:`OutOfMemoryError`."""
    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        text = str(error)
        if "RESOURCE_EXHAUSTED" not in text and "Out of memory" not in text:
            raise
        raise OutOfMemoryError(what, text.strip().splitlines()[0].rstrip(".")) from None
