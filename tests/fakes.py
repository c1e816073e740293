"""A task family and an algorithm that exist only in the tests, registered as a user's would be.

``lines``: regression on lines ``y = slope * x + offset``, with a plain dict of arrays as the
model (no Equinox), and an aux metric, ``hit_rate`` (the share of query points predicted within
0.1), that is higher-is-better and the family's primary metric. It draws each meta-step's tasks
inside the training loop, as a family of large tasks would.

``learned-lr``: gradient descent in the inner loop with a step size that is meta-learned along
with the initialisation (a one-number Meta-SGD): its meta-parameters are
``{"params": ..., "log_lr": ...}``, so saving and loading a run must keep ``log_lr``.

Importing this module registers both; the metajax command loads it as a plugin (see
``plugin_path``).
"""

import dataclasses
import functools
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

import metajax
from metajax import options
from metajax.core.meta_learner import loss_value, mean_over_tasks

SIGNAL_ON_BUILD: int | None = None
"""When set, building the lines model's arrays sends this signal to the process (a user's
Ctrl-C while a run is set up; tracing the model, before the run writes, does not)."""


@metajax.register_family
@dataclasses.dataclass(frozen=True)
class Lines(metajax.TaskFamily):
    """Lines y = slope * x + offset, fitted by a one-hidden-layer network of dict arrays."""

    name: ClassVar[str] = "lines"
    description: ClassVar[str] = "Line regression, a family defined in the tests."
    metrics: ClassVar[dict[str, metajax.Metric]] = {
        "mse": metajax.Metric("MSE"),
        "hit_rate": metajax.Metric("hit rate", higher_is_better=True),
    }
    primary_metric: ClassVar[str] = "hit_rate"
    eval_shots: ClassVar[tuple[int, ...]] = (2, 8)
    steps_per_draw: ClassVar[int | None] = 1  # each step's tasks drawn inside the loop

    slope_range: tuple[float, float] = options.number_range((-1.0, 1.0), "slopes of the lines")
    shots: int = options.integer(5, "support points per task", metavar="K")
    query_shots: int = options.integer(5, "query points per task", metavar="Q")
    width: int = options.integer(16, "hidden units")

    @classmethod
    def presets(cls) -> dict[str, metajax.RunConfig]:
        training = metajax.TrainSettings(
            meta_steps=200,
            meta_batch_size=4,
            log_every=30,
            steps_per_call=50,
            checkpoint_every=100,
            keep_checkpoints=2,
        )
        return {
            "small": metajax.RunConfig(cls(), metajax.MAML(inner_lr=0.1), training, preset="small"),
            "steep": metajax.RunConfig(
                cls(slope_range=(2.0, 3.0), width=8),
                metajax.MAML(inner_lr=0.05, inner_steps=2),
                dataclasses.replace(training, meta_steps=100),
                preset="steep",
            ),
        }

    def build_model(self, key: jax.Array) -> dict[str, jax.Array]:
        if SIGNAL_ON_BUILD is not None:  # when the compiled model is built, not traced
            jax.debug.callback(functools.partial(os.kill, os.getpid(), SIGNAL_ON_BUILD))
        first, second = jax.random.split(key)
        return {
            "w1": jax.random.normal(first, (1, self.width)) / math.sqrt(2.0),
            "b1": jnp.zeros(self.width),
            "w2": jax.random.normal(second, (self.width, 1)) / math.sqrt(self.width),
            "b2": jnp.zeros(1),
        }

    def loss(self, model: Any, batch: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        x, y = batch
        hidden = jnp.tanh(x @ model["w1"] + model["b1"])
        error = hidden @ model["w2"] + model["b2"] - y
        return jnp.mean(error**2), {"hit_rate": jnp.mean(jnp.abs(error) < 0.1)}

    def _lines(self, key: jax.Array, num_tasks: int) -> tuple[jax.Array, jax.Array]:
        slope_key, offset_key = jax.random.split(key)
        slope = jax.random.uniform(
            slope_key, (num_tasks, 1, 1), minval=self.slope_range[0], maxval=self.slope_range[1]
        )
        return slope, jax.random.uniform(offset_key, (num_tasks, 1, 1), minval=-0.5, maxval=0.5)

    def _points(self, key: jax.Array, lines: Any, count: int) -> tuple[jax.Array, jax.Array]:
        slope, offset = lines
        x = jax.random.uniform(key, (slope.shape[0], count, 1), minval=-1.0, maxval=1.0)
        return x, slope * x + offset

    def sample_tasks(self, key: jax.Array, num_tasks: int) -> metajax.Task:
        line_key, support_key, query_key = jax.random.split(key, 3)
        lines = self._lines(line_key, num_tasks)
        return metajax.Task(
            self._points(support_key, lines, self.shots),
            self._points(query_key, lines, self.query_shots),
        )

    def eval_tasks(
        self, key: jax.Array, num_tasks: int, shots: int, query_shots: int
    ) -> metajax.Task:
        line_key, support_key, query_key = jax.random.split(key, 3)
        lines = self._lines(line_key, num_tasks)
        return metajax.Task(
            self._points(jax.random.fold_in(support_key, shots), lines, shots),
            self._points(query_key, lines, query_shots),
        )

    def eval_query_shots(self) -> int:
        return 20

    def task_distribution(self) -> tuple[float, float]:
        return self.slope_range

    def describe(self) -> str:
        return f"K={self.shots}"

    def plot_example(
        self, path: Path, run: metajax.LoadedRun, adapt_steps: int, key: jax.Array
    ) -> None:
        from metajax import plots

        task = jax.tree.map(lambda leaf: leaf[0], self.eval_tasks(key, 1, self.shots, 0))
        grid = jnp.linspace(-1.0, 1.0, 50)[:, None]

        def predict(params: Any) -> jax.Array:
            model = run.model(params)
            return (jnp.tanh(grid @ model["w1"] + model["b1"]) @ model["w2"] + model["b2"])[:, 0]

        curves = run.learner.adapt_trajectory(
            run.meta_params, task.support, adapt_steps, observe=predict
        )
        x, y = (np.asarray(a)[:, 0] for a in task.support)
        target = np.interp(np.asarray(grid[:, 0]), np.sort(x), y[np.argsort(x)])
        plots.plot_adaptation(
            path,
            np.asarray(grid[:, 0]),
            target,
            [(f"after {step} steps", np.asarray(c)) for step, c in enumerate(curves)],
            (x, y),
            title="a line",
        )


def learned_lr(
    loss_fn: metajax.LossFn, *, initial_lr: float, inner_steps: int, has_aux: bool = False
) -> metajax.MetaLearner:
    """Gradient descent whose step size, exp(log_lr), is meta-learned with the initialisation."""
    inner_loss = loss_value(loss_fn, has_aux)

    def step(lr: jax.Array, params: Any, support: Any) -> Any:
        grads = jax.grad(inner_loss)(params, support)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads)

    def trajectory(meta: Any, support: Any, steps: int | None, observe: Any) -> Any:
        steps = inner_steps if steps is None else steps
        lr = jnp.exp(meta["log_lr"])

        def body(params: Any, _: Any) -> tuple[Any, Any]:
            return step(lr, params, support), params if observe is None else observe(params)

        final, seen = jax.lax.scan(body, meta["params"], length=steps)
        last = final if observe is None else observe(final)
        return final, jax.tree.map(lambda s, f: jnp.concatenate([s, f[None]]), seen, last)

    def task_loss(meta: Any, task: metajax.Task) -> Any:
        return loss_fn(trajectory(meta, task.support, None, None)[0], task.query)

    meta_loss = mean_over_tasks(task_loss)

    return metajax.MetaLearner(
        init=lambda params: {"params": params, "log_lr": jnp.log(jnp.float32(initial_lr))},
        model_params=lambda meta: meta["params"],
        adapt=lambda meta, support, steps=None: trajectory(meta, support, steps, None)[0],
        adapt_trajectory=lambda meta, support, steps=None, observe=None: trajectory(
            meta, support, steps, observe
        )[1],
        task_loss=task_loss,
        meta_loss=meta_loss,
        meta_grad=jax.value_and_grad(meta_loss, has_aux=has_aux),
        has_aux=has_aux,
    )


