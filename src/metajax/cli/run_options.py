"""The options of ``metajax train`` that are not settings: where a new run goes, what it runs
on and what it shows, and how it joins a multi-process run. They do not change a run's numbers,
so no config records them; no setting may take their names (see
:data:`metajax.config.registry.COMMAND_LINE_NAMES`)."""

import argparse
from typing import Any

from metajax.cli.flags import flag_name

RUN_OPTIONS: dict[str, dict[str, Any]] = {
    "out": {"metavar": "DIR", "help": "run directory (default: runs/NAME)"},
    "name": {"help": "run name, for runs/NAME (default: FAMILY-PRESET-TIME)"},
    "overwrite": {
        "help": "replace the files of an earlier run in DIR, its checkpoints included, once "
        "the new run has taken its first meta-steps (until then they are kept, and put back "
        "if it stops)"
    },
    "devices": {
        "metavar": "N",
        "type": int,
        "help": "share each task batch among the first N devices (default: all of them; the "
        "meta-batch size must be a multiple of N)",
    },
    "tensorboard": {
        "action": argparse.BooleanOptionalAction,
        "help": "also log the metrics for TensorBoard, in RUN_DIR/tensorboard (default: off; "
        "when resuming, on if the run has that directory)",
    },
    "no_plots": {"help": "do not draw figures"},
    "no_progress": {"help": "hide the progress bar"},
}
"""Where a new run goes, what it runs on and what it shows: each option's argparse arguments."""

NOT_WHEN_RESUMING = ("out", "name", "overwrite")
"""The run options that a resumed run takes from the run itself."""

PROCESS_OPTIONS: dict[str, dict[str, Any]] = {
    "distributed": {
        "help": "join a multi-process run, with what the flags below leave out taken from the "
        "cluster JAX detects (SLURM, Open MPI, Kubernetes); any of them also joins one"
    },
    "coordinator_address": {
        "metavar": "HOST:PORT",
        "help": "the address of process 0, where all processes meet (default: "
        "$JAX_COORDINATOR_ADDRESS)",
    },
    "num_processes": {
        "metavar": "N",
        "type": int,
        "help": "how many processes share the run (default: $JAX_NUM_PROCESSES)",
    },
    "process_id": {
        "metavar": "I",
        "type": int,
        "help": "this process's index, 0 to N-1; process 0 writes the run directory, which "
        "every process must see at the same path (default: $JAX_PROCESS_ID)",
    },
    "coordinator_timeout": {
        "metavar": "SECONDS",
        "type": int,
        "help": "how long a process waits for every process to join before it stops with an "
        "error naming the address (default: 60)",
    },
}
"""How a run joins a multi-process run (see :mod:`metajax.core.multi_process`): each option's
argparse arguments; all but ``distributed`` are arguments of its ``initialize``."""


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The run options and the multi-process options; accepted before FAMILY and after it. The
    defaults are left out of the namespace (SUPPRESS), so that FAMILY's parser keeps values
    given before it; read them with :func:`run_option`."""
    for title, options in (
        ("run options", RUN_OPTIONS),
        ("multi-process options", PROCESS_OPTIONS),
    ):
        group = parser.add_argument_group(title)
        for name, given in options.items():
            arguments = {"action": "store_true", **given}
            if "metavar" in arguments or name == "name":
                del arguments["action"]
            group.add_argument(flag_name(name), default=argparse.SUPPRESS, **arguments)


def run_option(args: argparse.Namespace, name: str) -> Any:
    """The value of a run option or a multi-process option, or its default."""
    valued = ("out", "name", "devices", "tensorboard", *list(PROCESS_OPTIONS)[1:])
    return getattr(args, name, None if name in valued else False)
