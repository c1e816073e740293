"""The ``metajax`` command: parses its arguments (see :mod:`metajax.cli_flags`) and calls the
library, turning errors into messages and exit statuses."""

import argparse
import os
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from metajax import (
    cli_flags,
    download,
    harness,
    multi_process,
    predict,
    registry,
    reports,
    run_dir,
    run_figures,
    runs,
)
from metajax._validation import OptionError
from metajax.config import RunConfig, load_config
from metajax.image_data import DataError
from metajax.memory import OutOfMemoryError
from metajax.metrics import MissingDependencyError
from metajax.options import Options, declared, flag_name
from metajax.stop_signals import Interrupted
from metajax.training_run import Diverged

_IMPORTED = time.perf_counter()


def _wall_seconds() -> float:
    """Seconds since this process started (Linux), else since this module was imported."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            return float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


def _run_directory(args: argparse.Namespace, config: RunConfig) -> str:
    out, name = cli_flags.run_option(args, "out"), cli_flags.run_option(args, "name")
    if out is not None and name is not None:
        args.parser.error("argument --name: not allowed with argument --out")
    if out is not None:
        if not out.strip():
            args.parser.error("argument --out: must name a directory, got ''")
        return str(out)
    if name is None and multi_process.joined():  # a default name would take each one's clock
        args.parser.error(
            "argument --out: required in a multi-process run (or --name), so that every "
            "process uses the same run directory"
        )
    name = name or f"{config.family}-{config.preset or 'custom'}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not name.strip() or name in (".", "..") or "/" in name or os.sep in name:
        args.parser.error(f"argument --name: must be a plain name without '/', got {name!r}")
    return os.path.join("runs", name)


def _train(args: argparse.Namespace) -> int:
    try:
        # Before anything else touches JAX: joining must come before its first computation.
        multi_process.initialize(
            *(cli_flags.run_option(args, name) for name in registry.PROCESS_OPTIONS[1:]),
            detect_cluster=cli_flags.run_option(args, "distributed"),
        )
        return _train_or_resume(args)
    except OptionError as error:
        if error.name not in ("devices", "meta_batch_size", *registry.PROCESS_OPTIONS):
            raise
        # The processes and devices a run is sharded over are checked when it starts.
        parser: argparse.ArgumentParser = args.train_parser
        parser.error(f"argument {flag_name(error.name)}: {error.problem}")


def _train_or_resume(args: argparse.Namespace) -> int:
    progress, plots = (
        not cli_flags.run_option(args, "no_progress"),
        not cli_flags.run_option(args, "no_plots"),
    )
    if args.resume is not None:
        given = [flag for flag in cli_flags.NOT_WHEN_RESUMING if cli_flags.run_option(args, flag)]
        if args.family is not None or given:
            extra = f"FAMILY {args.family}" if args.family else flag_name(given[0])
            args.train_parser.error(
                f"argument --resume: continues a run with its saved config and directory; "
                f"drop {extra}"
            )
        if not args.resume.strip():
            args.train_parser.error("argument --resume: must name a run directory, got ''")
        if runs.finished(args.resume):
            if multi_process.is_writer():
                print(f"metajax: the run in {args.resume} has already finished; nothing to resume")
            return 0
        args.started_run = args.resume
        tensorboard = cli_flags.run_option(args, "tensorboard")
        summary = runs.resume(
            args.resume,
            progress=progress,
            plots=plots,
            tensorboard=tensorboard,
            devices=cli_flags.run_option(args, "devices"),
        )
        _print_summary(summary, args.resume)
        return 0
    if args.config is not None:
        if args.family is not None:
            args.train_parser.error(
                f"argument --config: the config file holds every setting; drop FAMILY "
                f"{args.family} and its options (or edit a copy of the file)"
            )
        config = load_config(args.config)
        args.parser = args.train_parser
    elif args.family is not None:
        try:
            config = cli_flags.train_config(args)
        except OptionError as error:
            args.parser.error(f"argument {flag_name(error.name)}: {error.problem}")
    else:
        args.train_parser.error(
            f"choose a task family ({', '.join(registry.families())}), --config FILE or "
            "--resume RUN_DIR"
        )
    out = _run_directory(args, config)
    args.started_run = out
    summary = runs.train(
        config,
        out,
        overwrite=cli_flags.run_option(args, "overwrite"),
        tensorboard=bool(cli_flags.run_option(args, "tensorboard")),
        progress=progress,
        plots=plots,
        devices=cli_flags.run_option(args, "devices"),
    )
    _print_summary(summary, out)
    return 0


def _print_summary(summary: dict, out: str) -> None:
    if multi_process.is_writer():  # once for a multi-process run
        print(_summary_line(summary, out))


def _summary_line(summary: dict, out: str) -> str:
    resumed = summary.get("resumed_from_step")
    if summary["meta_steps_per_second"] is None:
        speed = "no meta-steps were left to take"
    else:
        taken = summary["meta_steps"] - (resumed or 0)
        devices, processes = summary.get("devices", 1), summary.get("processes", 1)
        where = f"on {devices} devices " if devices > 1 else ""
        if processes > 1:
            where = f"on {devices} devices of {processes} processes "
        speed = (
            f"{taken} meta-steps at {summary['meta_steps_per_second']:,.0f} steps/s {where}"
            f"({summary['train_seconds']:.1f} s, compile {summary['compile_seconds']:.1f} s)"
        )
    return (
        f"metajax: {'resumed at meta-step ' + str(resumed) + '; ' if resumed is not None else ''}"
        f"final meta-loss {summary['final_meta_loss']:.4g} "
        f"(mean of the last {summary['final_meta_loss_window']} steps); {speed}; "
        f"wall time {_wall_seconds():.1f} s; run directory {out}"
    )


def _given(args: argparse.Namespace, settings: type[Options]) -> dict[str, Any]:
    values = {name: getattr(args, name) for name in declared(settings)}
    return {name: value for name, value in values.items() if value is not None}


def _plot(args: argparse.Namespace) -> int:
    try:
        paths = run_figures.plot(args.run_dir, **_given(args, run_figures.PlotSettings))
    except OptionError as error:
        args.parser.error(f"argument {flag_name(error.name)}: {error.problem}")
    for path in paths:
        print(f"metajax: wrote {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    try:
        settings = harness.EvalSettings(**_given(args, harness.EvalSettings))
    except OptionError as error:
        args.parser.error(f"argument {flag_name(error.name)}: {error.problem}")
    report = harness.evaluate(
        args.run_dir, settings, baseline=args.baseline, out=args.out, plots=not args.no_plots
    )
    family = registry.family(report["family"])
    for run in (report, report.get("baseline")):
        if run is not None:
            print(reports.format_table(run, family, settings))
    destination = args.out or args.run_dir
    written = [run_dir.EVAL] + ([] if args.no_plots else [run_dir.EVAL_PLOT])
    print(f"metajax: wrote {' and '.join(os.path.join(destination, f) for f in written)}")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    if args.adapt_steps is not None and args.adapt_steps < 0:
        args.parser.error(f"argument --adapt-steps: must be >= 0, got {args.adapt_steps}")
    if args.out is not None and Path(args.out).suffix.lower() not in (".csv", ".json"):
        args.parser.error(f"argument --out: must end in .csv or .json, got {args.out!r}")
    found = predict.adapt_and_predict(
        args.run_dir, args.support, args.query, adapt_steps=args.adapt_steps
    )
    width = max(len(p.image) for p in found)
    for p in found:
        print(f"{p.image:<{width}}  {p.label}  {p.probability:.3f}")
    if args.out is not None:
        predict.write_predictions(args.out, found)
        print(f"metajax: wrote {args.out}")
    return 0


def _data(args: argparse.Namespace) -> int:
    folders = download.fetch(args.dir, progress=not args.no_progress)
    print(f"metajax: {', '.join(str(f) for f in folders)} ready")
    print(f"metajax: train with: metajax train omniglot --data {shlex.quote(args.dir)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    try:
        parser = cli_flags.build_parser()
    except registry.PluginError as error:
        print(f"metajax: error: {error}", file=sys.stderr)
        return 1
    args, extras = parser.parse_known_args(argv)
    if extras:
        hint = cli_flags.renamed_hint(args, extras)
        args.parser.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
    try:
        commands = {"train": _train, "plot": _plot, "eval": _evaluate}
        commands.update(adapt=_adapt, data=_data)
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
        harness.EvaluationError,
        Diverged,
        DataError,
        download.DownloadError,
        MissingDependencyError,
        OptionError,
        OSError,
        multi_process.ProcessFailed,
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
