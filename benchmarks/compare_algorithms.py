"""Every algorithm on the same benchmarks, each at its own paper's preset, with one evaluation.

On Omniglot 5-way and 20-way 1-shot (trained on --omniglot-data, tested on the held-out
alphabets of --omniglot-test-data) each algorithm trains at its preset ``small-Nway-NAME``
(MAML at ``small-Nway``), and with ``--reference`` also at MAML's settings, as metajax ran
every algorithm before it had presets. On the MAML paper's sinusoids (finn2017) an algorithm
with a preset of its own there (``finn2017-maml++``, ``finn2017-imaml``) runs at it, and also
at MAML's settings; the others start from MAML's settings: no other paper gives sinusoid
settings.
Every run is evaluated with ``metajax eval``'s defaults (each at its own test-time steps) on
the same 600 held-out tasks, mean and 95% confidence interval; each row also gives the
meta-steps per second and the training minutes (summary.json), and the memory one meta-step
holds as XLA compiles it (arguments, outputs and temporary buffers: memory_analysis()).
Finished runs are kept and reused; results accumulate in OUT/compare.json. Prints the
README's tables in Markdown.

Run:  python benchmarks/compare_algorithms.py [--families omniglot-5way omniglot-20way sinusoid]
          [--omniglot-data images_background_small1.zip]
          [--omniglot-test-data images_background_small2_heldout.zip] [--reference]
          [--algorithms protonet reptile ...] [--out runs/compare]
"""

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import jax

import metajax
from metajax.runs.setup import build

Variant = Callable[[metajax.RunConfig], metajax.RunConfig]

PRESET_ALGORITHMS = (
    *("maml", "fomaml", "reptile", "meta-sgd", "anil", "maml++", "imaml", "protonet"),
    "protomaml",
)
"""The algorithms with an Omniglot preset of their paper's settings, in the table's order."""


