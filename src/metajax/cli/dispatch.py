"""The ``metajax`` command: parses its arguments (see :mod:`metajax.cli.parser`), runs the
subcommand, and turns the library's errors into messages and exit statuses."""

import os
import re
import shlex
import sys
import traceback
import warnings
from typing import TextIO

from metajax._files import FolderError
from metajax._validation import OptionError
from metajax.cli import console, help_text
from metajax.cli.commands import adapt_command, data_command, eval_command, plot_command
from metajax.cli.flags import flag_name, renamed_hint
from metajax.cli.parser import build_parser
from metajax.cli.train_command import train_command
from metajax.config import plugins
from metajax.config.algorithm import SettingWarning
from metajax.core import multi_process
from metajax.core.memory import OutOfMemoryError
from metajax.data import download
from metajax.data.image_set import DataError
from metajax.evaluation.settings import EvaluationError
from metajax.runs import compilation_cache, run_dir
from metajax.runs.metrics import MissingDependencyError
from metajax.runs.stop_signals import Interrupted
from metajax.runs.training_run import Diverged, DivergenceWarning


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Shows a :class:`SettingWarning` or a :class:`DivergenceWarning` as one line of the
    command's own, with the flag of each setting it names in backticks; others as Python does."""
    if issubclass(category, SettingWarning | DivergenceWarning):
        text = re.sub(r"`(\w+)`", lambda name: flag_name(name.group(1)), str(message))
        print(f"metajax: warning: {text}", file=sys.stderr)
    elif (folder := compilation_cache.remove_unreadable(str(message))) is not None:
        print(
            f"metajax: warning: an entry of the compilation cache in '{folder}' could not be "
            f"read ({str(message).split(': ', 1)[-1]}); its program was compiled again and the "
            "entry removed, for the next run to write anew",
            file=sys.stderr,
        )
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    warnings.showwarning = _show_warning
    console.escape_output()
    try:
        parser = build_parser()
    except plugins.PluginError as error:
        print(f"metajax: error: {error}", file=sys.stderr)
        return 1
    help_text.keep(parser)
    args, extras = parser.parse_known_args(argv)
    if extras:
        hint = renamed_hint(args, extras)
        args.parser.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    console.note_escaped(args, *(sys.argv[1:] if argv is None else argv))
    try:
        compilation_cache.enable_compilation_cache()  # before the command's first compilation
    except FolderError as error:
        print(
            f"metajax: warning: the compilation cache cannot be kept: {error}; compiling "
            "without it (METAJAX_COMPILATION_CACHE=DIR chooses another folder, =off none)",
            file=sys.stderr,
        )
    try:
        commands = {"train": train_command, "plot": plot_command, "eval": eval_command}
        commands.update(adapt=adapt_command, data=data_command)
        return commands[args.command](args)
    except Interrupted as error:
        print(
            f"metajax: {error}\nmetajax: resume with: metajax train --resume "
            f"{shlex.quote(str(error.run_dir))}",
            file=sys.stderr,
        )
        return error.exit_status
    except OutOfMemoryError as error:
        print(f"metajax: error: {error.explain(lambda n: flag_name(n) + ' ')}", file=sys.stderr)
        return _failed(1)
    # Diverged: a non-finite meta-loss. OSError: a path that cannot be written or read.
    # OptionError: a setting refused by the library itself, not by a flag's check.
    except (
        run_dir.RunDirError,
        EvaluationError,
        Diverged,
        DataError,
        download.DownloadError,
        MissingDependencyError,
        OptionError,
        OSError,
        multi_process.ProcessFailed,
        multi_process.StartFailed,
    ) as error:
        print(f"metajax: error: {error}", file=sys.stderr)
        return _failed(1)
    except KeyboardInterrupt:
        started = getattr(args, "started_run", None)
        hint = (
            "; resume from the newest checkpoint with: metajax train --resume "
            f"{shlex.quote(started)}"
            if started is not None and os.path.isfile(os.path.join(started, run_dir.CONFIG))
            else ""
        )
        print(f"metajax: interrupted{hint}", file=sys.stderr)
        return _failed(130)
    except Exception:
        if not multi_process.joined():
            raise
        traceback.print_exc()  # a collective that failed when another process died, say
        return _failed(1)


def _failed(status: int) -> int:
    """``status``; but a process of a multi-process run exits at once: the others may be
    waiting for it in a collective, and JAX's shutdown would hold it until its heartbeat timeout
    (100 s) only to fail then. A run that SIGINT or SIGTERM stopped (:class:`Interrupted`)
    does not come here: all its processes stop at the same step, and leave together."""
    if multi_process.joined():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
