"""Meta-steps per second: metajax against the tutorial's own training loop, in one process.

The baseline is a faithful port of the batched loop of "MAML Tutorial with JAX" to current JAX:
the same stax network and Adam from ``jax.example_libraries`` (the tutorial's
``jax.experimental.stax`` and ``optimizers`` moved there), the same numpy task sampling in
Python loops, one jitted step per meta-step, and ``tree_multimap`` replaced by ``jax.tree.map``,
its current name. Both run the tutorial's batched configuration: meta-batch 4, K = 20 support
and 20 query points, inner lr 0.1, one inner step, second order, Adam 1e-3.

It also times the tutorial's jitted step alone, many steps compiled into one ``lax.scan`` with
fixed data: the cost of the meta-gradient's compiled math without any Python. Since metajax runs
the same math, the tutorial loop's time per step divided by this is the most that any
implementation running that math on one core could gain.

Run:  python benchmarks/sinusoid_throughput.py [--steps 20000] [--seeds 3]
"""

import argparse
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.example_libraries import optimizers, stax

import metajax
from metajax import meta_train
from metajax.runs.setup import build

LAST = 1000  # the final meta-loss is the mean over the last LAST meta-steps


def run_metajax(steps: int, seed: int) -> dict:
    config = metajax.presets("sinusoid")["tutorial"].replace(meta_steps=steps, seed=seed)
    setup = build(config)
    result = meta_train(
        setup.learner,
        setup.optimizer,
        setup.sample_tasks,
        setup.initial_state,
        meta_steps=steps,
        steps_per_call=config.training.steps_per_call,
        progress=False,
    )
    return {
        "steps_per_second": steps / result.train_seconds,
        "final_meta_loss": float(np.mean(result.losses[-LAST:])),
        "compile_seconds": result.compile_seconds,
    }


def run_tutorial(steps: int, seed: int = 0, ceiling: bool = True) -> dict:
    """The tutorial's batched MAML loop, as written there but for the moved APIs; with
    ``ceiling``, also the speed of its jitted step alone."""
    np.random.seed(seed)
    net_init, net_apply = stax.serial(
        stax.Dense(40), stax.Relu, stax.Dense(40), stax.Relu, stax.Dense(1)
    )
    rng = jax.random.PRNGKey(seed)
    in_shape = (-1, 1)

    def loss(params, inputs, targets):
        predictions = net_apply(params, inputs)
        return jnp.mean((targets - predictions) ** 2)

    alpha = 0.1

    def inner_update(p, x1, y1):
        grads = jax.grad(loss)(p, x1, y1)
        inner_sgd_fn = lambda g, state: state - alpha * g
        return jax.tree.map(inner_sgd_fn, grads, p)

    def maml_loss(p, x1, y1, x2, y2):
        p2 = inner_update(p, x1, y1)
        return loss(p2, x2, y2)

    def sample_tasks(outer_batch_size, inner_batch_size):
        As = []
        phases = []
        for _ in range(outer_batch_size):
            As.append(np.random.uniform(low=0.1, high=0.5))
            phases.append(np.random.uniform(low=0.0, high=jnp.pi))

        def get_batch():
            xs, ys = [], []
            for A, phase in zip(As, phases):
                x = np.random.uniform(low=-5.0, high=5.0, size=(inner_batch_size, 1))
                y = A * np.sin(x + phase)
                xs.append(x)
                ys.append(y)
            return jnp.stack(xs), jnp.stack(ys)

        x1, y1 = get_batch()
        x2, y2 = get_batch()
        return x1, y1, x2, y2

    opt_init, opt_update, get_params = optimizers.adam(step_size=1e-3)
    out_shape, net_params = net_init(rng, in_shape)
    opt_state = opt_init(net_params)

    def batch_maml_loss(p, x1_b, y1_b, x2_b, y2_b):
        task_losses = jax.vmap(partial(maml_loss, p))(x1_b, y1_b, x2_b, y2_b)
        return jnp.mean(task_losses)

    @jax.jit
    def step(i, opt_state, x1, y1, x2, y2):
        p = get_params(opt_state)
        g = jax.grad(batch_maml_loss)(p, x1, y1, x2, y2)
        l = batch_maml_loss(p, x1, y1, x2, y2)
        return opt_update(i, g, opt_state), l

    np_batched_maml_loss = []
    K = 20
    for i in range(steps):
        x1_b, y1_b, x2_b, y2_b = sample_tasks(4, K)
        opt_state, l = step(i, opt_state, x1_b, y1_b, x2_b, y2_b)
        np_batched_maml_loss.append(l)
        if i == 0:  # step 0 compiles; time the rest
            jax.block_until_ready(l)
            start = time.perf_counter()
    jax.block_until_ready(l)
    elapsed = time.perf_counter() - start
    result = {
        "steps_per_second": (steps - 1) / elapsed,
        "final_meta_loss": float(np.mean(np_batched_maml_loss[-LAST:])),
    }
    if ceiling:
        result["compiled_step_per_second"] = time_compiled_step(step, opt_state, sample_tasks(4, K))
    return result


def time_compiled_step(step, opt_state, batch, steps: int = 5000) -> float:
    """Meta-steps/s of the tutorial's jitted step alone: a lax.scan over it with fixed data."""

    @jax.jit
    def many(opt_state):
        def body(state, i):
            return step(i, state, *batch)

        return jax.lax.scan(body, opt_state, jnp.arange(steps))

    jax.block_until_ready(many(opt_state))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(many(opt_state))
        best = min(best, time.perf_counter() - start)
    return steps / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20000, help="meta-steps of each run")
    parser.add_argument(
        "--seeds", type=int, default=3, help="runs of each, one per seed; speeds are the best"
    )
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {args.steps} meta-steps")
    results = {"metajax": [], "tutorial loop": []}
    for seed in range(args.seeds):
        results["metajax"].append(run_metajax(args.steps, seed))
        results["tutorial loop"].append(run_tutorial(args.steps, seed))
    speeds = {}
    for name, runs in results.items():
        speeds[name] = max(run["steps_per_second"] for run in runs)
        losses = np.array([run["final_meta_loss"] for run in runs])
        print(
            f"{name:>14}: {speeds[name]:9,.0f} meta-steps/s; final meta-loss (mean of the last "
            f"{LAST} steps) {losses.mean():.5f} +- {losses.std():.5f} over {len(runs)} seeds: "
            + ", ".join(f"{loss:.5f}" for loss in losses)
        )
    ceiling = max(run["compiled_step_per_second"] for run in results["tutorial loop"])
    ratio = speeds["metajax"] / speeds["tutorial loop"]
    print(f"{'speed-up':>14}: {ratio:.1f}x")
    print(
        f"{'compiled step':>14}: {ceiling:9,.0f} meta-steps/s for the tutorial's jitted step "
        f"alone, without Python; the most a single-core implementation of the same math can gain "
        f"over the tutorial loop is {ceiling / speeds['tutorial loop']:.1f}x"
    )


if __name__ == "__main__":
    main()
