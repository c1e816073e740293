"""The ``metajax`` command: parses arguments into a config and calls the library."""

import argparse
import os
import shlex
import sys
import time
from importlib.metadata import version

from metajax import run_dir, training_run
from metajax._validation import OptionError
from metajax.experiments import sinusoid, sinusoid_eval
from metajax.run_dir import RunDirError

_IMPORTED = time.perf_counter()


def _wall_seconds() -> float:
    """Seconds since this process started (Linux), else since this module was imported."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            return float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


# Settings that differ between presets, with their help text; each flag's default comes from
# the chosen preset (see metajax.experiments.sinusoid.PRESETS).
_PRESET_OPTIONS = {
    "meta_batch_size": (int, "N", "tasks per meta-step"),
    "k_shot": (int, "K", "support points per task, the K of K-shot"),
    "k_query": (int, "Q", "query points per task"),
    "inner_lr": (float, "LR", "inner-loop (adaptation) step size"),
    "inner_steps": (int, "S", "inner-loop gradient steps; 0 is plain multi-task training"),
    "meta_lr": (float, "LR", "Adam step size for the meta-parameters"),
    "steps": (int, "N", "meta-steps"),
}
_RANGE_OPTIONS = {
    "amplitude_range": "amplitude range of the sinusoids",
    "phase_range": "phase range of the sinusoids, in radians",
    "x_range": "input range of the sinusoids",
}


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _preset_defaults(field: str) -> str:
    values = []
    for name in sinusoid.PRESETS:
        value = getattr(sinusoid.SinusoidConfig(preset=name), field)
        shown = " ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"
        values.append(f"{shown} with {name}")
    return "default: " + ", ".join(values)


def build_parser() -> argparse.ArgumentParser:
    defaults = sinusoid.SinusoidConfig()
    parser = argparse.ArgumentParser(
        prog="metajax",
        description="Gradient-based meta-learning in JAX.",
    )
    parser.add_argument("--version", action="version", version=f"metajax {version('metajax')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        usage=(
            "metajax train TASK [OPTIONS]\n"
            "       metajax train --config FILE [--out DIR | --name NAME] [--overwrite] "
            "[--no-plots] [--no-progress]\n"
            "       metajax train --resume RUN_DIR [--no-plots] [--no-progress]"
        ),
        help="meta-train a model, or resume a run",
        description=(
            "Meta-train a model: 'metajax train sinusoid [OPTIONS]' starts a run, "
            "'metajax train --config FILE' starts one from a saved config.json, and "
            "'metajax train --resume RUN_DIR' continues a stopped run from its newest "
            "checkpoint, bit for bit as if it had never stopped. Ctrl-C (SIGINT) or SIGTERM "
            "saves a checkpoint after the current compiled call and exits with status 130 or "
            "143; a non-finite meta-loss or meta-gradient stops the run with status 1."
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
        help="start a run from a config file, such as a run's config.json (no TASK then)",
    )
    _add_run_options(train)
    families = train.add_subparsers(dest="family", metavar="TASK", prog="metajax train")
    train_sinusoid = families.add_parser(
        "sinusoid",
        help="sinusoid regression (Finn et al., 2017)",
        description=(
            "Meta-train MAML on sinusoid regression: each task is y = A sin(x + phase) with A and "
            "phase drawn from their ranges; the model adapts on K support points and is scored "
            "on Q query points. Writes a run directory with config.json, metrics.jsonl, "
            "params.eqx, summary.json, adaptation.png and meta_loss.png. The defaults reproduce "
            "the batched run of the tutorial 'MAML Tutorial with JAX'."
        ),
    )
    train_sinusoid.add_argument(
        "--preset",
        choices=list(sinusoid.PRESETS),
        default="tutorial",
        help="tutorial: A in [0.1, 0.5], the tutorial's settings; finn2017: A in [0.1, 5], "
        "the MAML paper's settings (default: %(default)s)",
    )
    train_sinusoid.add_argument(
        "--algorithm",
        choices=sinusoid.ALGORITHMS,
        default="maml",
        help="maml, or pretrain: the pretrained baseline of the MAML paper, plain regression on "
        "all tasks, fine-tuned at test time (default: %(default)s)",
    )
    for field, (kind, metavar, text) in _PRESET_OPTIONS.items():
        train_sinusoid.add_argument(
            _flag(field), type=kind, metavar=metavar, help=f"{text} ({_preset_defaults(field)})"
        )
    for field, text in _RANGE_OPTIONS.items():
        train_sinusoid.add_argument(
            _flag(field),
            type=float,
            nargs=2,
            metavar=("LOW", "HIGH"),
            help=f"{text} ({_preset_defaults(field)})",
        )
    train_sinusoid.add_argument(
        "--first-order",
        action="store_true",
        help="first-order MAML: no gradients through the inner-loop gradients",
    )
    train_sinusoid.add_argument(
        "--hidden-sizes",
        type=int,
        nargs="+",
        metavar="SIZE",
        default=list(defaults.hidden_sizes),
        help="hidden layer sizes of the MLP (default: 40 40)",
    )
    train_sinusoid.add_argument(
        "--seed", type=int, default=defaults.seed, help="random seed (default: %(default)s)"
    )
    train_sinusoid.add_argument(
        "--log-every",
        type=int,
        metavar="N",
        default=defaults.log_every,
        help="meta-steps per record in metrics.jsonl (default: %(default)s)",
    )
    train_sinusoid.add_argument(
        "--steps-per-call",
        type=int,
        metavar="N",
        default=defaults.steps_per_call,
        help="meta-steps fused into one compiled call (default: %(default)s)",
    )
    train_sinusoid.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        default=defaults.checkpoint_every,
        help="meta-steps between checkpoints; one is also saved at the start and the end "
        "(default: %(default)s)",
    )
    train_sinusoid.add_argument(
        "--keep-checkpoints",
        type=int,
        metavar="K",
        default=defaults.keep_checkpoints,
        help="keep the newest K checkpoints (default: %(default)s)",
    )
    _add_run_options(train_sinusoid)
    train_sinusoid.set_defaults(parser=train_sinusoid)
    train.set_defaults(handler=_train, parser=train, train_parser=train)

    plot = commands.add_parser(
        "plot",
        help="redraw a run's figures",
        description="Redraw adaptation.png and meta_loss.png from a run directory.",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train")
    plot.add_argument(
        "--adapt-steps",
        type=int,
        metavar="N",
        default=5,
        help="show the predictions after 1 to N inner steps (default: %(default)s)",
    )
    plot.set_defaults(handler=_plot, parser=plot)

    defaults = sinusoid_eval.EvalSettings()
    evaluate = commands.add_parser(
        "eval",
        help="measure few-shot adaptation on held-out tasks",
        description=(
            "Evaluate a run on held-out tasks from the test stream of an evaluation seed, which "
            "training never draws from: the same tasks for every run of a task family. For each "
            "K, adapt on K support points for 0 to S gradient steps and measure the MSE on the "
            "query points; report the mean and 95% confidence interval over tasks. Writes "
            "eval.json and eval.png into RUN_DIR."
        ),
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train")
    evaluate.add_argument(
        "--baseline",
        metavar="RUN_DIR",
        help="another run to evaluate on the same tasks and draw dashed, e.g. a pretrained run",
    )
    evaluate.add_argument(
        "--num-tasks",
        type=int,
        metavar="N",
        default=defaults.num_tasks,
        help="held-out tasks (default: %(default)s)",
    )
    evaluate.add_argument(
        "--shots",
        type=int,
        nargs="+",
        metavar="K",
        default=list(defaults.shots),
        help="support points to adapt on, one or more values of K (default: 5 10 20)",
    )
    evaluate.add_argument(
        "--steps",
        type=int,
        metavar="S",
        default=defaults.num_steps,
        help="adaptation steps; errors are reported after 0 to S (default: %(default)s)",
    )
    evaluate.add_argument(
        "--inner-lr",
        type=float,
        metavar="LR",
        help="adaptation step size (default: the run's; for a pretrained run, the best of "
        f"{', '.join(f'{lr:g}' for lr in sinusoid_eval.STEP_SIZE_GRID)} on validation tasks)",
    )
    evaluate.add_argument(
        "--tune-inner-lr",
        action="store_true",
        help="choose the step size on validation tasks for any run, one for each K",
    )
    evaluate.add_argument(
        "--query-points",
        type=_count_or_k,
        metavar="N|k",
        default=defaults.query_points,
        help="query points per task, drawn over the x range, or k for K of them as in the "
        "MAML paper's code (default: %(default)s)",
    )
    evaluate.add_argument(
        "--eval-seed",
        type=int,
        metavar="SEED",
        default=defaults.eval_seed,
        help="seed of the test and validation tasks (default: %(default)s)",
    )
    evaluate.add_argument(
        "--validation-tasks",
        type=int,
        metavar="N",
        default=defaults.validation_tasks,
        help="tasks for choosing a step size (default: %(default)s)",
    )
    evaluate.set_defaults(handler=_evaluate, parser=evaluate)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Where a new run goes and what it shows; accepted before TASK and after it. The defaults
    are left out of the namespace (SUPPRESS), so that TASK's parser keeps values given before
    it; read them with :func:`_run_option`."""
    parser.add_argument(
        "--out", metavar="DIR", default=argparse.SUPPRESS, help="run directory (default: runs/NAME)"
    )
    parser.add_argument(
        "--name",
        default=argparse.SUPPRESS,
        help="run name, for the directory runs/NAME (default: TASK-PRESET-TIME)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=argparse.SUPPRESS,
        help="replace the files of an earlier run in DIR, its checkpoints included",
    )
    parser.add_argument(
        "--no-plots", action="store_true", default=argparse.SUPPRESS, help="do not draw figures"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        default=argparse.SUPPRESS,
        help="hide the progress bar",
    )


