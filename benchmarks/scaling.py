"""Tasks per second against the meta-batch size and the number of devices, for the sinusoid and
Omniglot meta-steps, each device count in a process of its own.

Each setting trains with ``metajax.meta_train``: all the meta-steps of a round in one compiled
call, the tasks drawn on the devices inside it, each batch sharded over the first N devices
(``metajax.task_mesh``; N = 1 runs on the default device without a mesh). One untimed round
compiles, then ``--rounds`` timed rounds of about ``--tasks`` tasks each, the settings of a
family and device count in turn; a setting's speed is the median of its rounds, in tasks/s
(meta-batch size x meta-steps / seconds).

- sinusoid: the ``finn2017`` preset (K = 10 support and 10 query points, a 40-40 MLP, one
  inner step of second-order MAML), with the automatic micro-batches of the default (chunks of
  at most 128 tasks a device on a CPU) and, where those are more than one, whole
  (``micro_batches=1``).
- omniglot: the ``small-5way`` preset (5-way 1-shot, 1 query image a class, the Conv4, one
  inner step of second-order MAML), with the default micro-batches, on the images of
  ``--omniglot-data``.

On a CPU, ``--devices`` larger than 1 are simulated devices (XLA_FLAGS
``--xla_force_host_platform_device_count``): they share the same cores, so what they measure is
the cost of sharding, not a speed-up. On GPUs they are the machine's own.

Run:  python benchmarks/scaling.py [--families sinusoid omniglot]
          [--meta-batches 4 16 64 256 1024 4096] [--devices 1 8]
          [--omniglot-data PATH] [--out DIR]
Writes DIR/scaling.json and DIR/scaling.png (default DIR: benchmarks/results).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

FAMILIES = ("sinusoid", "omniglot")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--meta-batches", type=int, nargs="+", default=[4, 16, 64, 256, 1024, 4096])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--tasks",
        type=int,
        nargs=2,
        default=[200_000, 1_000],
        metavar=("SINUSOID", "OMNIGLOT"),
        help="tasks of each timed round, for each family (at least one meta-step)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; speeds are medians")
    parser.add_argument(
        "--omniglot-data", type=Path, help="a folder or zip of Omniglot alphabets (for omniglot)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    # Internal: measure one device count in this process and write its rows to this file.
    parser.add_argument("--measure-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if "omniglot" in args.families and args.omniglot_data is None:
        parser.error("the omniglot family needs --omniglot-data PATH")
    return args


def main() -> None:
    args = parse_args()
    if args.measure_into is not None:
        measure(args)
        return
    # Each device count in a process of its own: simulating 8 CPU devices slows a program that
    # runs on one of them, so the one-device figures come from a process with one device.
    rows, machine = [], {}
    args.out.mkdir(parents=True, exist_ok=True)
    for devices in args.devices:
        part = args.out / f"scaling-{devices}.json"
        env = dict(os.environ)
        if devices > 1:  # on a CPU, simulated devices (other platforms ignore the flag)
            flag = f"--xla_force_host_platform_device_count={devices}"
            env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}"
        command = [sys.executable, __file__, *sys.argv[1:], "--devices", str(devices)]
        subprocess.run([*command, "--measure-into", str(part)], env=env, check=True)
        measured = json.loads(part.read_text())
        part.unlink()
        rows += measured["rows"]
        machine = measured["machine"]
    results = {"machine": machine, "command": ["python", *sys.argv], "rows": rows}
    (args.out / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(rows, machine, args.out / "scaling.png")
    print(f"wrote {args.out / 'scaling.json'} and {args.out / 'scaling.png'}")


def measure(args: argparse.Namespace) -> None:
    """Measures every setting on ``args.devices[0]`` devices; writes the rows and the machine
    to ``args.measure_into``."""
    import jax

    import metajax
    from metajax.runs.setup import build

    class Runner:
        """``runner() -> tasks/s``: a round of ``config``'s meta-steps, about ``tasks`` tasks,
        with its batches shared by ``devices`` devices, carrying the state between rounds."""

        def __init__(self, config: metajax.RunConfig, devices: int, tasks: int):
            self.meta_batch = config.training.meta_batch_size
            self.mesh = metajax.task_mesh(devices) if devices > 1 else None
            self.setup = build(config, devices)
            self.state = self.setup.initial_state
            self.steps = max(1, tasks // self.meta_batch)
            self.compile_seconds = 0.0

        def __call__(self) -> float:
            result = metajax.meta_train(
                self.setup.learner,
                self.setup.optimizer,
                self.setup.sample_tasks,
                self.state,
                meta_steps=self.steps,
                steps_per_call=self.steps,
                progress=False,
                mesh=self.mesh,
            )
            self.state = result.state
            self.compile_seconds += result.compile_seconds
            return self.meta_batch * self.steps / result.train_seconds

    configs = {
        "sinusoid": metajax.presets("sinusoid")["finn2017"],
        "omniglot": metajax.presets("omniglot")["small-5way"].replace(
            data=None if args.omniglot_data is None else str(args.omniglot_data), test_data=None
        ),
    }
    variants = {"sinusoid": {"automatic": 0, "whole": 1}, "omniglot": {"automatic": 0}}
    rows = []
    devices = args.devices[0]
    for family in args.families:
        tasks = args.tasks[FAMILIES.index(family)]
        # The settings of a family take their rounds in turn, so that whatever else slows the
        # machine for a while slows all of them alike.
        runners = {}
        for meta_batch in args.meta_batches:
            if meta_batch % devices:
                continue  # the devices cannot share the batch evenly
            for variant, micro_batches in variants[family].items():
                automatic = runners.get((meta_batch, "automatic"))
                if automatic is not None and automatic.setup.micro_batches == 1:
                    continue  # taking the batch whole is the same computation
                config = configs[family].replace(
                    meta_batch_size=meta_batch, micro_batches=micro_batches
                )
                runners[(meta_batch, variant)] = Runner(config, devices, tasks)
        for runner in runners.values():
            runner()  # compiles
        rates: dict = {setting: [] for setting in runners}
        for _ in range(args.rounds):
            for setting, runner in runners.items():
                rates[setting].append(runner())
        for meta_batch in dict.fromkeys(m for m, _ in runners):
            for variant in variants[family]:
                # Taken whole, a batch of one automatic micro-batch is the same computation.
                measured = (meta_batch, variant)
                if measured not in runners:
                    measured = (meta_batch, "automatic")
                runner = runners[measured]
                row = {"family": family, "devices": devices, "meta_batch": meta_batch}
                row |= {
                    "variant": variant,
                    "tasks_per_second": statistics.median(rates[measured]),
                    "rounds": [round(rate) for rate in rates[measured]],
                    "meta_steps_per_round": runner.steps,
                    "micro_batches": runner.setup.micro_batches,
                    "compile_seconds": round(runner.compile_seconds, 2),
                }
                rows.append(row)
                print(
                    f"{family:8} {devices} devices  meta-batch {meta_batch:5}  {variant:9}  "
                    f"{row['tasks_per_second']:12,.0f} tasks/s  "
                    f"({row['micro_batches']} micro-batches)",
                    flush=True,
                )
    device = jax.devices()[0]
    machine = {
        "platform": jax.default_backend(),
        "device": device.device_kind,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "metajax": metajax.__version__,
    }
    args.measure_into.write_text(json.dumps({"machine": machine, "rows": rows}))


def plot(rows: list[dict], machine: dict, path: Path) -> None:
    """Tasks/s against the meta-batch size, a panel per family, a line per device count (and,
    for the sinusoid, per way of taking the batch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(row["family"] for row in rows))
    figure, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.5), squeeze=False)
    for axis, family in zip(axes[0], families, strict=True):
        lines = dict.fromkeys((r["devices"], r["variant"]) for r in rows if r["family"] == family)
        for devices, variant in lines:
            points = [
                (r["meta_batch"], r["tasks_per_second"])
                for r in rows
                if (r["family"], r["devices"], r["variant"]) == (family, devices, variant)
            ]
            label = f"{devices} device{'s' if devices > 1 else ''}"
            if family == "sinusoid":
                label += ", whole batch" if variant == "whole" else ", automatic micro-batches"
            style = "--" if variant == "whole" else "-"
            axis.plot(*zip(*points, strict=True), marker="o", linestyle=style, label=label)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("meta-batch size (tasks per meta-step)")
        axis.set_ylabel("tasks per second")
        axis.set_title(f"{family}: second-order MAML, one inner step")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle(f"{machine['device']} ({machine['platform']}, {machine['cpu_count']} cores)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
