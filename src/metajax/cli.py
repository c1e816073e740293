"""The ``metajax`` command: parses arguments into a config and calls the library."""

import argparse
import os
import sys
import time
from importlib.metadata import version

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
        "train", help="meta-train a model", description="Meta-train a model."
    )
    families = train.add_subparsers(dest="family", required=True, metavar="TASK")
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
    where = train_sinusoid.add_mutually_exclusive_group()
    where.add_argument("--out", metavar="DIR", help="run directory (default: runs/NAME)")
    where.add_argument(
        "--name", help="run name, for the directory runs/NAME (default: sinusoid-PRESET-TIME)"
    )
    train_sinusoid.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier run in DIR"
    )
    train_sinusoid.add_argument("--no-plots", action="store_true", help="do not draw the figures")
    train_sinusoid.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train_sinusoid.set_defaults(handler=_train_sinusoid, parser=train_sinusoid)

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
        **{field: value for field, value in given.items() if value is not None},
    )


def _run_directory(args: argparse.Namespace, config: "sinusoid.SinusoidConfig") -> str:
    if args.out is not None:
        if not args.out.strip():
            args.parser.error("argument --out: must name a directory, got ''")
        return args.out
    name = args.name or f"sinusoid-{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not name.strip() or name in (".", "..") or "/" in name or os.sep in name:
        args.parser.error(f"argument --name: must be a plain name without '/', got {name!r}")
    return os.path.join("runs", name)


def _train_sinusoid(args: argparse.Namespace) -> int:
    try:
        config = sinusoid_config(args)
    except OptionError as error:
        args.parser.error(f"argument {_flag(error.name)}: {error.problem}")
    out = _run_directory(args, config)
    summary = sinusoid.train(
        config,
        out,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        plots=not args.no_plots,
    )
    print(
        f"metajax: final meta-loss {summary['final_meta_loss']:.4g} "
        f"(mean of the last {summary['final_meta_loss_window']} steps); "
        f"{summary['steps']} meta-steps at {summary['steps_per_second']:,.0f} steps/s "
        f"({summary['train_seconds']:.1f} s, compile {summary['compile_seconds']:.1f} s); "
        f"wall time {_wall_seconds():.1f} s; run directory {out}"
    )
    return 0


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
    # OSError: a path that cannot be written or read.
    except (RunDirError, sinusoid_eval.EvaluationError, OSError) as error:
        print(f"metajax: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("metajax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
