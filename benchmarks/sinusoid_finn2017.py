"""Reproduces the sinusoid regression results of Finn et al. (2017) and prints the README table.

Trains MAML with the paper's settings (preset finn2017: A in [0.1, 5], K = 10 support and 10
query points, meta-batch 25, inner step size 0.01, one inner step, Adam 1e-3, 70000
meta-steps) for several seeds, and the pretrained baseline once; evaluates every run with the
default harness (600 held-out tasks, K = 5, 10, 20, 0 to 10 steps, 100 query points, the
baseline's step size chosen on validation tasks), and prints the figures with the wall times.

Run:  python benchmarks/sinusoid_finn2017.py [--seeds 3] [--out runs/finn2017]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import metajax

# The 5-shot figures the project's issue cites from Finn et al. (2017), and the step sizes
# (MAML's alpha; the baseline's from the legend of the paper's Figure 3).
PAPER_5_SHOT = {"MAML": (0.01, (0.67, 0.38, 0.35)), "pretrained": (0.01, (2.41, 2.23, 2.19))}
REPORTED_STEPS = (1, 5, 10)


def train_and_evaluate(config, out: Path, baseline: Path | None = None) -> dict:
    """Trains in this process; times the default `metajax eval` as a user runs it, in a fresh
    process; then, with a baseline, evaluates again to draw both in eval.json and eval.png."""
    start = time.perf_counter()
    summary = metajax.train(config, out, overwrite=True, progress=False)
    trained = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "metajax", "eval", str(out)], check=True, capture_output=True
    )
    evaluated = time.perf_counter()
    baselines = {} if baseline is None else {"baseline": baseline}
    return {
        "summary": summary,
        "report": metajax.evaluate(out, **baselines),
        "train_wall_seconds": trained - start,
        "eval_wall_seconds": evaluated - trained,
    }


def cell(result: dict, step: int) -> str:
    mean, ci95 = result["mse_mean"][step], result["mse_ci95"][step]
    if mean is None:
        diverged = result["non_finite"][step]
        return f"diverged on {diverged} task{'s' * (diverged > 1)}"
    return f"{mean:.3f} ± {ci95:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="MAML runs, seeds 0, 1, ...")
    parser.add_argument("--out", type=Path, default=Path("runs/finn2017"))
    args = parser.parse_args()

    finn2017 = metajax.presets("sinusoid")["finn2017"]
    pretrained = train_and_evaluate(finn2017.with_algorithm("pretrain"), args.out / "pretrain")
    runs = [
        train_and_evaluate(
            finn2017.replace(seed=seed),
            args.out / f"maml-seed{seed}",
            baseline=args.out / "pretrain",
        )
        for seed in range(args.seeds)
    ]

    print(
        "| run | K | step size | "
        + " | ".join(f"{s} step{'s' * (s > 1)}" for s in REPORTED_STEPS)
        + " |"
    )
    print("| --- | --- | --- | " + " | ".join("---" for _ in REPORTED_STEPS) + " |")
    rows = [(f"MAML, seed {seed}", run["report"]) for seed, run in enumerate(runs)]
    rows.append(("pretrained, seed 0", pretrained["report"]))
    for name, report in rows:
        for result in report["results"]:
            step_size = f"{result['inner_lr']:g}" + (
                " (validation)" if result["inner_lr_from"] == "validation" else ""
            )
            cells = " | ".join(cell(result, step) for step in REPORTED_STEPS)
            print(f"| {name} | {result['shots']} | {step_size} | {cells} |")
    for name, (step_size, values) in PAPER_5_SHOT.items():
        cells = " | ".join(f"{value:.2f}" for value in values)
        print(f"| {name}, Finn et al. (2017) | 5 | {step_size:g} | {cells} |")

    print()
    for name, run in [
        *((f"MAML seed {s}", r) for s, r in enumerate(runs)),
        ("pretrained", pretrained),
    ]:
        summary = run["summary"]
        print(
            f"{name}: training {run['train_wall_seconds']:.1f} s wall "
            f"({summary['meta_steps_per_second']:,.0f} meta-steps/s, compile "
            f"{summary['compile_seconds']:.1f} s, plots included), `metajax eval` "
            f"{run['eval_wall_seconds']:.1f} s wall; final meta-loss "
            f"{summary['final_meta_loss']:.4f}"
        )
        five = run["report"]["results"][0]
        medians = ", ".join(str(round(five["mse_median"][s], 3)) for s in REPORTED_STEPS)
        print(
            f"  5-shot median MSE after 1, 5, 10 steps: {medians}; "
            f"tasks diverged: {[five['non_finite'][s] for s in REPORTED_STEPS]}"
        )
    print(
        f"mean over seeds, 5-shot after 1 step: "
        f"{np.mean([r['report']['results'][0]['mse_mean'][1] for r in runs]):.3f}"
    )


if __name__ == "__main__":
    main()
