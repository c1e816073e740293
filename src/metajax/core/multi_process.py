"""Runs over several processes (one per host, say) with JAX's distributed runtime.

Every process runs the same program on the same config: it restores the same checkpoint and
calls the same compiled meta-steps on a mesh of all the processes' devices (see
:mod:`metajax.core.sharding`), in which each device draws and adapts its own share of every task
batch. Only process 0 writes the run directory, which every process must see at the same path
(a shared filesystem) to resume. The processes also agree, between compiled calls, on whether a
stop signal arrived and whether a stage that only some of them run went well, so that a signal
or an error on one process stops all of them instead of leaving the others waiting.

In Python, call :func:`jax.distributed.initialize` (or :func:`initialize`) first, then use
:func:`metajax.train` as on one process; the command line does it for
``metajax train --coordinator-address HOST:PORT --num-processes N --process-id I``.
"""

import contextlib
import errno
import os
import socket
import sys
import threading
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from metajax._validation import OptionError, integer

ENVIRONMENT = {
    "coordinator_address": "JAX_COORDINATOR_ADDRESS",
    "num_processes": "JAX_NUM_PROCESSES",
    "process_id": "JAX_PROCESS_ID",
}
"""The environment variable each setting of :func:`initialize` is read from when not given."""


class ProcessFailed(RuntimeError):
    """Another process of a multi-process run failed; its own output says why."""


class StartFailed(RuntimeError):
    """A multi-process run that could not start: its coordinator's port taken, or not every
    process joined in time. The message names the address and what to check."""


DEFAULT_TIMEOUT = 60
"""Seconds a process waits for every process to join, by default."""


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    coordinator_timeout: int | None = None,
    *,
    detect_cluster: bool = False,
) -> bool:
    """Joins a multi-process run with :func:`jax.distributed.initialize`, if asked to.

    Each setting not given is read from its environment variable (see :data:`ENVIRONMENT`).
    JAX fills in any still missing from the cluster it detects (SLURM, Open MPI, Kubernetes,
    Cloud TPU and others). With no setting given or set, and without ``detect_cluster``, this
    does nothing: the run is a single process. It must come before any JAX computation.

    Args:
      coordinator_address: ``HOST:PORT`` of process 0, where every process meets.
      num_processes: the number of processes, ``>= 1``.
      process_id: this process's index, in ``[0, num_processes)``.
      coordinator_timeout: seconds to wait for every process to join, ``>= 1`` (default
        :data:`DEFAULT_TIMEOUT`).
      detect_cluster: join even with no setting given, taking all of them from the cluster.

    Returns:
      Whether this process joined a multi-process run.

    Raises:
      OptionError: naming a setting that is malformed, out of range, or missing (when no
        cluster provides it).
      StartFailed: process 0 could not listen on the coordinator's port (another program
        holds it). A process that waits longer than ``coordinator_timeout`` for the others prints an
        error naming the address and exits with status 1: JAX would abort it a moment later,
        from C++, where Python cannot catch it.
    """
    address = coordinator_address or os.environ.get(ENVIRONMENT["coordinator_address"]) or None
    count = _from_environment("num_processes", num_processes)
    index = _from_environment("process_id", process_id)
    if not detect_cluster and address is None and count is None and index is None:
        return False
    if count is not None:
        count = integer("num_processes", count, 1)
        if index is not None:
            index = integer("process_id", index, 0, count - 1)
    if address is not None and not _is_host_and_port(address):
        raise OptionError("coordinator_address", "HOST:PORT, the address of process 0", address)
    given = DEFAULT_TIMEOUT if coordinator_timeout is None else coordinator_timeout
    timeout = integer("coordinator_timeout", given, 1, 24 * 3600)
    if address is not None and index == 0:
        _check_port_free(address)
    watchdog = threading.Timer(timeout, _give_up, (address, count, index, timeout))
    watchdog.daemon = True
    watchdog.start()
    try:
        # JAX's own limit comes later, so that the watchdog's message is the one a user sees.
        jax.distributed.initialize(address, count, index, initialization_timeout=timeout + 30)
    except jax.errors.JaxRuntimeError as error:
        if "Failed to start RPC server" not in str(error):
            raise
        raise StartFailed(_port_taken(address or "the coordinator's address")) from None
    except ValueError as error:
        # JAX's words for a setting that neither the caller nor a cluster gave.
        missing = next((name for name, words in _UNDEFINED.items() if words in str(error)), None)
        if missing is None:
            raise
        raise OptionError(
            missing,
            f"given (or set in {ENVIRONMENT[missing]}) to join a multi-process run, unless it "
            "runs on a cluster that JAX detects (SLURM, Open MPI, Kubernetes)",
            None,
        ) from None
    finally:
        watchdog.cancel()
    return True