def _run_option(args: argparse.Namespace, name: str):
    return getattr(args, name, False if name in ("overwrite", "no_plots", "no_progress") else None)


def _count_or_k(text: str) -> int | str:
    if text.lower() == "k":
        return "k"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer or k, got {text!r}") from None


def sinusoid_config(args: argparse.Namespace) -> "sinusoid.SinusoidConfig":
    """The config that parsed ``metajax train sinusoid`` arguments ask for.

    Raises:
      OptionError: naming the config field of an out-of-range option.
    """
    given = {field: getattr(args, field) for field in (*_PRESET_OPTIONS, *_RANGE_OPTIONS)}
    return sinusoid.SinusoidConfig(
        preset=args.preset,
        algorithm=args.algorithm,
        first_order=args.first_order,
        hidden_sizes=args.hidden_sizes,
        seed=args.seed,
        log_every=args.log_every,
        steps_per_call=args.steps_per_call,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        **{field: value for field, value in given.items() if value is not None},
    )


def _run_directory(args: argparse.Namespace, config: "sinusoid.SinusoidConfig") -> str:
    out, name = _run_option(args, "out"), _run_option(args, "name")
    if out is not None and name is not None:
        args.parser.error("argument --name: not allowed with argument --out")
    if out is not None:
        if not out.strip():
            args.parser.error("argument --out: must name a directory, got ''")
        return out
    name = name or f"sinusoid-{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not name.strip() or name in (".", "..") or "/" in name or os.sep in name:
        args.parser.error(f"argument --name: must be a plain name without '/', got {name!r}")
    return os.path.join("runs", name)


