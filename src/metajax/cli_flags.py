"""The flags of the ``metajax`` command, generated from the registries and the settings.

Every flag of ``metajax train FAMILY``, ``metajax eval`` and ``metajax plot`` comes from a
settings dataclass (a family's config, the algorithms' hyper-parameters, the training,
evaluation and plot settings), with its help text and its check: this module only turns Python
names into flags (``inner_lr`` into ``--inner-lr``) and defaults into help text, and parsed
arguments back into a config.

Why argparse, generated from the declarations, rather than tyro: the defaults of ``metajax
train`` depend on the preset chosen on the same command line ("20000 with tutorial, 70000 with
finn2017"), and a flag belongs to the algorithm chosen there; errors must read ``argument
--shots: must be an integer in [1, 2147483647], got 0`` with the usage of the subcommand, and
flags renamed since metajax 0.1 must be named with their new names. That is a hundred lines
over argparse, which the settings' declarations drive; tyro would bring its own help and error
formatting and a dependency, and still need that logic.
"""

import argparse
import dataclasses
from importlib.metadata import version
from typing import Any

from metajax import harness, registry, run_figures
from metajax.config import RunConfig, TrainSettings
from metajax.options import Kind, Options, add_flag, declared, flag_name
from metajax.tasks.family import TaskFamily


def _by_preset(shown: dict[str, str]) -> str:
    """``--help``'s default of a setting whose value may depend on the preset."""
    if len(set(shown.values())) == 1:
        return next(iter(shown.values()))
    return ", ".join(f"{value} with {preset}" for preset, value in shown.items())


def _preset_defaults(kind: Kind, values: dict[str, Any]) -> str:
    def shown(value: Any) -> str:
        return kind.default_text if value is None and kind.default_text else kind.show(value)

    return _by_preset({preset: shown(value) for preset, value in values.items()})


def _add_settings(
    parser: Any, settings: type[Options] | Options, by_family: dict[str, dict[str, str]]
) -> None:
    """The flags of ``settings``; a setting whose default each task family chooses shows each
    family's (``by_family``: setting, then family, to the default's text)."""
    for name, kind in declared(settings).items():
        default = kind.default_text or kind.show(getattr(settings, name))
        if name in by_family:
            shown = ", ".join(f"{value} for {family}" for family, value in by_family[name].items())
            default += f": {shown}"
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
    _add_section(parser, f"{family.name} task settings", presets, "task")
    _add_algorithm_settings(parser, presets, algorithms)
    _add_section(parser, "training settings", presets, "training")
    _add_run_options(parser)
    renamed = {**family.renamed_options, **TrainSettings.renamed_options}
    for algorithm in algorithms.values():
        renamed.update(algorithm.renamed_options)
    parser.set_defaults(parser=parser, family_type=family, renamed=renamed)


def _add_section(
    parser: argparse.ArgumentParser, title: str, presets: dict[str, RunConfig], section: str
) -> None:
    """The flags of one section of the presets' configs (``task`` or ``training``)."""
    group = parser.add_argument_group(title)
    for name, kind in declared(next(iter(presets.values())).settings()[section]).items():
        values = {preset: getattr(c.settings()[section], name) for preset, c in presets.items()}
        add_flag(group, name, kind, _preset_defaults(kind, values))


