"""Meta-steps per second of the installed metajax against another git revision, in one process.

Both versions train the default run, the tutorial preset (20000 meta-steps, meta-batch 4,
K = 20 support and 20 query points, one inner step, second order, Adam 1e-3, 1000 meta-steps
per compiled call), through their own API, in alternating rounds: several of each, in the same
process, so that both see the same machine, the same JAX and the same load. Only the compiled
training is timed (``meta_train``'s ``train_seconds``), not compilation. Each version's setup is
built once and every round starts from the same initial state, so every round of a version
does the same work; the final meta-losses of the two should agree.

The other revision's ``src/metajax`` is taken with ``git archive`` into a temporary directory and
imported as ``metajax_rev``: its ``metajax`` imports and module references are rewritten to that
name (``importlib.metadata.version("metajax")`` is left alone: the distribution installed is
named metajax). Revisions before the ``RunConfig`` API (no ``metajax.presets``) are driven
through ``metajax.experiments.sinusoid``.

Run:  python benchmarks/compare_versions.py [--rev HEAD] [--rounds 5]
"""

import argparse
import importlib
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from types import ModuleType

import jax
import numpy as np

import metajax

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "metajax_rev"
LAST = 1000  # the final meta-loss is the mean over the last LAST meta-steps

# `from metajax ...`, `import metajax ...`, and `metajax.<name>` not preceded by a word or a dot.
_IMPORT = re.compile(r"\b(from|import)(\s+)metajax\b")
_REFERENCE = re.compile(r"(?<![\w.])metajax\.(?=\w)")


def import_revision(rev: str, into: Path) -> ModuleType:
    """``src/metajax`` of git revision ``rev``, imported as ``metajax_rev`` from ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "src/metajax"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into / "archive", filter="data")
    package = into / PACKAGE
    shutil.copytree(into / "archive" / "src" / "metajax", package)
    for path in package.rglob("*.py"):
        source = path.read_text()
        source = _IMPORT.sub(rf"\1\2{PACKAGE}", source)
        path.write_text(_REFERENCE.sub(f"{PACKAGE}.", source))
    sys.path.insert(0, str(into))
    return importlib.import_module(PACKAGE)


def tutorial_trainer(module: ModuleType) -> Callable[[], tuple[float, float]]:
    """``train() -> (meta-steps/s, final meta-loss)``: one run of the tutorial preset with
    ``module``'s own API, from a setup built once."""
    name = module.__name__
    if hasattr(module, "presets"):  # the RunConfig API
        try:  # metajax 0.2 built a run's setup in runs.py, later versions in runs/setup.py
            building = importlib.import_module(f"{name}.runs.setup")
        except ModuleNotFoundError:
            building = importlib.import_module(f"{name}.runs")
        config = module.presets("sinusoid")["tutorial"]
        setup = building.build(config)
        optimizer = setup.optimizer
        state = setup.initial_state  # a method before the initial state was built with the rest
        state = state() if callable(state) else state
        steps, steps_per_call = config.training.meta_steps, config.training.steps_per_call
        steps_argument = "meta_steps"
    else:  # metajax 0.1: metajax.experiments.sinusoid
        import equinox as eqx
        import optax

        sinusoid = importlib.import_module(f"{name}.experiments.sinusoid")
        config = sinusoid.SinusoidConfig()
        setup = sinusoid.build(config)
        params, _ = eqx.partition(setup.model, eqx.is_inexact_array)
        optimizer = optax.adam(config.meta_lr)
        state = module.init_train_state(setup.learner, optimizer, params, setup.train_key)
        steps, steps_per_call = config.steps, config.steps_per_call
        steps_argument = "num_steps"

    def train() -> tuple[float, float]:
        result = module.meta_train(
            setup.learner,
            optimizer,
            setup.sample_tasks,
            state,
            steps_per_call=steps_per_call,
            progress=False,
            **{steps_argument: steps},
        )
        return steps / result.train_seconds, float(np.mean(result.losses[-LAST:]))

    return train


def revision_label(rev: str) -> str:
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", rev],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{rev} ({commit})" if commit != rev else rev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="the git revision to compare against")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each version")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="metajax-rev-") as tmp:
        other = import_revision(args.rev, Path(tmp))
        versions = {
            "old": (f"metajax at {revision_label(args.rev)}", tutorial_trainer(other)),
            "new": (f"installed metajax {metajax.__version__}", tutorial_trainer(metajax)),
        }
        print(
            f"jax {jax.__version__} on {jax.devices()[0].platform}; the tutorial preset, "
            f"{args.rounds} rounds of each, alternating"
        )
        for key, (label, _) in versions.items():
            print(f"  {key}: {label}")
        speeds: dict[str, list[float]] = {key: [] for key in versions}
        losses: dict[str, list[float]] = {key: [] for key in versions}
        for round_ in range(args.rounds):
            # Each round alternates which version goes first, so drift hits both alike.
            order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
            for key in order:
                speed, loss = versions[key][1]()  # compiles first, untimed
                speeds[key].append(speed)
                losses[key].append(loss)
            print(
                f"round {round_ + 1}: "
                + ", ".join(f"{key} {speeds[key][-1]:,.0f}" for key in versions)
                + " meta-steps/s"
            )

    medians = {key: statistics.median(values) for key, values in speeds.items()}
    for key in versions:
        print(
            f"{key:>4}: median {medians[key]:,.0f} meta-steps/s (min {min(speeds[key]):,.0f}, "
            f"max {max(speeds[key]):,.0f}); final meta-loss (mean of the last {LAST} steps) "
            + ", ".join(sorted({f"{loss:.6f}" for loss in losses[key]}))
        )
    print(f"new/old: {medians['new'] / medians['old']:.3f}")


if __name__ == "__main__":
    main()