def _train(args: argparse.Namespace) -> int:
    if args.resume is not None:
        given = [flag for flag in ("out", "name", "overwrite") if _run_option(args, flag)]
        if args.family is not None or given:
            extra = f"TASK {args.family}" if args.family else _flag(given[0])
            args.train_parser.error(
                f"argument --resume: continues a run with its saved config and directory; "
                f"drop {extra}"
            )
        return _resume(args)
    if args.config is not None:
        if args.family is not None:
            args.train_parser.error(
                f"argument --config: the config file holds every setting; drop TASK "
                f"{args.family} and its options (or edit a copy of the file)"
            )
        config = sinusoid.load_config(args.config)
        args.parser = args.train_parser
    elif args.family is not None:
        try:
            config = sinusoid_config(args)
        except OptionError as error:
            args.parser.error(f"argument {_flag(error.name)}: {error.problem}")
    else:
        args.train_parser.error("choose a task (sinusoid), --config FILE or --resume RUN_DIR")
    out = _run_directory(args, config)
    args.started_run = out
    summary = sinusoid.train(
        config,
        out,
        overwrite=_run_option(args, "overwrite"),
        progress=not _run_option(args, "no_progress"),
        plots=not _run_option(args, "no_plots"),
    )
    print(_summary_line(summary, out))
    return 0


def _resume(args: argparse.Namespace) -> int:
    out = args.resume
    if not out.strip():
        args.train_parser.error("argument --resume: must name a run directory, got ''")
    config_path = os.path.join(out, run_dir.CONFIG)
    values = run_dir.read_json(config_path) if os.path.isdir(out) else None
    task = values.get("task") if isinstance(values, dict) else None
    if task not in (None, sinusoid.TASK_NAME):
        raise RunDirError(f"'{config_path}' is a config for task {task!r}, which metajax lacks")
    if sinusoid.finished(out):
        print(f"metajax: the run in {out} has already finished; nothing to resume")
        return 0
    args.started_run = out
    summary = sinusoid.resume(
        out,
        progress=not _run_option(args, "no_progress"),
        plots=not _run_option(args, "no_plots"),
    )
    print(_summary_line(summary, out))
    return 0


