"""Second-order MAML with many inner steps: memory and time with and without ``remat``.

For the MAML paper's sinusoid MLP (finn2017 preset: meta-batch 25, K = 10) and its Omniglot
Conv4 (small-5way preset at meta-batch 4, 5-way 1-shot), the meta-gradient with ``--inner-steps
N`` is compiled with and without ``remat=True``. The table gives XLA's own account of the
compiled program's temporary buffers (``memory_analysis().temp_size_in_bytes``: the
activations and intermediate results the backward pass keeps; the parameters and tasks are
arguments, the same for both), the time of one meta-gradient (median of ``--repeats`` calls
after one untimed call) and the largest difference between the two meta-gradients.

Run:  python benchmarks/remat_memory.py [--inner-steps 100] [--repeats 5]
          [--data images_background_small1.zip]   (the Conv4 rows need an image set)
"""

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import metajax
from metajax.runs.setup import build


def measure(config: metajax.RunConfig, repeats: int) -> tuple[int, float, object]:
    """Temporary bytes, seconds per meta-gradient, and the meta-gradient."""
    setup = build(config)
    tasks = setup.sample_tasks(jax.random.key(0))
    compiled = jax.jit(setup.learner.meta_grad).lower(setup.params, tasks).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    result = jax.block_until_ready(compiled(setup.params, tasks))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(setup.params, tasks))
        times.append(time.perf_counter() - start)
    return temp, statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inner-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--data",
        default="../shared/data/omniglot/images_background_small1.zip",
        help="an image set for the Conv4 rows (skipped if it is missing)",
    )
    args = parser.parse_args()
    models = {"MLP (sinusoid)": metajax.presets("sinusoid")["finn2017"]}
    try:
        omniglot = metajax.presets("omniglot")["small-5way"].replace(data=args.data)
        omniglot.task.prepare()
        models["Conv4 (Omniglot)"] = omniglot.replace(meta_batch_size=4, inner_lr=0.1)
    except metajax.DataError as error:
        print(f"no Conv4 rows: {error}")
    print(f"jax {jax.__version__} ({jax.default_backend()}), {platform.processor() or 'CPU'}")
    print(f"second-order MAML, {args.inner_steps} inner steps; median of {args.repeats} calls")
    print(f"{'model':>17} | {'temp, plain':>11} {'temp, remat':>11} {'ratio':>6} | "
          f"{'s, plain':>8} {'s, remat':>8} {'ratio':>6} | max |difference|")  # fmt: skip
    for name, config in models.items():
        config = config.replace(inner_steps=args.inner_steps)
        plain, remat = (measure(config.replace(remat=r), args.repeats) for r in (False, True))
        difference = max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(jax.tree.leaves(plain[2]), jax.tree.leaves(remat[2]), strict=True)
        )
        mib = 2**20
        print(
            f"{name:>17} | {plain[0] / mib:>7.1f} MiB {remat[0] / mib:>7.1f} MiB "
            f"{plain[0] / remat[0]:>5.1f}x | {plain[1]:>8.3f} {remat[1]:>8.3f} "
            f"{remat[1] / plain[1]:>5.2f}x | {difference:.1e}"
        )


if __name__ == "__main__":
    main()
