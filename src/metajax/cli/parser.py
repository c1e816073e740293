"""The parser of the ``metajax`` command: one subcommand each for ``train``, ``plot``, ``eval``,
``adapt`` and ``data``, and under ``train`` one for each registered task family.

Each subparser records itself in the namespace as ``parser`` (for errors in its usage) and the
settings renamed since metajax 0.1 as ``renamed`` (for hints on unknown flags).
"""

import argparse
from importlib.metadata import version

from metajax.cli.flags import add_family_settings, add_settings, flag_name, renamed_settings
from metajax.cli.run_options import NOT_WHEN_RESUMING, add_run_options
from metajax.config import registry
from metajax.config.family import TaskFamily
from metajax.evaluation.settings import EvalSettings, family_defaults
from metajax.runs.figures import PlotSettings


def build_parser() -> argparse.ArgumentParser:
    """The ``metajax`` command's parser, with the families and algorithms registered now."""
    # No abbreviated flags: metajax 0.1's --steps would silently mean --steps-per-call.
    parser = argparse.ArgumentParser(
        prog="metajax", description="Gradient-based meta-learning in JAX.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"metajax {version('metajax')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands)
    _add_plot(commands)
    _add_eval(commands)
    _add_adapt(commands)
    _add_data(commands)
    return parser


def _add_train(commands: argparse._SubParsersAction) -> None:
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
    add_run_options(train)
    families = train.add_subparsers(dest="family", metavar="FAMILY", prog="metajax train")
    for family in registry.families().values():
        _add_family(families, family)
    train.set_defaults(parser=train, train_parser=train, renamed={})


def _add_family(families: argparse._SubParsersAction, family: type[TaskFamily]) -> None:
    parser = families.add_parser(
        family.name,
        allow_abbrev=False,
        help=family.description.split(": ")[0].split(". ")[0].rstrip("."),
        description=(
            f"{family.description} Writes a run directory with config.json, metrics.jsonl, "
            "checkpoints/, params.eqx, adaptation.png, meta_loss.png and summary.json."
        ),
    )
    add_family_settings(parser, family)
    add_run_options(parser)
    parser.set_defaults(parser=parser, family_type=family, renamed=renamed_settings(family))


def _add_plot(commands: argparse._SubParsersAction) -> None:
    plot = commands.add_parser(
        "plot",
        allow_abbrev=False,
        help="redraw a run's figures",
        description="Redraw adaptation.png and meta_loss.png from a run directory.",
    )
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train")
    add_settings(plot, PlotSettings, {})
    plot.set_defaults(parser=plot, renamed={})


def _add_eval(commands: argparse._SubParsersAction) -> None:
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
    add_settings(evaluate, EvalSettings, family_defaults())
    evaluate.add_argument(
        "--out", metavar="DIR", help="write eval.json and eval.png here (default: RUN_DIR)"
    )
    evaluate.add_argument("--no-plots", action="store_true", help="do not draw eval.png")
    evaluate.set_defaults(parser=evaluate, renamed=EvalSettings.renamed_options)


def _add_adapt(commands: argparse._SubParsersAction) -> None:
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


def _add_data(commands: argparse._SubParsersAction) -> None:
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