def _summary_line(summary: dict, out: str) -> str:
    resumed = summary.get("resumed_from_step")
    if summary["steps_per_second"] is None:
        speed = "no meta-steps were left to take"
    else:
        taken = summary["steps"] - (resumed or 0)
        speed = (
            f"{taken} meta-steps at {summary['steps_per_second']:,.0f} steps/s "
            f"({summary['train_seconds']:.1f} s, compile {summary['compile_seconds']:.1f} s)"
        )
    return (
        f"metajax: {'resumed at meta-step ' + str(resumed) + '; ' if resumed is not None else ''}"
        f"final meta-loss {summary['final_meta_loss']:.4g} "
        f"(mean of the last {summary['final_meta_loss_window']} steps); {speed}; "
        f"wall time {_wall_seconds():.1f} s; run directory {out}"
    )


def _plot(args: argparse.Namespace) -> int:
    try:
        paths = sinusoid.plot(args.run_dir, adapt_steps=args.adapt_steps)
    except OptionError as error:
        args.parser.error(f"argument {_flag(error.name)}: {error.problem}")
    for path in paths:
        print(f"metajax: wrote {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    try:
        settings = sinusoid_eval.EvalSettings(
            num_tasks=args.num_tasks,
            shots=tuple(args.shots),
            num_steps=args.steps,
            inner_lr=args.inner_lr,
            tune_inner_lr=True if args.tune_inner_lr else None,
            query_points=args.query_points,
            eval_seed=args.eval_seed,
            validation_tasks=args.validation_tasks,
        )
    except OptionError as error:
        flag = "--steps" if error.name == "num_steps" else _flag(error.name)
        args.parser.error(f"argument {flag}: {error.problem}")
    report = sinusoid_eval.evaluate(args.run_dir, settings, baseline=args.baseline)
    for run in (report, report.get("baseline")):
        if run is not None:
            print(_evaluation_table(run, settings))
    print(
        f"metajax: wrote {os.path.join(args.run_dir, sinusoid_eval.EVAL_FILE)} and "
        f"{os.path.join(args.run_dir, sinusoid_eval.EVAL_PLOT)}"
    )
    return 0


def _evaluation_table(run: dict, settings: "sinusoid_eval.EvalSettings") -> str:
    shown = sorted({0, 1, 5, 10, settings.num_steps} & set(range(settings.num_steps + 1)))
    header = f"{'K':>4} {'step size':>10} " + " ".join(
        f"{f'{s} step' + ('s' if s != 1 else ''):>17}" for s in shown
    )
    lines = [
        f"{run['label']} ({run['run']}): query MSE over {settings.num_tasks} held-out tasks, "
        f"mean +- 95% CI",
        header,
    ]
    for result in run["results"]:
        cells = " ".join(_mean_and_ci_cell(result, step) for step in shown)
        step_size = f"{result['inner_lr']:g}" + (
            "*" if result["inner_lr_from"] == "validation" else ""
        )
        lines.append(f"{result['k_shot']:>4} {step_size:>10} {cells}")
    if any(result["inner_lr_from"] == "validation" for result in run["results"]):
        lines.append("     * chosen on validation tasks")
    if any(result["mse_mean"][step] is None for result in run["results"] for step in shown):
        lines.append(
            "     diverged: the error of some tasks is not finite (non_finite in eval.json)"
        )
    return "\n".join(lines)


def _mean_and_ci_cell(result: dict, step: int) -> str:
    if result["mse_mean"][step] is None:
        diverged = f"diverged ({result['non_finite'][step]})"
        return f"{diverged:>17}"
    return f"{result['mse_mean'][step]:>8.4f} +- {result['mse_ci95'][step]:<6.4f}"


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except training_run.Interrupted as error:
        print(
            f"metajax: {error}\nmetajax: resume with: metajax train --resume "
            f"{shlex.quote(str(error.run_dir))}",
            file=sys.stderr,
        )
        return error.exit_status
    # Diverged: a non-finite meta-loss. OSError: a path that cannot be written or read.
    except (RunDirError, sinusoid_eval.EvaluationError, training_run.Diverged, OSError) as error:
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
