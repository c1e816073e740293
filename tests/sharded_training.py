"""Trains the runs of :mod:`test_sharding` on one device and on all of them, in a process of
its own: ``XLA_FLAGS=--xla_force_host_platform_device_count=8 python sharded_training.py OUT
IMAGE_DATA NAME...`` writes ``OUT/NAME/devices-1`` and ``OUT/NAME/devices-all`` for each run
named."""

import sys
from pathlib import Path

import jax

import metajax

SINUSOID_ALGORITHMS = {
    "maml": {},
    "first-order-maml": {"first_order": True},
    "reptile": {"algorithm": "reptile", "inner_steps": 2},
    "meta-sgd": {"algorithm": "meta-sgd"},
    "anil": {"algorithm": "anil"},
    "maml++": {
        "algorithm": "maml++",
        "inner_steps": 2,
        "anneal_steps": 20,
        "first_order_steps": 10,
    },
    "imaml": {"algorithm": "imaml", "inner_steps": 2, "cg_steps": 3},
    "pretrain": {"algorithm": "pretrain"},
    "maml-micro-batched": {"micro_batches": 2, "meta_batch_size": 16},
}
IMAGE_ALGORITHMS = {
    "images-maml-micro-batched": {"micro_batches": 2, "meta_batch_size": 16},
    "images-protonet": {"algorithm": "protonet"},
    "images-protomaml-micro-batched": {
        "algorithm": "protomaml",
        "micro_batches": 2,
        "meta_batch_size": 16,
    },
}
RUNS = [*SINUSOID_ALGORITHMS, *IMAGE_ALGORITHMS]
QUICK = ["maml", "images-maml-micro-batched"]
"""The runs of the quick test suite: MAML whole on sinusoids and in micro-batches on images;
the other algorithms' runs are shared over devices by the same code, and run with ``-m slow``.
"""


def configs(image_data: str) -> dict[str, metajax.RunConfig]:
    """The runs by name: every algorithm on sinusoids; on images, micro-batched MAML and the
    metric-based algorithms (which need a classifier); 50 meta-steps of 8 tasks (16 when
    micro-batched), in one compiled call."""
    length = {"meta_steps": 50, "steps_per_call": 50, "checkpoint_every": 50, "log_every": 5}
    sinusoid = metajax.presets("sinusoid")["tutorial"].replace(meta_batch_size=8, **length)
    # Three shots: with one, batch norm over a support set of 3 images makes training chaotic
    # (float64 round-off grew from 1e-12 to 6e-6 in 50 steps when the batch was summed in
    # another order), and no two summation orders would agree to 1e-5.
    images = metajax.presets("images")["default"].replace(
        data=image_data, validation_count=3, test_count=3, image_size=16, filters=8, ways=3,
        shots=3, query_shots=3, meta_batch_size=8, inner_lr=0.1, validation_tasks=0, **length,
    )  # fmt: skip
    runs = {}
    for base, algorithms in ((sinusoid, SINUSOID_ALGORITHMS), (images, IMAGE_ALGORITHMS)):
        for name, changes in algorithms.items():
            changes = dict(changes)
            config = base.with_algorithm(changes.pop("algorithm", "maml"))
            runs[name] = config.replace(**changes)
    return runs


def main() -> None:
    out, image_data, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    assert jax.device_count() == 8, jax.devices()
    every = configs(image_data)
    for name in names:
        config = every[name]
        for devices in (1, None):
            run = out / name / f"devices-{devices or 'all'}"
            metajax.train(config, run, progress=False, plots=False, devices=devices)


if __name__ == "__main__":
    main()
