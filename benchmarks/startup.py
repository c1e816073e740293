"""The whole process of the README's first command, as a user waits for it: ``metajax train
sinusoid`` (20 000 meta-steps, figures and files included), cold (an empty compilation cache)
and warm (the cache a first run filled), against the tutorial's own loop (ported to current
JAX, ``sinusoid_throughput.run_tutorial``) doing the same 20 000 meta-steps in a process of
its own, from the start of the process to its exit, in the same run of this script; median of
``--runs`` processes each. Also ``metajax --help`` and ``metajax train sinusoid --help``, cold
(nothing kept in metajax's cache folder: the parser is built, which imports JAX) and warm (the
pages a first command kept there).

Run:  python benchmarks/startup.py [--runs 5] [--tutorial-runs 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TUTORIAL = (
    "import sys; sys.path.insert(0, {here!r}); from sinusoid_throughput import run_tutorial; "
    "run_tutorial(20000, ceiling=False)"
)


def seconds(command: list[str], env: dict[str, str]) -> float:
    """Wall-clock seconds of one process, from its start to its exit."""
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="processes of each metajax kind")
    parser.add_argument("--tutorial-runs", type=int, default=5, help="tutorial processes")
    args = parser.parse_args()
    # Python's bytecode cache on, as a user has it: a process that may not write it (this
    # project's machines set PYTHONDONTWRITEBYTECODE) compiles metajax's own modules anew each
    # time, about 0.1 s here (the installer compiled those of its dependencies).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JAX_COMPILATION_CACHE") and k != "PYTHONDONTWRITEBYTECODE"
    }
    times: dict[str, list[float]] = {"cold": [], "warm": [], "tutorial loop": []}
    helps = ("--help", "train sinusoid --help")
    help_times: dict[str, list[float]] = {
        f"{line} {kind}": [] for line in helps for kind in ("cold", "warm")
    }
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        env["METAJAX_CACHE"] = str(root / "cache")  # not the user's: the help pages kept too
        train = [sys.executable, "-m", "metajax", "train", "sinusoid", "--no-progress"]
        warm_cache = str(root / "warm-cache")
        seconds(
            [*train, "--out", str(root / "fill")], {**env, "METAJAX_COMPILATION_CACHE": warm_cache}
        )
        tutorial = [sys.executable, "-c", TUTORIAL.format(here=str(HERE))]
        # Interleaved, so that a slower stretch of the machine touches every kind alike.
        for run in range(max(args.runs, args.tutorial_runs)):
            if run < args.runs:
                cold = {**env, "METAJAX_COMPILATION_CACHE": str(root / f"cold-cache-{run}")}
                times["cold"].append(seconds([*train, "--out", str(root / f"cold-{run}")], cold))
                warm = {**env, "METAJAX_COMPILATION_CACHE": warm_cache}
                times["warm"].append(seconds([*train, "--out", str(root / f"warm-{run}")], warm))
            if run < args.tutorial_runs:
                times["tutorial loop"].append(seconds(tutorial, env))
            for index, line in enumerate(helps):
                words = [sys.executable, "-m", "metajax", *line.split()]
                empty = {**env, "METAJAX_CACHE": str(root / f"help-{run}-{index}")}
                help_times[f"{line} cold"].append(seconds(words, empty))
                help_times[f"{line} warm"].append(seconds(words, env))
    times.update(help_times)
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    for kind, values in times.items():
        listed = ", ".join(f"{value:.2f}" for value in values)
        print(f"{kind:>27}: median {medians[kind]:.2f} s ({listed})")
    loop = medians["tutorial loop"]
    print(
        f"the tutorial loop's process takes {loop / medians['cold']:.1f}x as long as metajax's "
        f"cold and {loop / medians['warm']:.1f}x its warm"
    )


if __name__ == "__main__":
    main()