def _check_port_free(address: str) -> None:
    """Refuses a coordinator address whose port another program listens on, before JAX tries
    it (JAX's own failure comes with lines of C++ logging)."""
    port = int(address.rpartition(":")[2])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no holder
        try:
            probe.bind(("", port))
        except PermissionError:
            raise StartFailed(
                f"process 0 may not listen on port {port} of --coordinator-address {address} "
                "(ports below 1024 need root); choose a port of 1024 or more"
            ) from None
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise StartFailed(_port_taken(address)) from None


def _port_taken(address: str) -> str:
    return (
        f"cannot start the coordinator at {address}: another program (an earlier run still "
        "running, say) listens on its port; choose another port in --coordinator-address, the "
        "same for every process, or stop that program"
    )


def _give_up(address: str | None, count: int | None, index: int | None, timeout: int) -> None:
    """After ``timeout`` seconds of waiting to join: an error naming the address, and exit."""
    where = f"at {address}" if address else "at the coordinator the cluster gave"
    if index == 0:
        text = (
            f"not every one of the {count or 'N'} processes joined the run {where} within "
            f"{timeout} s; start the others with the same --coordinator-address and "
            "--num-processes, each with its own --process-id, and check that they can reach "
            "this host's port"
        )
    else:
        text = (
            f"no coordinator answered {where} within {timeout} s, or not every process joined: "
            "check that process 0 runs with the same --coordinator-address and "
            "--num-processes, that its host is reachable from here and its port open, or "
            "allow more time with --coordinator-timeout"
        )
    print(f"metajax: error: {text}", file=sys.stderr, flush=True)
    os._exit(1)


_UNDEFINED = {
    "coordinator_address": "coordinator_address should be defined",
    "num_processes": "Number of processes must be defined",
    "process_id": "process id of the current process must be defined",
}


def joined() -> bool:
    """Whether this process is part of a multi-process run (JAX's distributed runtime)."""
    return jax.distributed.is_initialized()


def _from_environment(name: str, value: int | None) -> int | None:
    """``value``, or else the integer in the setting's environment variable, if set."""
    variable = ENVIRONMENT[name]
    if value is not None or not os.environ.get(variable):
        return value
    try:
        return int(os.environ[variable])
    except ValueError:
        raise OptionError(name, f"an integer (in {variable})", os.environ[variable]) from None


def _is_host_and_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def is_writer() -> bool:
    """Whether this process writes the run's files: process 0 of a multi-process run."""
    return jax.process_index() == 0


def gather(value: int | bool) -> list[int]:
    """Every process's ``value``, in process order (just ``[value]`` on one process).

    A collective: every process must call it at the same point of the run.
    """
    if jax.process_count() == 1:
        return [value]
    return multihost_utils.process_allgather(np.int32(value)).tolist()


@contextlib.contextmanager
def together(what: str) -> Iterator[None]:
    """A stage that may fail on some processes only (writing the run directory on process 0,
    say): after it, every process learns whether all got through, and those that did raise
    :class:`ProcessFailed` if one did not, rather than wait for it at the next collective.

    Args:
      what: the stage, for the error: ``"starting the run"``, say.
    """
    if jax.process_count() == 1:
        yield
        return
    try:
        yield
    except BaseException:
        gather(1)
        raise
    failed = [index for index, flag in enumerate(gather(0)) if flag]
    if failed:
        raise ProcessFailed(f"process {failed[0]} failed while {what}; its output says why")
