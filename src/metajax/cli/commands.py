"""The commands that read a finished run or fetch data: ``metajax plot``, ``eval``, ``adapt``
and ``data``."""

import argparse
import os
import shlex
from pathlib import Path

from metajax._files import FolderError, check_writable_folder
from metajax._validation import OptionError
from metajax.cli import console
from metajax.cli.flags import flag_name, given_settings
from metajax.config import registry
from metajax.data import download
from metajax.evaluation import predict, reports
from metajax.evaluation.harness import evaluate
from metajax.evaluation.settings import EvalSettings
from metajax.runs import run_dir
from metajax.runs.figures import PlotSettings, plot


def plot_command(args: argparse.Namespace) -> int:
    try:
        paths = plot(args.run_dir, **given_settings(args, PlotSettings))
    except OptionError as error:
        args.parser.error(f"argument {flag_name(error.name)}: {error.problem}")
    for path in paths:
        print(f"metajax: wrote {path}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    try:
        settings = EvalSettings(**given_settings(args, EvalSettings))
    except OptionError as error:
        args.parser.error(f"argument {flag_name(error.name)}: {error.problem}")
    try:
        report = evaluate(
            args.run_dir, settings, baseline=args.baseline, out=args.out, plots=not args.no_plots
        )
    except FolderError as error:
        if args.out is not None:
            args.parser.error(f"argument --out: {error}")
        raise FolderError(
            error.path, f"{error.reason}; write the evaluation elsewhere with --out DIR"
        ) from None
    family = registry.family(report["family"])
    for run in (report, report.get("baseline")):
        if run is not None:
            print(reports.format_table(run, family, report["settings"]))
    destination = args.out or args.run_dir
    written = [run_dir.EVAL] + ([] if args.no_plots else [run_dir.EVAL_PLOT])
    print(f"metajax: wrote {' and '.join(os.path.join(destination, f) for f in written)}")
    return 0


def adapt_command(args: argparse.Namespace) -> int:
    if args.out is not None and Path(args.out).suffix.lower() not in (".csv", ".json"):
        args.parser.error(f"argument --out: must end in .csv or .json, got {args.out!r}")
    if args.out is not None:  # checked before any work, as its folder
        if os.path.isdir(args.out):
            args.parser.error(f"argument --out: '{args.out}' is a folder; name a file in it")
        try:
            check_writable_folder(os.path.dirname(args.out) or ".")
        except FolderError as error:
            args.parser.error(f"argument --out: cannot write '{args.out}': {error}")
    try:
        found = predict.adapt_and_predict(
            args.run_dir, args.support, args.query, adapt_steps=args.adapt_steps
        )
    except OptionError as error:
        args.parser.error(f"argument {flag_name(error.name)}: {error.problem}")
    console.note_escaped(args, *(name for p in found for name in (p.image, p.label)))
    shown = [predict.escaped_prediction(p) for p in found]
    width = max(len(p.image) for p in shown)
    for p in shown:
        print(f"{p.image:<{width}}  {p.label}  {p.probability:.3f}")
    if args.out is not None:
        predict.write_predictions(args.out, found)
        print(f"metajax: wrote {args.out}")
    return 0


def data_command(args: argparse.Namespace) -> int:
    if os.path.isfile(args.dir):
        args.parser.error(f"argument DIR: '{args.dir}' is a file; choose a folder for the data")
    try:
        folders = download.fetch(args.dir, progress=not args.no_progress)
    except FolderError as error:
        args.parser.error(f"argument DIR: {error}")
    print(f"metajax: {', '.join(str(f) for f in folders)} ready")
    print(f"metajax: train with: metajax train omniglot --data {shlex.quote(args.dir)}")
    return 0
