"""Sinusoid regression, the task family of Finn et al. (2017), sampled on the device.

A task is a sinusoid ``y = amplitude * sin(x + phase)``; the model, an MLP, adapts on its
support points and is scored by mean squared error on its query points. This module is the
whole family: the distribution of tasks (:class:`SinusoidDistribution`), the family's settings
and presets (:class:`SinusoidConfig`, registered as ``sinusoid``), its model and loss, its
held-out evaluation tasks and its figure.
"""

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from metajax import _validation, options
from metajax.algorithms.imaml import IMAML
from metajax.algorithms.maml import MAML
from metajax.algorithms.maml_plus_plus import MAMLPlusPlus
from metajax.config import registry
from metajax.config.family import Metric, TaskFamily, TrainedRun
from metajax.config.run_config import RunConfig
from metajax.config.training_settings import TrainSettings
from metajax.core.meta_learner import MetaLearner, Params
from metajax.core.task import Task
from metajax.models import MLP, mlp, mse_loss
from metajax.options import declared


class Sinusoid(NamedTuple):
    """One sinusoid ``y = amplitude * sin(x + phase)``, or a batch of them (leading axis)."""

    amplitude: Array
    phase: Array

    def __call__(self, x: Array) -> Array:
        """Evaluates a single sinusoid at ``x`` (any shape); ``jax.vmap`` it over a batch."""
        return self.amplitude * jnp.sin(x + self.phase)


Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class SinusoidDistribution:
    """The distribution of sinusoid regression tasks.

    A task draws an amplitude and a phase uniformly from their ranges; its support and query
    inputs are drawn independently and uniformly from ``x_range``, and its targets are
    ``amplitude * sin(x + phase)``, without noise. Inputs and targets have shape
    ``[num_points, 1]``.

    Attributes:
      amplitude_range: ``(low, high)`` of the amplitude.
      phase_range: ``(low, high)`` of the phase, in radians.
      x_range: ``(low, high)`` of the inputs.
    """

    amplitude_range: Range = (0.1, 5.0)
    phase_range: Range = (0.0, math.pi)
    x_range: Range = (-5.0, 5.0)

    def __post_init__(self) -> None:
        for name in ("amplitude_range", "phase_range", "x_range"):
            object.__setattr__(self, name, _validation.number_range(name, getattr(self, name)))

    def sample_sinusoids(self, key: Array, num_tasks: int) -> Sinusoid:
        """Draws ``num_tasks`` sinusoids; each field has shape ``[num_tasks]``."""
        amplitude_key, phase_key = jax.random.split(key)
        return Sinusoid(
            amplitude=_uniform(amplitude_key, (num_tasks,), self.amplitude_range),
            phase=_uniform(phase_key, (num_tasks,), self.phase_range),
        )

    def sample_inputs(self, key: Array, shape: tuple[int, ...]) -> Array:
        """Draws inputs uniformly from ``x_range``."""
        return _uniform(key, shape, self.x_range)

    def sample_points(
        self, key: Array, sinusoids: Sinusoid, num_points: int
    ) -> tuple[Array, Array]:
        """Draws ``(x, y)`` for given sinusoids (a batch), shapes ``[num_tasks, num_points, 1]``."""
        x = self.sample_inputs(key, (sinusoids.amplitude.shape[0], num_points, 1))
        return x, jax.vmap(Sinusoid.__call__)(sinusoids, x)

    def tasks_for(self, key: Array, sinusoids: Sinusoid, num_support: int, num_query: int) -> Task:
        """Draws support and query points for given sinusoids (a batch, leading axis).

        Returns:
          A task batch whose support is ``(x, y)`` with shapes ``[num_tasks, num_support, 1]``
          and whose query is ``(x, y)`` with shapes ``[num_tasks, num_query, 1]``.
        """
        x, y = self.sample_points(key, sinusoids, num_support + num_query)
        return Task(
            support=(x[:, :num_support], y[:, :num_support]),
            query=(x[:, num_support:], y[:, num_support:]),
        )

    def sample_tasks(self, key: Array, num_tasks: int, num_support: int, num_query: int) -> Task:
        """Draws a batch of tasks: ``tasks_for(x_key, sample_sinusoids(sinusoid_key, ...))``
        with ``sinusoid_key, x_key = jax.random.split(key)``. Pure and jit-able."""
        sinusoid_key, x_key = jax.random.split(key)
        sinusoids = self.sample_sinusoids(sinusoid_key, num_tasks)
        return self.tasks_for(x_key, sinusoids, num_support, num_query)