def _add_algorithm_settings(
    parser: argparse.ArgumentParser, presets: dict[str, RunConfig], algorithms: dict[str, Any]
) -> None:
    """One flag for each hyper-parameter name of any algorithm; its default is the preset's
    (carried over to an algorithm that shares the name) or the first owner's own."""
    group = parser.add_argument_group("algorithm settings")
    for name in dict.fromkeys(n for algorithm in algorithms.values() for n in declared(algorithm)):
        owners = {
            a: declared(other)[name] for a, other in algorithms.items() if name in declared(other)
        }
        kind = next(iter(owners.values()))
        values = {
            preset: getattr(config.with_algorithm(next(iter(owners))).algorithm, name)
            for preset, config in presets.items()
        }
        # Algorithms sharing a flag may describe it each in their own words.
        helps = {a: other.help for a, other in owners.items()}
        if len(set(helps.values())) > 1:
            kind = dataclasses.replace(kind, help="; ".join(f"{a}: {h}" for a, h in helps.items()))
        owned = "" if len(owners) == len(algorithms) else f"; {', '.join(owners)} only"
        add_flag(group, name, kind, _preset_defaults(kind, values) + owned)


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
            "       metajax train --config FILE [RUN OPTIONS]\n"
            "       metajax train --resume RUN_DIR [RUN OPTIONS but "
            + ", ".join(flag_name(name) for name in NOT_WHEN_RESUMING)
            + "]"
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
    train.set_defaults(parser=train, train_parser=train, renamed={})

    plot = commands.add_parser(
        "plot",
        allow_abbrev=False,
        help="redraw a run's figures",
        description="Redraw adaptation.png and meta_loss.png from a run directory.",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train")
    _add_settings(plot, run_figures.PlotSettings, {})
    plot.set_defaults(parser=plot, renamed={})

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
    _add_settings(evaluate, harness.EvalSettings, harness.family_defaults())
    evaluate.add_argument(
        "--out", metavar="DIR", help="write eval.json and eval.png here (default: RUN_DIR)"
    )
    evaluate.add_argument("--no-plots", action="store_true", help="do not draw eval.png")
    evaluate.set_defaults(parser=evaluate, renamed=harness.EvalSettings.renamed_options)

    adapt = commands.add_parser(
        "adapt",
        allow_abbrev=False,
        help="adapt a trained image classifier to your images and classify new ones",
        description=(
            "Adapt a trained run of an image family (images, omniglot) to your own few-shot "
            "task and classify new images. --support DIR holds one folder of images per class, "
            "as many classes as the run's N-way tasks; --query DIR holds the images to "
            "classify. Images may have any size and any format Pillow reads. Prints each query "
            "image's predicted class and its probability; --out FILE also writes them as CSV "
            "or JSON (by the suffix)."
        ),
    )
    adapt.add_argument("run_dir", metavar="RUN_DIR", help="a finished run of an image family")
    adapt.add_argument(
        "--support", required=True, metavar="DIR", help="one folder of images per class"
    )
    adapt.add_argument("--query", required=True, metavar="DIR", help="the images to classify")
    adapt.add_argument(
        "--adapt-steps",
        type=int,
        metavar="N",
        help="inner steps on the support images (default: the run's training inner steps)",
    )
    adapt.add_argument("--out", metavar="FILE", help="write the predictions to FILE.csv or .json")
    adapt.set_defaults(parser=adapt, renamed={})

    data = commands.add_parser(
        "data",
        allow_abbrev=False,
        help="download a dataset",
        description=(
            "Download a dataset's official archives, check their MD5 sums and unpack them into "
            "DIR, atomically: 'metajax data omniglot DIR' fetches Omniglot's images_background "
            "and images_evaluation (then: metajax train omniglot --data DIR). Offline, it says "
            "which files to put where by hand."
        ),
    )
    data.add_argument("dataset", choices=("omniglot",), help="the dataset")
    data.add_argument("dir", metavar="DIR", help="where to put it")
    data.add_argument("--no-progress", action="store_true", help="do not show download progress")
    data.set_defaults(parser=data, renamed={})
    return parser


# The options of registry.RUN_OPTIONS: where a new run goes, what it runs on and what it shows.
_RUN_OPTION_HELP: dict[str, dict[str, Any]] = {
    "out": {"metavar": "DIR", "help": "run directory (default: runs/NAME)"},
    "name": {"help": "run name, for runs/NAME (default: FAMILY-PRESET-TIME)"},
    "overwrite": {"help": "replace the files of an earlier run in DIR, its checkpoints included"},
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
NOT_WHEN_RESUMING = ("out", "name", "overwrite")

# The options of registry.PROCESS_OPTIONS; see metajax.multi_process.
_PROCESS_OPTION_HELP: dict[str, dict[str, Any]] = {
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
}


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Where a new run goes, what it runs on and what it shows; accepted before FAMILY and
    after it. The defaults are left out of the namespace (SUPPRESS), so that FAMILY's parser
    keeps values given before it; read them with :func:`run_option`."""
    for title, names, helps in (
        ("run options", registry.RUN_OPTIONS, _RUN_OPTION_HELP),
        ("multi-process options", registry.PROCESS_OPTIONS, _PROCESS_OPTION_HELP),
    ):
        group = parser.add_argument_group(title)
        for name in names:
            arguments = {"action": "store_true", **helps[name]}
            if "metavar" in arguments or name == "name":
                del arguments["action"]
            group.add_argument(flag_name(name), default=argparse.SUPPRESS, **arguments)


def run_option(args: argparse.Namespace, name: str) -> Any:
    """The value of a run option or a multi-process option, or its default."""
    valued = ("out", "name", "devices", "tensorboard", *registry.PROCESS_OPTIONS[1:])
    return getattr(args, name, None if name in valued else False)


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


def renamed_hint(args: argparse.Namespace, extras: list[str]) -> str:
    """Says what flags renamed since metajax 0.1 are called now."""
    renamed = {flag_name(old): flag_name(new) for old, new in args.renamed.items()}
    flags = [extra.split("=")[0] for extra in extras]
    hints = [f"{flag} is now {renamed[flag]}" for flag in flags if flag in renamed]
    return f" ({'; '.join(hints)})" if hints else ""
