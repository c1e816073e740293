"""Is multi-step adaptation on the MAML paper's sinusoids stable? Five seeds of each setting.

Trains each configuration below with seeds 0 to 4 (70 000 meta-steps each, as in the paper)
and evaluates every run on the same 600 held-out tasks, K = 5 and 10, after 1, 5 and 10 steps
with the step sizes it was trained with: the mean and median query MSE over tasks, and how
many tasks diverged. A task diverged when its MSE is not finite or above 100, the error of a
prediction off by twice the largest amplitude everywhere (a hard task stays far below: the
worst that MAML's finn2017-code runs score is about 26, at 5 query points, before any step).
A run whose meta-training itself diverges is recorded as such.

The two presets: finn2017 (inner step size 0.01, as the paper's text says; scored here on 100
query points per task) and finn2017-code (0.001, as the paper's code runs it; scored on K query
points per task, as that code does). Runs already in --out are evaluated again, not retrained,
so the script can be stopped and rerun, or given more configurations.

Run:  python benchmarks/sinusoid_stability.py [--configs NAME ...] [--seeds 5] [--out DIR]
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np

import metajax
from metajax.evaluation.curves import held_out_tasks, run_curves
from metajax.runs.loaded_run import load

SEEDS = 5
STEPS = (1, 5, 10)
SHOTS = (5, 10)
DIVERGED_ABOVE = 100.0  # (2 A_max)^2
PAPER_5_SHOT = (0.67, 0.38, 0.35)


def configurations() -> dict[str, tuple[metajax.RunConfig, str | None]]:
    """Name -> (run config with seed 0, eval query points: None for the family's, "shots")."""
    presets = metajax.presets("sinusoid")
    configs: dict[str, tuple[metajax.RunConfig, str | None]] = {}
    for preset, query in (("finn2017", None), ("finn2017-code", "shots")):
        base = presets[preset]
        lr = base.algorithm.inner_lr
        configs[f"{preset}/maml"] = (base, query)
        configs[f"{preset}/maml-5-steps"] = (base.replace(inner_steps=5), query)
        meta_sgd = base.with_algorithm("meta-sgd").replace(initial_lr=lr)
        configs[f"{preset}/meta-sgd"] = (meta_sgd, query)
        # MAML++'s multi-step loss alone (fixed step sizes; the MLP has no batch norm), its
        # weights annealing over the whole run.
        msl = base.with_algorithm("maml++").replace(
            initial_lr=lr, inner_steps=5, learn_step_sizes=False, anneal_steps=70000
        )
        configs[f"{preset}/maml++-msl-5-steps"] = (msl, query)
    return configs


def per_task_mse(run_dir: Path, shots: int, query: str | None) -> np.ndarray:
    """The query MSE of each of the 600 test tasks after 0..10 steps: [600, 11]."""
    run = load(run_dir)
    settings = metajax.EvalSettings(shots=(shots,), adapt_steps=max(STEPS), query_shots=query)
    which = held_out_tasks(run.config.task, settings, shots)
    curves = run_curves(run, which, max(STEPS), None)
    return curves["mse"][0]


def summarise(mse: np.ndarray) -> dict[str, list]:
    chosen = mse[:, list(STEPS)]
    diverged = ~np.isfinite(chosen) | (chosen > DIVERGED_ABOVE)
    with np.errstate(invalid="ignore", over="ignore"):
        means = [float(m) if np.isfinite(m) else None for m in chosen.mean(axis=0)]
    medians = np.median(np.where(np.isfinite(chosen), chosen, np.inf), axis=0)
    return {"mean": means, "median": medians.tolist(), "diverged": diverged.sum(0).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    known = configurations()
    parser.add_argument("--configs", nargs="+", default=list(known), choices=list(known))
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--out", type=Path, default=Path("runs/sinusoid-stability"))
    args = parser.parse_args()

    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in args.configs:
        config, query = known[name]
        for seed in range(args.seeds):
            run_dir = args.out / name.replace("/", "-") / f"seed{seed}"
            known_failure = results.get(name, {}).get(str(seed), {})
            if "training_diverged" in known_failure:
                continue
            if not (run_dir / "summary.json").exists():
                try:
                    metajax.train(
                        config.replace(seed=seed), run_dir, overwrite=True, progress=False
                    )
                except metajax.Diverged as error:
                    row = {"training_diverged": str(error).split(";")[0]}
                    results.setdefault(name, {})[str(seed)] = row
                    print(name, seed, json.dumps(row), flush=True)
                    results_path.write_text(json.dumps(results, indent=1))
                    continue
            summary = json.loads((run_dir / "summary.json").read_text())
            row = {"steps_per_second": summary["meta_steps_per_second"]}
            for shots in SHOTS:
                row[f"{shots}-shot"] = summarise(per_task_mse(run_dir, shots, query))
            results.setdefault(name, {})[str(seed)] = row
            print(name, seed, json.dumps(row), flush=True)
            results_path.write_text(json.dumps(results, indent=1))
    print_table(results)


def print_table(results: dict) -> None:
    """One row per configuration and K: each step's mean over tasks for every seed ("div."
    where a task's MSE is not finite, "training div." where meta-training diverged), the
    largest median of the seeds, and the diverged tasks of every seed."""
    print("| configuration | K | step | mean MSE, seeds 0-4 | worst median | diverged tasks |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, seeds in results.items():
        runs = [seeds[s] for s in sorted(seeds, key=int)]
        trained = [run for run in runs if "training_diverged" not in run]
        for shots in SHOTS:
            for index, step in enumerate(STEPS):
                means, diverged = [], []
                for run in runs:
                    if "training_diverged" in run:
                        means.append("training div.")
                        diverged.append("-")
                        continue
                    mean = run[f"{shots}-shot"]["mean"][index]
                    means.append("div." if mean is None else f"{mean:.3f}")
                    diverged.append(str(run[f"{shots}-shot"]["diverged"][index]))
                median = max(
                    (run[f"{shots}-shot"]["median"][index] for run in trained), default=math.nan
                )
                print(
                    f"| {name} | {shots} | {step} | {' '.join(means)} | {median:.3f} | "
                    f"{' '.join(diverged)} |"
                )


if __name__ == "__main__":
    main()