def _uniform(key: Array, shape: tuple[int, ...], bounds: Range) -> Array:
    return jax.random.uniform(key, shape, minval=bounds[0], maxval=bounds[1])


@registry.register_family
@dataclasses.dataclass(frozen=True)
class SinusoidConfig(TaskFamily):
    """The sinusoid family's settings: the task distribution, the task sizes and the MLP.

    ``SinusoidConfig()`` is the tutorial's family (amplitudes in [0.1, 0.5], 20 support and 20
    query points); the presets ``tutorial``, ``finn2017``, ``finn2017-code``,
    ``finn2017-maml++`` and ``finn2017-imaml`` are complete run configs.
    """

    name: ClassVar[str] = "sinusoid"
    description: ClassVar[str] = (
        "Sinusoid regression (Finn et al., 2017): each task is y = A sin(x + phase) with A and "
        "the phase drawn from their ranges; the model, an MLP, adapts on K support points and "
        "is scored by its mean squared error on the query points. The default preset, "
        "tutorial, is the batched run of the tutorial 'MAML Tutorial with JAX'; finn2017 is "
        "the MAML paper's setting as its text gives it, finn2017-code as its code runs it "
        "(inner step size 0.001); finn2017-maml++ and finn2017-imaml run MAML++ and iMAML "
        "on the same tasks."
    )
    metrics: ClassVar[dict[str, Metric]] = {"mse": Metric("MSE")}
    eval_shots: ClassVar[tuple[int, ...]] = (5, 10, 20)
    renamed_options: ClassVar[dict[str, str]] = {"k_shot": "shots", "k_query": "query_shots"}

    amplitude_range: Range = options.number_range((0.1, 0.5), "amplitude range of the sinusoids")
    phase_range: Range = options.number_range(
        (0.0, math.pi), "phase range of the sinusoids, in radians"
    )
    x_range: Range = options.number_range((-5.0, 5.0), "input range of the sinusoids")
    shots: int = options.integer(20, "support points per task, the K of K-shot", metavar="K")
    query_shots: int = options.integer(20, "query points per task", metavar="Q")
    hidden_sizes: tuple[int, ...] = options.sizes(
        (40, 40), "hidden layer sizes of the MLP", metavar="SIZE"
    )

    @classmethod
    def presets(cls) -> dict[str, RunConfig]:
        # MAML's presets are tested with up to 10 steps, as the MAML paper fine-tunes its
        # sinusoid model (Finn et al., 2017, figure 2; cbfinn/maml main.py:218-222).
        finn_task = cls(amplitude_range=(0.1, 5.0), shots=10, query_shots=10)
        finn_training = TrainSettings(meta_steps=70000, meta_batch_size=25, meta_lr=1e-3)
        return {
            # The tutorial's batched run: "MAML Tutorial with JAX" (Jang, 2019).
            "tutorial": RunConfig(
                task=cls(amplitude_range=(0.1, 0.5), shots=20, query_shots=20),
                algorithm=MAML(inner_lr=0.1, inner_steps=1, test_steps=10),
                training=TrainSettings(meta_steps=20000, meta_batch_size=4, meta_lr=1e-3),
                preset="tutorial",
            ),
            # The MAML paper's regression experiment (Finn et al., 2017, section 5.1).
            "finn2017": RunConfig(
                task=finn_task,
                algorithm=MAML(inner_lr=0.01, inner_steps=1, test_steps=10),
                training=finn_training,
                preset="finn2017",
            ),
            # The same experiment as the paper's code runs it (cbfinn/maml, main.py): the
            # sinusoid command line there keeps the default inner step size, update_lr 0.001.
            # Its test scores K query points per task (`metajax eval --query-shots shots`).
            "finn2017-code": RunConfig(
                task=finn_task,
                algorithm=MAML(inner_lr=0.001, inner_steps=1, test_steps=10),
                training=finn_training,
                preset="finn2017-code",
            ),
            # MAML++ (Antoniou et al., 2019) on finn2017's tasks; its paper has no sinusoid
            # setting, so these start from its Omniglot code's (AntreasAntoniou/
            # HowToTrainYourMAMLPytorch, experiment_config/omniglot_maml++-omniglot_1_8_0.1_64_
            # 5_0.json): learned per-layer per-step step sizes (here from finn2017's 0.01),
            # second order from the start (line 41), Adam at 1e-3 cosine-annealed to 1e-5
            # (lines 39-40). Two changes, both measured (README, "MAML++ and iMAML on
            # sinusoids, at presets of their own"): the multi-step loss is kept for the whole
            # run, where the code anneals it over its first 10 of 100 epochs (lines 21, 27), so
            # that the query loss after step 1 keeps its weight (annealed, step 1 scored 0.64-0.75
            # against MAML's 0.575 at K = 5); and 10 inner steps, where the code takes 5
            # (lines 47-48), as MAML is tested with 10 and steps past the trained ones
            # diverged on some tasks. anneal_steps far past meta_steps keeps the weights
            # within 1e-4 of equal. The step sizes move at a hundredth of the meta learning
            # rate: at the code's one rate for everything they turn negative and grow tenfold
            # within 1 200 meta-steps, and meta-training diverges.
            "finn2017-maml++": RunConfig(
                task=finn_task,
                algorithm=MAMLPlusPlus(
                    initial_lr=0.01,
                    inner_steps=10,
                    anneal_steps=1_000_000_000,
                    step_size_lr_scale=0.01,
                ),
                training=dataclasses.replace(
                    finn_training, meta_lr_schedule="cosine", meta_lr_end=1e-5
                ),
                preset="finn2017-maml++",
            ),
            # iMAML (Rajeswaran et al., 2019) on finn2017's tasks; its paper has no sinusoid
            # setting: its Omniglot lambda 2 and 5 conjugate-gradient steps
            # (aravindr93/imaml_dev examples/README.md:12), the proximal inner loop of its
            # paper's algorithm 2, finn2017's outer loop. The inner loop is 10 iterations of
            # L-BFGS, not gradient descent: meta-training sharpens the support loss until every
            # step size tried diverged (README, "At MAML's settings, and on sinusoids").
            "finn2017-imaml": RunConfig(
                task=finn_task,
                algorithm=IMAML(
                    inner_lr=0.01,
                    inner_steps=10,
                    prox_lambda=2.0,
                    cg_steps=5,
                    inner_solver="lbfgs",
                ),
                training=finn_training,
                preset="finn2017-imaml",
            ),
        }

    @property
    def distribution(self) -> SinusoidDistribution:
        return SinusoidDistribution(self.amplitude_range, self.phase_range, self.x_range)

    def build_model(self, key: Array) -> MLP:
        return mlp(key, (1, *self.hidden_sizes, 1))

    def loss(self, model: Any, batch: Any) -> tuple[Array, dict[str, Array]]:
        return mse_loss(model, batch), {}

    def sample_tasks(self, key: Array, num_tasks: int) -> Task:
        return self.distribution.sample_tasks(key, num_tasks, self.shots, self.query_shots)

    def eval_tasks(self, key: Array, num_tasks: int, shots: int, query_shots: int) -> Task:
        # The sinusoids and the query points are the same for every K; the support points are
        # drawn for each K alone.
        sinusoid_key, support_key, query_key = jax.random.split(key, 3)
        distribution = self.distribution
        sinusoids = distribution.sample_sinusoids(sinusoid_key, num_tasks)
        return Task(
            support=distribution.sample_points(
                jax.random.fold_in(support_key, shots), sinusoids, shots
            ),
            query=distribution.sample_points(
                jax.random.fold_in(query_key, query_shots), sinusoids, query_shots
            ),
        )

    def validation_sizes(self) -> tuple[int, int]:
        return self.shots, self.query_shots

    def eval_query_shots(self) -> int:
        return 100  # drawn over the whole x range: a steadier estimate of the error than K

    def task_distribution(self) -> SinusoidDistribution:
        return self.distribution

    def describe(self) -> str:
        return f"K={self.shots}"

    def plot_example(self, path: Path, run: TrainedRun, adapt_steps: int, key: Array) -> None:
        from metajax import plots  # matplotlib is imported only by the code that draws

        sinusoid, support, grid, curves = _adaptation_curves(
            run.learner, run.meta_params, run.static, self, adapt_steps, key
        )
        target, *predicted = np.asarray(curves)
        predictions = []
        for step, values in enumerate(predicted):
            mse = float(np.mean((values - target) ** 2))
            label = "pre-update" if step == 0 else f"after {step} step{'s' if step > 1 else ''}"
            predictions.append((f"{label} (MSE {mse:.3g})", values))
        plots.plot_adaptation(
            path,
            np.asarray(grid),
            target,
            predictions,
            (np.asarray(support[0]), np.asarray(support[1])),
            title=(
                f"Held-out task A={float(sinusoid.amplitude):.2f}, "
                f"phase={float(sinusoid.phase):.2f}: {self.shots}-shot, "
                f"{run.algorithm.adaptation_text()}"
            ),
        )

    def prepare_example(self, run: TrainedRun, adapt_steps: int, key: Array) -> None:
        jax.block_until_ready(
            _adaptation_curves(run.learner, run.meta_params, run.static, self, adapt_steps, key)
        )

    @classmethod
    def upgrade_config(cls, values: dict[str, Any], config_format: int) -> dict[str, Any]:
        """Format 1, metajax 0.1's: flat keys, with ``k_shot``, ``k_query`` and ``steps``."""
        if config_format != 1:
            return super().upgrade_config(values, config_format)
        sections: dict[str, dict[str, Any]] = {"task": {}, "hparams": {}, "training": {}}
        top = {"family": cls.name}
        for key, value in values.items():
            if key in ("preset", "algorithm"):
                top[key] = value
            elif value is None:  # "the preset's value" in format 1
                continue
            elif key in _FORMAT_1_KEYS:
                section, name = _FORMAT_1_KEYS[key]
                sections[section][name] = value
            else:
                raise ValueError(f"unknown config keys: {key}")
        if top.get("algorithm") == "pretrain" and sections["hparams"].get("first_order") is False:
            del sections["hparams"]["first_order"]  # format 1 wrote it for every algorithm
        return {**top, **sections}