@metajax.register_algorithm
@dataclasses.dataclass(frozen=True)
class LearnedLR(metajax.Algorithm):
    """``--algorithm learned-lr``: see :func:`learned_lr`."""

    name: ClassVar[str] = "learned-lr"
    description: ClassVar[str] = "gradient descent with a meta-learned step size (tests only)"

    initial_lr: float = options.number(0.05, "the step size meta-training starts from")
    inner_steps: int = options.integer(1, "inner-loop gradient steps", minimum=0, metavar="S")

    def make(
        self,
        loss_fn: metajax.LossFn,
        *,
        has_aux: bool = False,
        head: metajax.LinearHead | None = None,
    ) -> metajax.MetaLearner:
        return learned_lr(
            loss_fn, initial_lr=self.initial_lr, inner_steps=self.inner_steps, has_aux=has_aux
        )

    @property
    def label(self) -> str:
        return "learned step size"


def plugin_path(root: Path) -> str:
    """A directory that makes this module a metajax plugin, the way an installed package would:
    a distribution whose entry point in the group ``metajax.plugins`` names it. Put it and this
    directory on ``PYTHONPATH``."""
    dist = root / "metajax_test_fakes-1.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: metajax-test-fakes\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text("[metajax.plugins]\nfakes = fakes\n")
    return os.pathsep.join([str(root), str(Path(__file__).parent)])


def line_config(**changes: Any) -> metajax.RunConfig:
    """The ``small`` preset of the lines family, with settings changed by name."""
    return metajax.presets("lines")["small"].replace(**changes)


__all__ = ["SIGNAL_ON_BUILD", "LearnedLR", "Lines", "learned_lr", "line_config", "plugin_path"]
