"""Meta-steps per second of second-order MAML on Omniglot-shaped tasks: metajax against PyTorch,
in one process.

Every contender trains the MAML paper's Omniglot Conv4 (four blocks of a 3x3 convolution with 64
filters, stride 2 and no bias, batch normalisation with the batch's own statistics and a learned
scale and offset, and ReLU; then the mean over the feature maps and a linear head) on 5-way
1-shot tasks with 1 query image per class: inner lr 0.4, second order, Adam 1e-3 outside.

- metajax: the Omniglot ``small-5way`` preset, changed to each setting, built by
  ``metajax.runs.setup.build`` and trained by ``metajax.meta_train``, all the steps of a round
  in one compiled call. Tasks are drawn on the device inside that call, so drawing them is
  part of its step. Its convolutions are the CPU default, strided slices times one matrix;
  ``metajax lax`` is the same with ``conv="lax"`` (``lax.conv_general_dilated``).
- PyTorch loop, learn2learn's way (its ``maml_omniglot.py``): functional parameters, and for
  each task of the meta-batch the inner steps by ``torch.autograd.grad(..., create_graph=True)``,
  then ``.backward()`` of the query loss over the meta-batch size, which accumulates the mean
  meta-gradient; then one step of ``torch.optim.Adam``.
- torch.func: the same model as a pure function, the inner loop by ``torch.func.grad``,
  ``torch.func.vmap`` over tasks, and ``torch.func.grad`` of the mean query loss through it all.
  Its batch normalisation is written out, because ``F.batch_norm``'s batching rule gives wrong
  second-order gradients under ``vmap`` (PyTorch 2.13; pytorch/functorch#534).

The PyTorch contenders draw their tasks with numpy from the same decoded images (all classes of
the zip, without metajax's rotated copies, which change no shape); that takes well under a
millisecond per meta-step and is counted in their time. They pad their convolutions as JAX's
"SAME" does (the odd pixel after), so that all three compute the same function; ``--check``
shows it, comparing float64 meta-gradients from the same weights and tasks.

``drawing`` is the share of metajax's meta-step that drawing its tasks on the device takes:
``1 - speed / speed on one fixed task batch`` (the same compiled loop, with a sampler that returns
a batch drawn beforehand).

For each setting, every contender first runs one untimed round (metajax compiles there), then
``--rounds`` rounds of ``--steps`` meta-steps each, in turn, and the table gives each one's median
meta-steps/s and the ratios. PyTorch runs on ``--threads`` threads, by default every core, as
XLA's CPU backend uses. Run it on an otherwise idle machine: when other processes hold the cores,
PyTorch's threads wait on each other at every operation (on a busy 2-core machine, 2 threads
made the PyTorch loop 300 times slower than 1).

PyTorch is a benchmark-only dependency:
    pip install torch --index-url https://download.pytorch.org/whl/cpu
Run:    python benchmarks/omniglot_throughput.py [--meta-batches 4 32] [--inner-steps 1 5]
            [--steps 20] [--rounds 5] [--data PATH]
Check:  python benchmarks/omniglot_throughput.py --check
"""

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import metajax
from metajax import meta_train
from metajax.config.run_config import RunConfig
from metajax.core.task import Task
from metajax.data.image_set import ImageSet
from metajax.runs.setup import build

try:
    import torch
    import torch.nn.functional as F
    from torch import Tensor