_FORMAT_1_KEYS = {
    **{key: ("task", key) for key in ("amplitude_range", "phase_range", "x_range")},
    "k_shot": ("task", "shots"),
    "k_query": ("task", "query_shots"),
    "hidden_sizes": ("task", "hidden_sizes"),
    **{key: ("hparams", key) for key in ("inner_lr", "inner_steps", "first_order")},
    **{key: ("training", key) for key in declared(TrainSettings)},
    "steps": ("training", "meta_steps"),
}
"""Where each key of a format-1 config lives now: (section, name)."""


@eqx.filter_jit
def _adaptation_curves(
    learner: MetaLearner,
    meta_params: Params,
    static: Any,
    config: SinusoidConfig,
    adapt_steps: int,
    key: Array,
) -> tuple[Sinusoid, Any, Array, Array]:
    """One held-out sinusoid, its support set, and the curves of the adaptation figure on a grid
    over the x range: the target first, then the model after 0..adapt_steps inner steps."""
    distribution = config.distribution
    sinusoid_key, x_key = jax.random.split(key)
    sinusoids = distribution.sample_sinusoids(sinusoid_key, 1)
    task, sinusoid = jax.tree.map(
        lambda leaf: leaf[0], (distribution.tasks_for(x_key, sinusoids, config.shots, 0), sinusoids)
    )
    low, high = distribution.x_range
    grid = jnp.linspace(low, high, 200)[:, None]
    predicted = learner.adapt_trajectory(
        meta_params,
        task.support,
        adapt_steps,
        observe=lambda params: jax.vmap(eqx.combine(params, static))(grid),
    )
    curves = jnp.concatenate([sinusoid(grid)[None], predicted])[..., 0]
    return sinusoid, task.support, grid[:, 0], curves
