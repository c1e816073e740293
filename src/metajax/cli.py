"""The ``metajax`` command: flags generated from the registries, parsed into configs.

Every flag of ``metajax train FAMILY``, ``metajax eval`` and ``metajax plot`` comes from a
settings dataclass (a family's config, the algorithms' hyper-parameters, the training, evaluation
and plot settings), with its help text and its check; this module only turns Python names into
flags (``inner_lr`` into ``--inner-lr``) and errors into messages.

Why argparse, generated from the declarations, rather than tyro: the defaults of ``metajax
train`` depend on the preset chosen on the same command line ("20000 with tutorial, 70000 with
finn2017"), and a flag belongs to the algorithm chosen there; errors must read ``argument
--shots: must be an integer in [1, 2147483647], got 0`` with the usage of the subcommand, and
flags renamed since metajax 0.1 must be named with their new names. That is a hundred lines
over argparse, which the settings' declarations drive; tyro would bring its own help and error
formatting and a dependency, and still need that logic.
"""

import argparse
import os
import shlex
import sys
import time
from importlib.metadata import version
from typing import Any

from metajax import harness, registry, reports, run_dir, runs
from metajax._validation import OptionError
from metajax.config import RunConfig, TrainSettings, load_config
from metajax.memory import OutOfMemoryError
from metajax.metrics import MissingDependencyError
from metajax.options import Kind, Options, add_flag, declared, flag_name
from metajax.stop_signals import Interrupted
from metajax.tasks.family import TaskFamily
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


def _by_preset(shown: dict[str, str]) -> str:
    """``--help``'s default of a setting whose value may depend on the preset."""
    if len(set(shown.values())) == 1:
        return next(iter(shown.values()))
    return ", ".join(f"{value} with {preset}" for preset, value in shown.items())


def _preset_defaults(kind: Kind, values: dict[str, Any]) -> str:
    return _by_preset({preset: kind.show(value) for preset, value in values.items()})


def _add_settings(parser: Any, settings: type[Options] | Options) -> None:
    for name, kind in declared(settings).items():
        default = kind.default_text or kind.show(getattr(settings, name))
        add_flag(parser, name, kind, default)


def _add_family(families: Any, family: type[TaskFamily]) -> None:
    presets = family.presets()
    parser = families.add_parser(
        family.name,
        allow_abbrev=False,
        help=family.description.split(": ")[0].split(". ")[0].rstrip("."),
        description=(
            f"{family.description} Writes a run directory with config.json, metrics.jsonl, "
            "checkpoints/, params.eqx, adaptation.png, meta_loss.png and summary.json."
        ),
    )
    parser.add_argument(
        "--preset",
        choices=list(presets),
        help=f"the complete config to start from (default: {next(iter(presets))})",
    )
    algorithms = registry.algorithms()
    parser.add_argument(
        "--algorithm",
        choices=list(algorithms),
        help="; ".join(f"{name}: {kind.description}" for name, kind in algorithms.items())
        + " (default: "
        + _by_preset({preset: config.algorithm.name for preset, config in presets.items()})
        + ")",
    )
    group = parser.add_argument_group(f"{family.name} task settings")
    for name, kind in declared(family).items():
        values = {preset: getattr(config.task, name) for preset, config in presets.items()}
        add_flag(group, name, kind, _preset_defaults(kind, values))
    group = parser.add_argument_group("algorithm settings")
    added: set[str] = set()
    for algorithm in algorithms.values():
        for name, kind in declared(algorithm).items():
            if name in added:
                continue
            added.add(name)
            owners = [a for a, other in algorithms.items() if name in declared(other)]
            values = {
                preset: getattr(config.with_algorithm(owners[0]).algorithm, name)
                for preset, config in presets.items()
            }
            owned = "" if len(owners) == len(algorithms) else f"; {', '.join(owners)} only"
            add_flag(group, name, kind, _preset_defaults(kind, values) + owned)
    group = parser.add_argument_group("training settings")
    for name, kind in declared(TrainSettings).items():
        values = {preset: getattr(config.training, name) for preset, config in presets.items()}
        add_flag(group, name, kind, _preset_defaults(kind, values))
    _add_run_options(parser)
    renamed = {**family.renamed_options, **TrainSettings.renamed_options}
    parser.set_defaults(parser=parser, family_type=family, renamed=renamed)