except ImportError:
    sys.exit(
        "this benchmark needs PyTorch, which metajax does not: "
        "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    )

WAYS, SHOTS, QUERY_SHOTS = 5, 1, 1
INNER_LR = 0.4
META_LR = 1e-3
KERNEL, STRIDE = 3, 2
CHECK_TOLERANCE = 1e-8
DEFAULT_DATA = (
    Path(__file__).resolve().parents[2] / "shared/data/omniglot/images_background_small1.zip"
)

TorchBatch = tuple[Tensor, Tensor, Tensor, Tensor]
"""``(support images, support labels, query images, query labels)``, each with a task axis first;
images are ``[tasks, examples, 1, 28, 28]``."""
BatchNorm = Callable[[Tensor, Tensor, Tensor], Tensor]


def metajax_config(data: Path, meta_batch: int, inner_steps: int, conv: str) -> RunConfig:
    return metajax.presets("omniglot")["small-5way"].replace(
        data=str(data),
        test_data=None,  # only training tasks are drawn
        ways=WAYS,
        shots=SHOTS,
        query_shots=QUERY_SHOTS,
        meta_batch_size=meta_batch,
        inner_steps=inner_steps,
        inner_lr=INNER_LR,
        meta_lr=META_LR,
        conv=conv,
    )


class FixedTasks(eqx.Module):
    """A task sampler that returns one batch drawn beforehand, whatever the key: the meta-step
    without drawing, to measure what drawing costs."""

    tasks: Task

    def __call__(self, key: jax.Array) -> Task:
        return self.tasks


class MetajaxRunner:
    """``runner(steps) -> seconds``: ``meta_train`` for ``steps`` meta-steps in one compiled call,
    carrying the training state from call to call; with ``fixed``, on one task batch drawn
    beforehand."""

    def __init__(self, config: RunConfig, fixed: bool = False):
        self.setup = build(config)
        if fixed:
            tasks = self.setup.sample_tasks(self.setup.train_key)
            self.setup = self.setup._replace(sample_tasks=FixedTasks(tasks))
        self.state = self.setup.initial_state
        self.compile_seconds: list[float] = []

    def __call__(self, steps: int) -> float:
        result = meta_train(
            self.setup.learner,
            self.setup.optimizer,
            self.setup.sample_tasks,
            self.state,
            meta_steps=steps,
            steps_per_call=steps,
            progress=False,
        )
        self.state = result.state
        self.compile_seconds.append(result.compile_seconds)
        return result.train_seconds


def torch_layout(params: object, dtype: torch.dtype) -> list[Tensor]:
    """metajax Conv4 parameters (or their gradients) as torch tensors in torch's layout: kernels
    ``[3, 3, in, out]`` become ``[out, in, 3, 3]`` and the head weight ``[64, ways]`` becomes
    ``[ways, 64]``. The order is the Conv4's: 4 kernels, 4 scales, 4 offsets, head weight, head
    bias."""
    leaves = [torch.from_numpy(np.array(leaf)).to(dtype) for leaf in jax.tree.leaves(params)]
    kernels = [kernel.permute(3, 2, 0, 1).contiguous() for kernel in leaves[:4]]
    return [*kernels, *leaves[4:12], leaves[12].T.contiguous(), leaves[13]]


def same_pad(x: Tensor) -> Tensor:
    """Pads ``x [N, C, H, W]`` as JAX's "SAME" does for the stride-2 3x3 convolution: the
    total padding ``max((out - 1) * stride + kernel - in, 0)``, its odd pixel after."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
        out = -(-size // STRIDE)
        total = max((out - 1) * STRIDE + KERNEL - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def functional_batch_norm(x: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    return F.batch_norm(x, None, None, scale, offset, training=True)


def written_batch_norm(x: Tensor, scale: Tensor, offset: Tensor) -> Tensor:
    """``functional_batch_norm`` from elementary operations, for ``torch.func.vmap``."""
    mean = x.mean((0, 2, 3), keepdim=True)
    variance = (x - mean).square().mean((0, 2, 3), keepdim=True)
    normalised = (x - mean) * torch.rsqrt(variance + 1e-5)
    return normalised * scale[:, None, None] + offset[:, None, None]


def conv4_loss(
    params: Sequence[Tensor], images: Tensor, labels: Tensor, batch_norm: BatchNorm
) -> Tensor:
    """The cross-entropy of the Conv4 on one task's images ``[examples, 1, 28, 28]``."""
    x = images
    for kernel, scale, offset in zip(params[:4], params[4:8], params[8:12], strict=True):
        x = F.relu(batch_norm(F.conv2d(same_pad(x), kernel, stride=STRIDE), scale, offset))
    return F.cross_entropy(F.linear(x.mean((2, 3)), params[12], params[13]), labels)


def loop_meta_backward(params: list[Tensor], batch: TorchBatch, inner_steps: int) -> None:
    """Accumulates the mean meta-gradient of a task batch into ``params``' ``.grad``, one task
    at a time, as learn2learn does."""
    support_x, support_y, query_x, query_y = batch
    tasks = len(support_x)
    for t in range(tasks):
        fast = params
        for _ in range(inner_steps):
            loss = conv4_loss(fast, support_x[t], support_y[t], functional_batch_norm)
            grads = torch.autograd.grad(loss, fast, create_graph=True)
            fast = [p - INNER_LR * g for p, g in zip(fast, grads, strict=True)]
        query_loss = conv4_loss(fast, query_x[t], query_y[t], functional_batch_norm)
        (query_loss / tasks).backward()  # frees this task's graph before the next one


def func_meta_grad(inner_steps: int) -> Callable[[tuple[Tensor, ...], TorchBatch], tuple]:
    """``meta_grad(params, batch) -> grads``: the mean meta-gradient by torch.func."""

    def loss(params: tuple[Tensor, ...], images: Tensor, labels: Tensor) -> Tensor:
        return conv4_loss(params, images, labels, written_batch_norm)

    def task_loss(
        params: tuple[Tensor, ...], sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor
    ) -> Tensor:
        for _ in range(inner_steps):
            grads = torch.func.grad(loss)(params, sx, sy)
            params = tuple(p - INNER_LR * g for p, g in zip(params, grads, strict=True))
        return loss(params, qx, qy)

    def meta_loss(params: tuple[Tensor, ...], batch: TorchBatch) -> Tensor:
        return torch.func.vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(params, *batch).mean()

    return torch.func.grad(meta_loss)


class NumpyTasks:
    """``tasks(num_tasks) -> TorchBatch``: float32 task batches drawn with numpy as metajax draws
    them on the device: ``WAYS`` distinct classes, and ``QUERY_SHOTS + SHOTS`` distinct images of
    each, the first ``QUERY_SHOTS`` the query set."""

    def __init__(self, image_set: ImageSet, seed: int = 0):
        self.images = image_set.images[..., 0]  # grey: [num_images, 28, 28]
        self.sizes = image_set.class_sizes()
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.rng = np.random.default_rng(seed)

    def __call__(self, num_tasks: int) -> TorchBatch:
        classes = np.argsort(self.rng.random((num_tasks, len(self.sizes))), axis=1)[:, :WAYS]
        largest = self.sizes.max()
        # Distinct images of each class: the smallest random scores among its images.
        scores = self.rng.random((num_tasks, WAYS, largest))
        scores[np.arange(largest) >= self.sizes[classes][..., None]] = np.inf
        picks = np.argsort(scores, axis=-1)[..., : QUERY_SHOTS + SHOTS]
        images = torch.from_numpy(self.images[self.starts[classes][..., None] + picks])
        images = images.float().div_(255).unsqueeze(3)  # [tasks, ways, shots, 1, 28, 28]

        def examples(part: Tensor, count: int) -> tuple[Tensor, Tensor]:
            labels = torch.arange(WAYS).repeat_interleave(count).expand(num_tasks, -1)
            return part.reshape(num_tasks, WAYS * count, *part.shape[3:]), labels

        return (
            *examples(images[:, :, QUERY_SHOTS:], SHOTS),
            *examples(images[:, :, :QUERY_SHOTS], QUERY_SHOTS),
        )


class TorchRunner:
    """``runner(steps) -> seconds``: ``steps`` meta-steps of Adam on a PyTorch meta-gradient,
    task drawing included, carrying the parameters and Adam's state from call to call."""

    def __init__(
        self,
        weights: list[Tensor],
        tasks: NumpyTasks,
        meta_batch: int,
        meta_grad: Callable[[list[Tensor], TorchBatch], None],
    ):
        self.params = [w.clone().requires_grad_() for w in weights]
        self.optimizer = torch.optim.Adam(self.params, lr=META_LR)
        self.tasks = tasks
        self.meta_batch = meta_batch
        self.meta_grad = meta_grad  # fills the parameters' .grad

    def __call__(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            batch = self.tasks(self.meta_batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.meta_grad(self.params, batch)
            self.optimizer.step()
        return time.perf_counter() - start


def loop_runner(
    weights: list[Tensor], tasks: NumpyTasks, meta_batch: int, inner_steps: int
) -> TorchRunner:
    return TorchRunner(
        weights, tasks, meta_batch, lambda p, b: loop_meta_backward(p, b, inner_steps)
    )


def func_runner(
    weights: list[Tensor], tasks: NumpyTasks, meta_batch: int, inner_steps: int
) -> TorchRunner:
    meta_grad = func_meta_grad(inner_steps)

    def fill_grads(params: list[Tensor], batch: TorchBatch) -> None:
        # Detached, so that autograd does not also record the transform's graph.
        grads = meta_grad(tuple(p.detach() for p in params), batch)
        for p, g in zip(params, grads, strict=True):
            p.grad = g

    return TorchRunner(weights, tasks, meta_batch, fill_grads)


def measure(
    data: Path,
    image_set: ImageSet,
    meta_batch: int,
    inner_steps: int,
    steps: int,
    rounds: int,
    lax: bool,
) -> tuple[dict[str, float], list[float]]:
    """The median meta-steps/s of each contender at one setting, and metajax's compile seconds
    (slices, and lax if timed)."""
    metajax_runners = [
        MetajaxRunner(metajax_config(data, meta_batch, inner_steps, conv))
        for conv in (("auto", "lax") if lax else ("auto",))
    ]
    fixed = MetajaxRunner(metajax_config(data, meta_batch, inner_steps, "auto"), fixed=True)
    weights = torch_layout(metajax_runners[0].setup.params, torch.float32)  # the same start
    tasks = NumpyTasks(image_set)
    runners = {
        "metajax": metajax_runners[0],
        **({"metajax lax": metajax_runners[1]} if lax else {}),
        "metajax fixed": fixed,
        "PyTorch loop": loop_runner(weights, tasks, meta_batch, inner_steps),
        "torch.func": func_runner(weights, tasks, meta_batch, inner_steps),
    }
    for runner in runners.values():
        runner(steps)  # the untimed round
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    for round_index in range(rounds):
        names = list(runners)
        # Alternating the order spreads any drift of the machine's speed over all contenders.
        for name in names if round_index % 2 == 0 else reversed(names):
            speeds[name].append(steps / runners[name](steps))
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    return medians, [runner.compile_seconds[0] for runner in metajax_runners]


def relative_difference(got: Sequence[Tensor], expected: Sequence[Tensor]) -> float:
    """The largest, over parameters, of ``max |got - expected| / max |expected|``."""
    return max(
        float((g - e).abs().max() / e.abs().max()) for g, e in zip(got, expected, strict=True)
    )


def check(data: Path, meta_batches: list[int], inner_steps_list: list[int]) -> bool:
    """Whether both PyTorch meta-gradients match metajax's in float64, from metajax's initial
    weights on one task batch drawn by metajax, at every setting; prints the differences."""
    passed = True
    with jax.enable_x64(True):
        for meta_batch in meta_batches:
            for inner_steps in inner_steps_list:
                setup = build(metajax_config(data, meta_batch, inner_steps, "auto"))
                params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), setup.params)
                tasks = setup.sample_tasks(setup.train_key)
                _, grads = jax.jit(setup.learner.meta_grad)(params, tasks)
                expected = torch_layout(grads, torch.float64)
                weights = torch_layout(params, torch.float64)
                (sx, sy), (qx, qy) = jax.tree.map(lambda a: torch.from_numpy(np.array(a)), tasks)
                # NHWC to NCHW, with the task axis first
                batch = (sx.permute(0, 1, 4, 2, 3), sy.long(), qx.permute(0, 1, 4, 2, 3), qy.long())
                loop_params = [w.clone().requires_grad_() for w in weights]
                loop_meta_backward(loop_params, batch, inner_steps)
                results = {
                    "PyTorch loop": [p.grad for p in loop_params],
                    "torch.func": func_meta_grad(inner_steps)(tuple(weights), batch),
                }
                for name, got in results.items():
                    difference = relative_difference(got, expected)
                    ok = difference <= CHECK_TOLERANCE
                    passed &= ok
                    print(
                        f"meta-batch {meta_batch:>2}, {inner_steps} inner steps: {name:>12} "
                        f"vs metajax, max relative difference {difference:.2e} "
                        f"({'ok' if ok else 'FAILS'}: tolerance {CHECK_TOLERANCE:g})"
                    )
    return passed


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="Omniglot-style zip or folder"
    )
    parser.add_argument("--meta-batches", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--steps", type=int, default=20, help="meta-steps of each timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; speeds are medians")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="PyTorch's threads (default: cores)"
    )
    parser.add_argument(
        "--no-lax",
        action="store_true",
        help="do not time metajax with lax.conv (the slowest contender by far on a CPU)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare the float64 meta-gradients of all three instead of timing",
    )
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(
            f"no Omniglot data at {args.data}: give --data PATH, a zip or folder of "
            "alphabet/character/*.png such as Omniglot's images_background_small1.zip"
        )
    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(
        f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
        f"({threads} thread{'s' * (threads != 1)}), numpy {np.__version__}; {cpu_model()}, "
        f"{os.cpu_count()} cores"
    )
    if args.check:
        sys.exit(0 if check(args.data, args.meta_batches, args.inner_steps) else 1)

    image_set = metajax.load_image_set(args.data, image_size=28, invert=True)
    print(
        f"5-way 1-shot, 1 query image per class, second order; median meta-steps/s of "
        f"{args.rounds} rounds of {args.steps} meta-steps, after one untimed round; the ratios "
        "are metajax's speed over the others'"
    )
    print(
        f"{'meta-batch':>10} {'inner':>5} | {'metajax':>8} {'mj lax':>8} {'PT loop':>8} "
        f"{'torch.func':>10} | {'/ PT loop':>9} {'/ func':>7} {'/ lax':>6} | {'drawing':>7} | "
        "compile s (slices, lax)"
    )
    for meta_batch in args.meta_batches:
        for inner_steps in args.inner_steps:
            speed, compile_seconds = measure(
                args.data,
                image_set,
                meta_batch,
                inner_steps,
                args.steps,
                args.rounds,
                not args.no_lax,
            )
            mj, lax = speed["metajax"], speed.get("metajax lax", float("nan"))
            print(
                f"{meta_batch:>10} {inner_steps:>5} | {mj:>8.1f} {lax:>8.1f} "
                f"{speed['PyTorch loop']:>8.1f} {speed['torch.func']:>10.1f} | "
                f"{mj / speed['PyTorch loop']:>8.1f}x {mj / speed['torch.func']:>6.1f}x "
                f"{mj / lax:>5.1f}x | "
                f"{1 - mj / speed['metajax fixed']:>7.1%} | "
                + " ".join(f"{seconds:.1f}" for seconds in compile_seconds),
                flush=True,
            )


if __name__ == "__main__":
    main()
