"""The training settings: how meta-training runs, how long, and how it records its progress."""

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import optax

from metajax import options
from metajax._validation import MAX_SEED, OptionError
from metajax.core.micro_batching import CPU_CHUNK_TASKS
from metajax.options import Options


@dataclasses.dataclass(frozen=True)
class TrainSettings(Options):
    """How meta-training runs: the outer loop, its length, and how it records its progress."""

    renamed_options: ClassVar[Mapping[str, str]] = {"steps": "meta_steps"}

    meta_steps: int = options.integer(20000, "meta-steps (outer-loop updates)")
    meta_batch_size: int = options.integer(4, "tasks per meta-step")
    micro_batches: int = options.integer(
        0,
        "split each meta-batch into M chunks whose meta-gradients are summed one after another, "
        "so that a large meta-batch fits in memory (same result); M must divide the meta-batch; "
        f"0: on a CPU, where larger vmapped batches run slower per task, as many as keep each "
        f"device's chunk within {CPU_CHUNK_TASKS} tasks (if a size from {CPU_CHUNK_TASKS // 4} "
        f"to {CPU_CHUNK_TASKS} divides its share), elsewhere 1",
        metavar="M",
        minimum=0,
    )
    meta_optimizer: str = options.choice(
        "adam", ("adam", "sgd"), "the outer optimizer of the meta-parameters (optax)"
    )
    meta_lr: float = options.number(
        1e-3, "the outer optimizer's step size (under a schedule, its first)", metavar="LR"
    )
    meta_lr_schedule: str = options.choice(
        "constant",
        ("constant", "cosine", "linear", "halving"),
        "how the meta step size changes over the meta-steps: not at all, from meta-lr to "
        "meta-lr-end by cosine decay or linearly, or halved every meta-lr-halve-every steps "
        "(Prototypical Networks')",
    )
    meta_lr_end: float | None = options.number(
        None,
        "the meta step size that a cosine or linear schedule reaches at the last meta-step",
        metavar="LR",
        zero=True,
        optional=True,
        default_text="0 under a schedule",
    )
    meta_lr_halve_every: int | None = options.integer(
        None,
        "meta-steps between halvings of the meta step size (meta-lr-schedule halving)",
        optional=True,
        default_text="none: required by the halving schedule",
    )
    adam_eps: float = options.number(
        1e-8,
        "epsilon of the outer Adam (meta-optimizer adam), added to the root of its second moment",
        metavar="EPS",
    )
    seed: int = options.integer(
        0, "seed of every random number in the run", minimum=0, maximum=MAX_SEED
    )
    # Bounded: a checkpoint keeps the metrics of the window of steps not yet recorded.
    log_every: int = options.integer(
        100, "meta-steps per record in metrics.jsonl", maximum=1_000_000
    )
    steps_per_call: int = options.integer(1000, "meta-steps fused into one compiled call")
    checkpoint_every: int = options.integer(
        5000, "meta-steps between checkpoints; one is also saved at the start and the end"
    )
    keep_checkpoints: int = options.integer(3, "keep the newest K checkpoints", metavar="K")
    validation_tasks: int = options.integer(
        0,
        "validation tasks scored at every checkpoint, after the training's inner steps (0: none)",
        minimum=0,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.meta_lr_end is not None and self.meta_lr_schedule not in ("cosine", "linear"):
            raise OptionError(
                "meta_lr_end",
                "left unset unless the meta step size follows a schedule to an end "
                "(meta_lr_schedule cosine or linear)",
                self.meta_lr_end,
            )
        halving = self.meta_lr_schedule == "halving"
        if halving != (self.meta_lr_halve_every is not None):
            raise OptionError(
                "meta_lr_halve_every",
                "set with meta_lr_schedule halving and only then",
                self.meta_lr_halve_every,
            )
        if self.micro_batches and self.meta_batch_size % self.micro_batches:
            raise OptionError(
                "micro_batches",
                f"a divisor of meta_batch_size ({self.meta_batch_size}), or 0 for automatic",
                self.micro_batches,
            )

    def meta_step_size(self) -> optax.ScalarOrSchedule:
        """The meta step size: ``meta_lr``, or its schedule over ``meta_steps`` as a function of
        the optimizer's step count."""
        end = self.meta_lr_end or 0.0
        if self.meta_lr_schedule == "cosine":
            return optax.cosine_decay_schedule(self.meta_lr, self.meta_steps, end / self.meta_lr)
        if self.meta_lr_schedule == "linear":
            return optax.linear_schedule(self.meta_lr, end, self.meta_steps)
        if self.meta_lr_schedule == "halving":
            every = self.meta_lr_halve_every or 1  # set: __post_init__ checks it
            return optax.exponential_decay(self.meta_lr, every, 0.5, staircase=True)
        return self.meta_lr

    def outer_optimizer(self) -> optax.GradientTransformation:
        """The optimizer of the meta-parameters these settings describe."""
        if self.meta_optimizer == "sgd":
            return optax.sgd(self.meta_step_size())
        return optax.adam(self.meta_step_size(), eps=self.adam_eps)