def build_parser() -> argparse.ArgumentParser:
    # No abbreviated flags: metajax 0.1's --steps would silently mean --steps-per-call.
    parser = argparse.ArgumentParser(
        prog="metajax", description="Gradient-based meta-learning in JAX.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"metajax {version('metajax')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = "|".join(registry.families())
    train = commands.add_parser(
        "train",
        allow_abbrev=False,
        usage=(
            f"metajax train {{{names}}} [OPTIONS]\n"
            "       metajax train --config FILE [--out DIR | --name NAME] [--overwrite] "
            "[--no-plots] [--no-progress] [--tensorboard]\n"
            "       metajax train --resume RUN_DIR [--no-plots] [--no-progress] [--tensorboard]"
        ),
        help="meta-train a model, or resume a run",
        description=(
            "Meta-train a model: 'metajax train FAMILY [OPTIONS]' starts a run on a task family "
            "('metajax train FAMILY --help' lists its options), 'metajax train --config FILE' "
            "starts one from a saved config.json, and 'metajax train --resume RUN_DIR' "
            "continues a stopped run from its newest checkpoint, bit for bit as if it had never "
            "stopped. Ctrl-C (SIGINT) or SIGTERM saves a checkpoint after the current compiled "
            "call and exits with status 130 or 143; a non-finite meta-loss or meta-gradient "
            "stops the run with status 1."
        ),
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its newest checkpoint, with its saved config",
    )
    source.add_argument(
        "--config",
        metavar="FILE",
        help="start a run from a config file, such as a run's config.json (no FAMILY then)",
    )
    _add_run_options(train)
    families = train.add_subparsers(dest="family", metavar="FAMILY", prog="metajax train")
    for family in registry.families().values():
        _add_family(families, family)
    train.set_defaults(handler=_train, parser=train, train_parser=train, renamed={})

    plot = commands.add_parser(
        "plot",
        allow_abbrev=False,
        help="redraw a run's figures",
        description="Redraw adaptation.png and meta_loss.png from a run directory.",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train")
    _add_settings(plot, runs.PlotSettings)
    plot.set_defaults(handler=_plot, parser=plot, renamed={})

    evaluate = commands.add_parser(
        "eval",
        allow_abbrev=False,
        help="measure few-shot adaptation on held-out tasks",
        description=(
            "Evaluate a run on held-out tasks from the test stream of an evaluation seed, which "
            "training never draws from: the same tasks for every run of a task family. For each "
            "K, adapt on the K-shot support set for 0 to S steps and measure the family's "
            "metrics on the query set; report the mean, 95% confidence interval and median over "
            "tasks. Writes eval.json and eval.png into RUN_DIR, or into --out DIR."
        ),
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train")
    evaluate.add_argument(
        "--baseline",
        metavar="RUN_DIR",
        help="another run to evaluate on the same tasks and draw dashed, e.g. a pretrained run",
    )
    _add_settings(evaluate, harness.EvalSettings)
    evaluate.add_argument(
        "--out", metavar="DIR", help="write eval.json and eval.png here (default: RUN_DIR)"
    )
    evaluate.add_argument("--no-plots", action="store_true", help="do not draw eval.png")
    evaluate.set_defaults(
        handler=_evaluate, parser=evaluate, renamed=harness.EvalSettings.renamed_options
    )
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Where a new run goes and what it shows; accepted before FAMILY and after it. The
    defaults are left out of the namespace (SUPPRESS), so that FAMILY's parser keeps values
    given before it; read them with :func:`_run_option`."""
    suppress = argparse.SUPPRESS
    parser.add_argument(
        "--out", metavar="DIR", default=suppress, help="run directory (default: runs/NAME)"
    )
    parser.add_argument(
        "--name", default=suppress, help="run name, for runs/NAME (default: FAMILY-PRESET-TIME)"
    )
    for name, text in (
        ("overwrite", "replace the files of an earlier run in DIR, its checkpoints included"),
        ("no_plots", "do not draw figures"),
        ("no_progress", "hide the progress bar"),
        ("tensorboard", "also log the metrics for TensorBoard, in RUN_DIR/tensorboard"),
    ):
        parser.add_argument(flag_name(name), action="store_true", default=suppress, help=text)


def _run_option(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, None if name in ("out", "name") else False)


def train_config(args: argparse.Namespace) -> RunConfig:
    """The config that parsed ``metajax train FAMILY`` arguments ask for: the preset, with the
    algorithm and the settings given on the command line.

    Raises:
      OptionError: naming the setting of an out-of-range or misplaced flag.
    """
    family: type[TaskFamily] = args.family_type
    presets = family.presets()
    config = presets[args.preset or next(iter(presets))]
    if args.algorithm is not None:
        config = config.with_algorithm(args.algorithm)
    names = [*declared(family), *declared(TrainSettings)]
    names += [name for algorithm in registry.algorithms().values() for name in declared(algorithm)]
    given = {name: getattr(args, name) for name in dict.fromkeys(names)}
    return config.replace(**{name: value for name, value in given.items() if value is not None})


def _run_directory(args: argparse.Namespace, config: RunConfig) -> str:
    out, name = _run_option(args, "out"), _run_option(args, "name")
    if out is not None and name is not None:
        args.parser.error("argument --name: not allowed with argument --out")
    if out is not None:
        if not out.strip():
            args.parser.error("argument --out: must name a directory, got ''")
        return str(out)
    name = name or f"{config.family}-{config.preset or 'custom'}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not name.strip() or name in (".", "..") or "/" in name or os.sep in name:
        args.parser.error(f"argument --name: must be a plain name without '/', got {name!r}")
    return os.path.join("runs", name)


def _train(args: argparse.Namespace) -> int:
    progress, plots = not _run_option(args, "no_progress"), not _run_option(args, "no_plots")
    if args.resume is not None:
        given = [flag for flag in ("out", "name", "overwrite") if _run_option(args, flag)]
        if args.family is not None or given:
            extra = f"FAMILY {args.family}" if args.family else flag_name(given[0])
            args.train_parser.error(
                f"argument --resume: continues a run with its saved config and directory; "
                f"drop {extra}"
            )
        if not args.resume.strip():
            args.train_parser.error("argument --resume: must name a run directory, got ''")
        if runs.finished(args.resume):
            print(f"metajax: the run in {args.resume} has already finished; nothing to resume")
            return 0
        args.started_run = args.resume
        tensorboard = True if _run_option(args, "tensorboard") else None
        summary = runs.resume(args.resume, progress=progress, plots=plots, tensorboard=tensorboard)
        print(_summary_line(summary, args.resume))
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
            config = train_config(args)
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
        overwrite=_run_option(args, "overwrite"),
        tensorboard=_run_option(args, "tensorboard"),
        progress=progress,
        plots=plots,
    )
    print(_summary_line(summary, out))
    return 0


def _summary_line(summary: dict, out: str) -> str:
    resumed = summary.get("resumed_from_step")
    if summary["meta_steps_per_second"] is None:
        speed = "no meta-steps were left to take"
    else:
        taken = summary["meta_steps"] - (resumed or 0)
        speed = (
            f"{taken} meta-steps at {summary['meta_steps_per_second']:,.0f} steps/s "
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
        paths = runs.plot(args.run_dir, **_given(args, runs.PlotSettings))
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


def _renamed_hint(args: argparse.Namespace, extras: list[str]) -> str:
    """Says what flags renamed since metajax 0.1 are called now."""
    renamed = {flag_name(old): flag_name(new) for old, new in args.renamed.items()}
    flags = [extra.split("=")[0] for extra in extras]
    hints = [f"{flag} is now {renamed[flag]}" for flag in flags if flag in renamed]
    return f" ({'; '.join(hints)})" if hints else ""


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    try:
        parser = build_parser()
    except registry.PluginError as error:
        print(f"metajax: error: {error}", file=sys.stderr)
        return 1
    args, extras = parser.parse_known_args(argv)
    if extras:
        args.parser.error(
            f"unrecognized arguments: {' '.join(extras)}{_renamed_hint(args, extras)}"
        )
    try:
        return int(args.handler(args))
    except Interrupted as error:
        print(
            f"metajax: {error}\nmetajax: resume with: metajax train --resume "
            f"{shlex.quote(str(error.run_dir))}",
            file=sys.stderr,
        )
        return error.exit_status
    except OutOfMemoryError as error:
        print(f"metajax: error: {error.explain(lambda n: flag_name(n) + ' ')}", file=sys.stderr)
        return 1
    # Diverged: a non-finite meta-loss. OSError: a path that cannot be written or read.
    except (
        run_dir.RunDirError,
        harness.EvaluationError,
        Diverged,
        MissingDependencyError,
        OSError,
    ) as error:
        print(f"metajax: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        started = getattr(args, "started_run", None)
        hint = (
            "; resume from the newest checkpoint with: metajax train --resume "
            f"{shlex.quote(started)}"
            if started is not None and os.path.isfile(os.path.join(started, run_dir.CONFIG))
            else ""
        )
        print(f"metajax: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