def maml_settings(meta_steps: int) -> dict[str, Variant]:
    """Each algorithm as a change of a MAML preset (whose step size the others start from):
    how metajax compared them before they had presets of their own."""

    def lr(config: metajax.RunConfig) -> float:
        return config.algorithm.inner_lr

    return {
        "maml": lambda c: c,
        "fomaml": lambda c: c.replace(first_order=True),
        "reptile": lambda c: c.with_algorithm("reptile").replace(inner_steps=5),
        "meta-sgd": lambda c: c.with_algorithm("meta-sgd").replace(initial_lr=lr(c)),
        "anil": lambda c: c.with_algorithm("anil"),
        "maml++": lambda c: c.with_algorithm("maml++").replace(
            initial_lr=lr(c), inner_steps=5, anneal_steps=meta_steps // 10
        ),
        "imaml": lambda c: c.with_algorithm("imaml").replace(
            inner_lr=lr(c), inner_steps=10, prox_lambda=1.0
        ),
        "pretrain": lambda c: c.with_algorithm("pretrain"),
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
    """Trains (unless done), evaluates; a run whose meta-training diverges (a non-finite value,
    or a final meta-loss over 10 times its first) is reported so."""
    row: dict = {"memory_mib": meta_step_bytes(config) / 2**20, "preset": config.preset}
    if not (out / "summary.json").exists():
        try:
            metajax.train(config, out, overwrite=True, progress=False, plots=False)
        except metajax.Diverged as error:
            return {**row, "diverged": str(error).split(";")[0]}
    summary = json.loads((out / "summary.json").read_text())
    if summary.get("diverged"):  # finished, but far above its first meta-loss
        return {**row, "diverged": f"final meta-loss {summary['final_meta_loss']:.3g}"}
    report = metajax.evaluate(out, settings, write=False)
    return {
        **row,
        "steps_per_second": summary["meta_steps_per_second"],
        "minutes": summary["train_seconds"] / 60,
        "results": report,
    }


def cell(result: dict, metric: str, step: int, scale: float) -> str:
    mean, ci95 = result[f"{metric}_mean"][step], result[f"{metric}_ci95"][step]
    if mean is None:
        return f"diverged ({result['non_finite'][step]} tasks)"
    if scale == 1:
        return f"{mean:.3f} ± {ci95:.3f}"
    return f"{scale * mean:.1f} ± {scale * ci95:.1f}%"


def benchmark_configs(args: argparse.Namespace) -> dict[str, dict[str, metajax.RunConfig]]:
    """The runs of each benchmark by row name."""
    benchmarks: dict[str, dict[str, metajax.RunConfig]] = {}
    presets = metajax.presets("omniglot")
    data = {"data": args.omniglot_data, "test_data": args.omniglot_test_data}
    for ways in (5, 20):
        rows = {}
        for name in PRESET_ALGORITHMS:
            preset = f"small-{ways}way" + ("" if name == "maml" else f"-{name}")
            rows[name] = presets[preset].replace(**data)
        if args.reference:
            base = presets[f"small-{ways}way"].replace(**data)
            for name, variant in maml_settings(base.training.meta_steps).items():
                rows.setdefault(name, variant(base))
                rows[f"{name} at MAML's settings"] = variant(base)
        benchmarks[f"omniglot-{ways}way"] = rows
    sinusoid = metajax.presets("sinusoid")
    finn = sinusoid["finn2017"]
    rows = {}
    for name, variant in maml_settings(70000).items():
        own = sinusoid.get(f"finn2017-{name}")  # an algorithm's own preset on these tasks
        rows[name] = variant(finn) if own is None else own
        if own is not None:
            rows[f"{name} at MAML's settings"] = variant(finn)
    benchmarks["sinusoid"] = rows
    return benchmarks


def print_tables(rows: dict[str, dict]) -> None:
    """The README's tables, from compare.json."""
    for family, rows_of in rows.items():
        if family == "sinusoid":
            picks, metric, scale = ((0, 1), (0, 10), (1, 1), (1, 10)), "mse", 1.0
            header = "K=5, 1 step | K=5, 10 steps | K=10, 1 step | K=10, 10 steps"
        else:
            picks, metric, scale = ((0, None),), "accuracy", 100.0
            header = "1-shot accuracy (test steps)"
        print(f"\n{family}\n\n| algorithm | preset | {header} | steps/s | minutes | MiB |")
        print("|" + " --- |" * (5 + len(picks)))
        for name, result in rows_of.items():
            cells = [name, result.get("preset") or ""]
            if "diverged" in result:
                cells += ["meta-training diverged"] * len(picks) + ["", ""]
            else:
                report = result["results"]
                for k, step in picks:
                    last = report["settings"]["adapt_steps"] if step is None else step
                    text = cell(report["results"][k], metric, last, scale)
                    cells.append(text if step is not None else f"{text} ({last})")
                cells += [f"{result['steps_per_second']:,.1f}", f"{result['minutes']:.1f}"]
            cells.append(f"{result['memory_mib']:.1f}")
            print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--families", nargs="+", default=["omniglot-5way", "omniglot-20way", "sinusoid"]
    )
    parser.add_argument("--omniglot-data", default="images_background_small1.zip")
    parser.add_argument("--omniglot-test-data", default="images_background_small2_heldout.zip")
    parser.add_argument("--reference", action="store_true", help="also at MAML's settings")
    parser.add_argument("--algorithms", nargs="+", help="row names, run in this order")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    args = parser.parse_args()

    evaluation = {
        "sinusoid": metajax.EvalSettings(shots=(5, 10), adapt_steps=10),
        "omniglot-5way": metajax.EvalSettings(shots=(1,)),
        "omniglot-20way": metajax.EvalSettings(shots=(1,)),
    }
    results_path = args.out / "compare.json"
    rows: dict[str, dict] = json.loads(results_path.read_text()) if results_path.exists() else {}
    every = benchmark_configs(args)
    for family in args.families:
        configs = every[family]
        for name in args.algorithms or list(configs):
            slug = name.replace(" ", "-").replace("'", "")
            result = run(configs[name], args.out / family / slug, evaluation[family])
            rows.setdefault(family, {})[name] = result
            print(family, name, json.dumps(result, default=str)[:300], flush=True)
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(rows, indent=1, default=str))

    print_tables(rows)
    device = jax.devices()[0]
    print(f"\n{device.platform}: {device.device_kind}, jax {jax.__version__}")


if __name__ == "__main__":
    main()
