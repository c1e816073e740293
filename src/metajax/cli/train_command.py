"""``metajax train``: a new run from a family and its flags or from a config file, or a stopped
run resumed, and the summary line it ends with."""

import argparse
import os
import time

from metajax._validation import OptionError
from metajax.cli.flags import flag_name, train_config
from metajax.cli.run_options import NOT_WHEN_RESUMING, PROCESS_OPTIONS, run_option
from metajax.config import registry
from metajax.config.run_config import RunConfig
from metajax.core import multi_process
from metajax.runs import training as runs
from metajax.runs.run_dir import load_config

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
    out, name = run_option(args, "out"), run_option(args, "name")
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


def train_command(args: argparse.Namespace) -> int:
    """``metajax train``: joins a multi-process run if asked to, then starts or resumes one."""
    try:
        # Before anything else touches JAX: joining must come before its first computation.
        multi_process.initialize(
            *(run_option(args, name) for name in list(PROCESS_OPTIONS)[1:]),
            detect_cluster=run_option(args, "distributed"),
        )
        return _train_or_resume(args)
    except OptionError as error:
        if error.name not in ("devices", "meta_batch_size", *PROCESS_OPTIONS):
            raise
        # The processes and devices a run is sharded over are checked when it starts.
        parser: argparse.ArgumentParser = args.train_parser
        parser.error(f"argument {flag_name(error.name)}: {error.problem}")


def _train_or_resume(args: argparse.Namespace) -> int:
    progress = not run_option(args, "no_progress")
    plots = not run_option(args, "no_plots")
    if args.resume is not None:
        return _resume(args, progress, plots)
    config = _config(args)
    out = _run_directory(args, config)
    args.started_run = out
    summary = runs.train(
        config,
        out,
        overwrite=run_option(args, "overwrite"),
        tensorboard=bool(run_option(args, "tensorboard")),
        progress=progress,
        plots=plots,
        devices=run_option(args, "devices"),
    )
    _print_summary(summary, out)
    return 0


def _config(args: argparse.Namespace) -> RunConfig:
    """A new run's config: from ``--config FILE``, or from FAMILY's preset and flags."""
    train_parser: argparse.ArgumentParser = args.train_parser
    if args.config is not None:
        if args.family is not None:
            train_parser.error(
                f"argument --config: the config file holds every setting; drop FAMILY "
                f"{args.family} and its options (or edit a copy of the file)"
            )
        args.parser = train_parser
        return load_config(args.config)
    if args.family is None:
        train_parser.error(
            f"choose a task family ({', '.join(registry.families())}), --config FILE or "
            "--resume RUN_DIR"
        )
    try:
        return train_config(args)
    except OptionError as error:
        family_parser: argparse.ArgumentParser = args.parser
        family_parser.error(f"argument {flag_name(error.name)}: {error.problem}")


def _resume(args: argparse.Namespace, progress: bool, plots: bool) -> int:
    """``metajax train --resume RUN_DIR``."""
    given = [flag for flag in NOT_WHEN_RESUMING if run_option(args, flag)]
    if args.family is not None or given:
        extra = f"FAMILY {args.family}" if args.family else flag_name(given[0])
        args.train_parser.error(
            f"argument --resume: continues a run with its saved config and directory; drop {extra}"
        )
    if not args.resume.strip():
        args.train_parser.error("argument --resume: must name a run directory, got ''")
    if runs.finished(args.resume):
        if multi_process.is_writer():
            print(f"metajax: the run in {args.resume} has already finished; nothing to resume")
        return 0
    args.started_run = args.resume
    summary = runs.resume(
        args.resume,
        progress=progress,
        plots=plots,
        tensorboard=run_option(args, "tensorboard"),
        devices=run_option(args, "devices"),
    )
    _print_summary(summary, args.resume)
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
