"""Every algorithm of the MAML family on the same benchmarks, with the same evaluation.

Trains each algorithm on the MAML paper's sinusoids (preset finn2017) and on Omniglot 5-way
1-shot (preset small-5way, trained on --omniglot-data and tested on --omniglot-test-data),
then evaluates every run with the default harness on the same 600 held-out tasks: the
sinusoids' query MSE at K = 5 and 10 after 1 and 10 steps, Omniglot's accuracy after 1 and 3
steps, each with its 95% confidence interval. Each row also gives the meta-steps per second
of training (summary.json) and the memory one meta-step needs as XLA compiles it (its
arguments, outputs and temporary buffers: memory_analysis()), and the table ends with the
device. Prints the README's table in Markdown.

Run:  python benchmarks/compare_algorithms.py [--sinusoid-steps 70000] [--omniglot-steps 15000]
          [--omniglot-data images_background_small1.zip]
          [--omniglot-test-data images_background_small2.zip] [--out runs/compare]
"""

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import jax

import metajax
from metajax.runs.setup import build

Variant = Callable[[metajax.RunConfig], metajax.RunConfig]


def algorithms(meta_steps: int) -> dict[str, Variant]:
    """Each algorithm as a change of a preset (whose MAML step size the others start from)."""

    def lr(config: metajax.RunConfig) -> float:
        return config.algorithm.inner_lr

    return {
        "MAML": lambda c: c,
        "first-order MAML": lambda c: c.replace(first_order=True),
        "Reptile (5 steps)": lambda c: c.with_algorithm("reptile").replace(inner_steps=5),
        "Meta-SGD": lambda c: c.with_algorithm("meta-sgd").replace(initial_lr=lr(c)),
        "ANIL": lambda c: c.with_algorithm("anil"),
        "MAML++ (5 steps)": lambda c: c.with_algorithm("maml++").replace(
            initial_lr=lr(c), inner_steps=5, anneal_steps=meta_steps // 10
        ),
        "iMAML (10 steps)": lambda c: c.with_algorithm("imaml").replace(
            inner_lr=lr(c), inner_steps=10, prox_lambda=1.0
        ),
        "pretrained": lambda c: c.with_algorithm("pretrain"),
    }


def meta_step_bytes(config: metajax.RunConfig) -> int:
    """What one meta-step's compiled meta-gradient holds at once: arguments, outputs and
    temporary buffers."""
    setup = build(config)
    meta_params = setup.learner.init(setup.params)
    tasks = setup.sample_tasks(jax.random.key(0))
    schedule = (jax.numpy.int32(0),) if setup.learner.uses_meta_step else ()
    compiled = jax.jit(setup.learner.meta_grad).lower(meta_params, tasks, *schedule).compile()
    analysis = compiled.memory_analysis()
    return (
        analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
        + analysis.temp_size_in_bytes
    )


def run(config: metajax.RunConfig, out: Path, settings: metajax.EvalSettings) -> dict:
    """Trains (unless done), evaluates; a run whose meta-training diverges is reported so."""
    row: dict = {"memory_mib": meta_step_bytes(config) / 2**20}
    if not (out / "summary.json").exists():
        try:
            metajax.train(config, out, overwrite=True, progress=False, plots=False)
        except metajax.Diverged as error:
            return {**row, "diverged": str(error).split(";")[0]}
    summary = json.loads((out / "summary.json").read_text())
    report = metajax.evaluate(out, settings, write=False)
    return {**row, "steps_per_second": summary["meta_steps_per_second"], "results": report}


def cell(result: dict, metric: str, step: int, scale: float) -> str:
    mean, ci95 = result[f"{metric}_mean"][step], result[f"{metric}_ci95"][step]
    if mean is None:
        return f"diverged ({result['non_finite'][step]} tasks)"
    return (
        f"{scale * mean:.3f} ± {scale * ci95:.3f}"
        if scale == 1
        else (f"{scale * mean:.1f} ± {scale * ci95:.1f}%")
    )


def print_table(rows: dict[str, dict]) -> None:
    """The README's table, from the rows of compare.json."""
    print(
        f"\n| algorithm | sinusoid 5-shot, 1 step | 5-shot, 10 steps | 10-shot, 1 step | "
        f"10-shot, 10 steps | steps/s | MiB | Omniglot 5-way 1-shot, 1 step | 3 steps | "
        f"steps/s | MiB |\n|{' --- |' * 11}"
    )
    for name, families in rows.items():
        cells = [name]
        for family, metric, picks in (
            ("sinusoid", "mse", ((0, 1), (0, 10), (1, 1), (1, 10))),
            ("omniglot", "accuracy", ((0, 1), (0, 3))),
        ):
            result = families.get(family)
            if result is None:
                cells += ["not run"] * (len(picks) + 2)
                continue
            if "diverged" in result:
                cells += ["meta-training diverged"] * len(picks) + [
                    "",
                    f"{result['memory_mib']:.1f}",
                ]
                continue
            scale = 100.0 if metric == "accuracy" else 1
            cells += [cell(result["results"]["results"][k], metric, s, scale) for k, s in picks]
            cells += [f"{result['steps_per_second']:,.0f}", f"{result['memory_mib']:.1f}"]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sinusoid-steps", type=int, default=70000)
    parser.add_argument("--omniglot-steps", type=int, default=15000)
    parser.add_argument("--omniglot-data", default="images_background_small1.zip")
    parser.add_argument("--omniglot-test-data", default="images_background_small2.zip")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--families", nargs="+", default=["sinusoid", "omniglot"])
    parser.add_argument(
        "--algorithms", nargs="+", help="names as in the table, run in this order (default: all)"
    )
    args = parser.parse_args()

    benchmarks = {
        "sinusoid": (
            metajax.presets("sinusoid")["finn2017"].replace(meta_steps=args.sinusoid_steps),
            metajax.EvalSettings(shots=(5, 10), adapt_steps=10),
            args.sinusoid_steps,
        ),
        "omniglot": (
            metajax.presets("omniglot")["small-5way"].replace(
                data=args.omniglot_data,
                test_data=args.omniglot_test_data,
                meta_steps=args.omniglot_steps,
            ),
            metajax.EvalSettings(shots=(1,), adapt_steps=3),
            args.omniglot_steps,
        ),
    }
    results_path = args.out / "compare.json"
    rows: dict[str, dict] = json.loads(results_path.read_text()) if results_path.exists() else {}
    for family in args.families:
        preset, settings, steps = benchmarks[family]
        known = algorithms(steps)
        # In the order asked for: cheap runs first when device time is short.
        for name in args.algorithms or list(known):
            variant = known[name]
            slug = name.split(" (")[0].lower().replace(" ", "-")
            result = run(variant(preset), args.out / family / slug, settings)
            rows.setdefault(name, {})[family] = result
            print(family, name, json.dumps(result, default=str)[:300], flush=True)
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(rows, indent=1, default=str))

    print_table(rows)
    device = jax.devices()[0]
    print(f"\n{device.platform}: {device.device_kind}, jax {jax.__version__}")


if __name__ == "__main__":
    main()
