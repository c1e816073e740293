"""How close the Conv4's second-order meta-step comes to what this CPU can compute.

The setting of ``benchmarks/omniglot_throughput.py``'s hardest row: the Omniglot ``small-5way``
preset at 5-way 1-shot, 1 query image per class, meta-batch 32, one inner step of 0.4, second
order. The script compiles metajax's training loop and reports:

- XLA's own count of the floating-point operations and bytes of one meta-step (the compiled
  program's cost analysis, of a loop of one step: XLA counts a loop's body once), and the
  share of those operations in matrix products (``dot`` instructions of the optimised HLO,
  each ``2 * output size * contracted size``);
- the meta-steps/s of the compiled loop, median of ``--rounds`` rounds of ``--steps`` steps,
  and the GFLOP/s that makes;
- two ceilings measured in the same process on every core: a large square float32 matrix
  product (``--peak-size``), the most this CPU does through XLA; and the matrix products of
  the meta-step itself, each timed alone at its own shape, the most the Conv4's shapes allow.

With ``--formulations``, it times instead, interleaved in one process, the meta-step with
metajax's sliced convolution (``metajax.models.conv2d``: nine strided slices concatenated, one
product) against two other writings of it: ``sum9``, the sum of nine products of the slices,
with no concatenation; ``rows3``, three column slices concatenated, then the sum of three
products of their row slices.

Run:  python benchmarks/conv4_profile.py [--data ZIP] [--rounds 5] [--steps 20]
      python benchmarks/conv4_profile.py --formulations [--rounds 4] [--steps 10]
"""

import argparse
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import metajax
from metajax import models
from metajax.runs.setup import build

DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared/data/omniglot/images_background_small1.zip"
)
_SHAPE = re.compile(r"(%[\w.\-]+) = f32\[([\d,]*)\]")
_DOT = re.compile(r"= f32\[([\d,]*)\]\S* dot\((%[\w.\-]+), (%[\w.\-]+)\)(.*)")

Dot = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[tuple[int, ...], ...]]
"""A ``dot``: output, left and right shapes, and its left and right contracting and batch
dimensions."""


def dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",") if d)


def dots(hlo: str) -> list[Dot]:
    """Every float32 ``dot`` of an optimised HLO module (which names its operands without their
    shapes: those are found where each operand is defined)."""
    shapes = {name: dims(shape) for name, shape in _SHAPE.findall(hlo)}
    found = []
    for match in _DOT.finditer(hlo):
        out, lhs_name, rhs_name, rest = match.groups()
        lhs, rhs = shapes[lhs_name], shapes[rhs_name]

        def numbers(name: str, rest: str = rest) -> tuple[int, ...]:
            given = re.search(name + r"=\{([\d,]*)\}", rest)
            return dims(given.group(1)) if given else ()

        kinds = ("lhs_contracting_dims", "rhs_contracting_dims", "lhs_batch_dims", "rhs_batch_dims")
        found.append((dims(out), lhs, rhs, tuple(numbers(k) for k in kinds)))
    return found


def dot_flops(dot: Dot) -> int:
    out, lhs, _, (lhs_contract, *_) = dot
    return 2 * int(np.prod(out)) * int(np.prod([lhs[d] for d in lhs_contract]))


def seconds_per_call(function: Callable[[], jax.Array], calls: int) -> float:
    function().block_until_ready()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            result = function()
        result.block_until_ready()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def dot_alone(dot: Dot) -> float:
    """Seconds of one ``dot`` of this shape, compiled alone, on random inputs."""
    out, lhs, rhs, (lhs_contract, rhs_contract, lhs_batch, rhs_batch) = dot
    numbers = ((lhs_contract, rhs_contract), (lhs_batch, rhs_batch))
    keys = jax.random.split(jax.random.key(0))
    a = jax.random.normal(keys[0], lhs)
    b = jax.random.normal(keys[1], rhs)
    product = jax.jit(lambda a, b: jax.lax.dot_general(a, b, numbers))
    assert product(a, b).shape == out, dot
    return seconds_per_call(lambda: product(a, b), 20)


def _padded(x: jax.Array, kernel: tuple[int, int], stride: int) -> tuple[jax.Array, int, int]:
    """``x`` padded as ``"SAME"`` pads it (the odd pixel after), and the output's height and
    width."""
    (kh, kw), (_, height, width, _) = kernel, x.shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + kh - height, 0)
    pad_w = max((out_w - 1) * stride + kw - width, 0)
    pads = ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    return jnp.pad(x, pads), out_h, out_w


def conv_sum9(x: jax.Array, weight: jax.Array, stride: int = 1, **_: Any) -> jax.Array:
    """The sum of ``kh * kw`` products of strided slices: no concatenation."""
    kh, kw = weight.shape[:2]
    padded, out_h, out_w = _padded(x, (kh, kw), stride)
    rows, cols = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    return sum(
        padded[:, i : i + rows : stride, j : j + cols : stride] @ weight[i, j]
        for i in range(kh)
        for j in range(kw)
    )


def conv_rows3(x: jax.Array, weight: jax.Array, stride: int = 1, **_: Any) -> jax.Array:
    """``kw`` column slices concatenated, then the sum of ``kh`` products of their row slices."""
    kh, kw, channels, features = weight.shape
    padded, out_h, out_w = _padded(x, (kh, kw), stride)
    rows, cols = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    columns = jnp.concatenate([padded[:, :, j : j + cols : stride] for j in range(kw)], axis=-1)
    return sum(
        columns[:, i : i + rows : stride] @ weight[i].reshape(kw * channels, features)
        for i in range(kh)
    )


FORMULATIONS = {"metajax": models.conv2d, "sum9": conv_sum9, "rows3": conv_rows3}


def compare_formulations(config: metajax.RunConfig, steps: int, rounds: int) -> None:
    """Meta-steps/s of the meta-step with each of :data:`FORMULATIONS`, rounds interleaved."""
    loops = {}
    try:
        for name, conv in FORMULATIONS.items():
            models.conv2d = conv  # the Conv4 calls it by this name
            setup = build(config)
            loop = eqx.filter_jit(
                lambda sampler, state, setup=setup: metajax.train_steps(
                    setup.learner, setup.optimizer, sampler, state, steps
                )
            )
            jax.block_until_ready(loop(setup.sample_tasks, setup.initial_state))  # compiles
            loops[name] = (loop, setup)
    finally:
        models.conv2d = FORMULATIONS["metajax"]
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, (loop, setup) in loops.items():
            start = time.perf_counter()
            jax.block_until_ready(loop(setup.sample_tasks, setup.initial_state))
            rates[name].append(steps / (time.perf_counter() - start))
    for name, values in rates.items():
        listed = ", ".join(f"{value:.2f}" for value in values)
        print(f"{name:>8}: {statistics.median(values):.2f} meta-steps/s ({listed})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an Omniglot zip")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="meta-steps per round")
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument(
        "--formulations", action="store_true", help="time other writings of the convolution"
    )
    args = parser.parse_args()

    config = metajax.presets("omniglot")["small-5way"].replace(
        data=str(args.data), test_data=None, ways=5, shots=1, query_shots=1,
        meta_batch_size=32, inner_steps=1, inner_lr=0.4,
    )  # fmt: skip
    if args.formulations:
        compare_formulations(config, args.steps, args.rounds)
        return
    setup = build(config)

    def loop(steps: int) -> Any:
        return eqx.filter_jit(
            lambda sampler, state: metajax.train_steps(
                setup.learner, setup.optimizer, sampler, state, steps
            )
        )

    # equinox wraps JAX's compiled program; its cost analysis and HLO are on the program.
    one = loop(1).lower(setup.sample_tasks, setup.initial_state).compile().compiled
    cost = one.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops, bytes_accessed = float(cost["flops"]), float(cost["bytes accessed"])
    products = dots(one.as_text())
    matmul_flops = sum(dot_flops(d) for d in products)

    many = loop(args.steps)
    state = setup.initial_state
    many(setup.sample_tasks, state)[1].block_until_ready()  # compiles
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        state, losses = many(setup.sample_tasks, state)
        losses.block_until_ready()
        rates.append(args.steps / (time.perf_counter() - start))
    rate = statistics.median(rates)

    n = args.peak_size
    square = jax.random.normal(jax.random.key(1), (n, n))
    product = jax.jit(lambda a: a @ a)
    peak = 2 * n**3 / seconds_per_call(lambda: product(square), 10) / 1e9

    dot_seconds = sum(dot_alone(d) for d in products)

    print(f"devices: {jax.devices()}, jax {jax.__version__}")
    print(
        f"one meta-step: {flops / 1e9:.2f} GFLOP by XLA's count "
        f"({matmul_flops / 1e9:.2f} GFLOP in {len(products)} matrix products, "
        f"{matmul_flops / flops:.0%}), {bytes_accessed / 1e9:.2f} GB accessed"
    )
    print(
        f"metajax: {rate:.2f} meta-steps/s (rounds: {', '.join(f'{r:.2f}' for r in rates)}), "
        f"{rate * flops / 1e9:.1f} GFLOP/s"
    )
    print(f"ceiling, a {n}x{n} float32 product: {peak:.1f} GFLOP/s")
    print(
        f"ceiling, the meta-step's own matrix products, each alone: {dot_seconds * 1e3:.1f} ms "
        f"per meta-step, {matmul_flops / dot_seconds / 1e9:.1f} GFLOP/s, "
        f"{1 / dot_seconds:.2f} meta-steps/s if nothing else took time"
    )
    print(
        f"metajax reaches {rate * flops / 1e9 / peak:.0%} of the square product's GFLOP/s; "
        f"the products alone take {dot_seconds * rate:.0%} of its meta-step"
    )


if __name__ == "__main__":
    main()
