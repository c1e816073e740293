"""MAML on sinusoid regression, from a config to a finished run directory."""

import dataclasses
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax import _validation, run_dir, training_run
from metajax._validation import MAX_INT32
from metajax.algorithms.maml import maml
from metajax.algorithms.meta_learner import LossFn, MetaLearner
from metajax.algorithms.pretrain import pretrain
from metajax.models import MLP, mlp, mse_loss
from metajax.tasks.sinusoid import SINUSOID_PRESETS, SinusoidFamily
from metajax.training import TaskSampler, init_train_state
from metajax.training_run import FINAL_LOSS_WINDOW

TASK_NAME = "sinusoid"
ALGORITHMS = ("maml", "pretrain")
CONFIG_FORMAT = 1
"""The version of the config file's keys; a config of another version is refused."""

# Independent random streams, each ``fold_in(jax.random.key(seed), stream)``: initialisation
# and training tasks from a run's seed; test and validation tasks from an evaluation seed, which
# training never uses.
INIT_STREAM, TRAIN_STREAM, TEST_STREAM, VALIDATION_STREAM = range(4)


def stream_key(seed: int, stream: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), stream)


_FAMILY_FIELDS = ("amplitude_range", "phase_range", "x_range")


def _family_settings(family: SinusoidFamily) -> dict[str, tuple[float, float]]:
    return {name: getattr(family, name) for name in _FAMILY_FIELDS}


PRESETS: dict[str, dict[str, Any]] = {
    # The tutorial's batched run: "MAML Tutorial with JAX" (Jang, 2019).
    "tutorial": dict(
        **_family_settings(SINUSOID_PRESETS["tutorial"]),
        meta_batch_size=4,
        k_shot=20,
        k_query=20,
        inner_lr=0.1,
        inner_steps=1,
        meta_lr=1e-3,
        steps=20000,
    ),
    # The MAML paper's regression experiment (Finn et al., 2017, section 5.1).
    "finn2017": dict(
        **_family_settings(SINUSOID_PRESETS["finn2017"]),
        meta_batch_size=25,
        k_shot=10,
        k_query=10,
        inner_lr=0.01,
        inner_steps=1,
        meta_lr=1e-3,
        steps=70000,
    ),
}
"""The settings each preset gives every field left at ``None`` in :class:`SinusoidConfig`."""


@dataclasses.dataclass(frozen=True)
class SinusoidConfig:
    """Everything that defines a sinusoid meta-training run.

    ``preset`` supplies every task-family and training setting left at ``None``, so
    ``SinusoidConfig()`` is the tutorial's run and ``SinusoidConfig(preset="finn2017", seed=1)``
    the paper's with another seed. Every field is validated on construction
    (:class:`~metajax.OptionError` names the field).

    Attributes:
      preset: ``tutorial`` or ``finn2017``, see ``PRESETS``.
      algorithm: ``maml``, or ``pretrain`` for the pretrained baseline (plain regression on all
        tasks; ``inner_lr`` and ``inner_steps`` are then its default fine-tuning at test time).
      amplitude_range, phase_range, x_range: the task family, see
        :class:`~metajax.SinusoidFamily`.
      meta_batch_size: tasks per meta-step.
      k_shot: support points per task.
      k_query: query points per task.
      inner_lr: the inner-loop step size.
      inner_steps: inner-loop gradient steps (0 is plain multi-task training).
      meta_lr: Adam's step size for the meta-parameters.
      steps: meta-steps.
      first_order: first-order MAML (no gradients through the inner gradients).
      hidden_sizes: the hidden layer sizes of the MLP (input and output have size 1).
      seed: the seed of every random number in the run.
      log_every: meta-steps per record in ``metrics.jsonl``.
      steps_per_call: meta-steps fused into one compiled call. The task batches of a call are
        drawn at once, so their memory grows with it.
      checkpoint_every: meta-steps between checkpoints (one is also written at the start and at
        the end, and when SIGINT or SIGTERM stops the run).
      keep_checkpoints: how many of the newest checkpoints to keep.
    """

    preset: str = "tutorial"
    algorithm: str = "maml"
    amplitude_range: tuple[float, float] | None = None
    phase_range: tuple[float, float] | None = None
    x_range: tuple[float, float] | None = None
    meta_batch_size: int | None = None
    k_shot: int | None = None
    k_query: int | None = None
    inner_lr: float | None = None
    inner_steps: int | None = None
    meta_lr: float | None = None
    steps: int | None = None
    first_order: bool = False
    hidden_sizes: tuple[int, ...] = (40, 40)
    seed: int = 0
    log_every: int = 100
    steps_per_call: int = 1000
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3

    def __post_init__(self):
        preset = _validation.choice("preset", self.preset, PRESETS)
        resolved = {
            name: default if getattr(self, name) is None else getattr(self, name)
            for name, default in PRESETS[preset].items()
        }
        family = SinusoidFamily(**{name: resolved[name] for name in _FAMILY_FIELDS})
        resolved.update(_family_settings(family))  # the ranges as the family checked them
        for name in ("meta_batch_size", "k_shot", "k_query", "steps"):
            resolved[name] = _validation.integer(name, resolved[name], 1, MAX_INT32)
        resolved["inner_steps"] = _validation.integer(
            "inner_steps", resolved["inner_steps"], 0, MAX_INT32
        )
        for name in ("inner_lr", "meta_lr"):
            resolved[name] = _validation.positive_number(name, resolved[name])
        resolved["algorithm"] = _validation.choice("algorithm", self.algorithm, ALGORITHMS)
        resolved["first_order"] = _validation.boolean("first_order", self.first_order)
        if resolved["first_order"] and resolved["algorithm"] != "maml":
            raise _validation.OptionError(
                "first_order", f"false with algorithm '{self.algorithm}'", self.first_order
            )
        resolved["hidden_sizes"] = _validation.sizes(
            "hidden_sizes", self.hidden_sizes, 1, MAX_INT32
        )
        resolved["seed"] = _validation.integer("seed", self.seed, 0)
        if resolved["seed"] >= 2**32:
            raise _validation.OptionError("seed", "an integer in [0, 2**32)", self.seed)
        for name in ("log_every", "steps_per_call", "checkpoint_every", "keep_checkpoints"):
            resolved[name] = _validation.integer(name, getattr(self, name), 1, MAX_INT32)
        for name, value in resolved.items():
            object.__setattr__(self, name, value)

    @property
    def family(self) -> SinusoidFamily:
        return SinusoidFamily(**{name: getattr(self, name) for name in _FAMILY_FIELDS})

    @property
    def run_settings(self) -> training_run.RunSettings:
        return training_run.RunSettings(
            steps=self.steps,
            steps_per_call=self.steps_per_call,
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every,
            keep_checkpoints=self.keep_checkpoints,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that records the task family, the config format and the metajax
        version too."""
        fields = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }
        return {
            "task": TASK_NAME,
            "config_format": CONFIG_FORMAT,
            "metajax_version": version("metajax"),
            **fields,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SinusoidConfig":
        """The inverse of :meth:`to_dict`; ``task``, ``config_format`` and ``metajax_version``
        may be left out.

        Raises:
          ValueError: for another task family, another config format or unknown keys.
          OptionError: for a value out of its range.
        """
        if not isinstance(values, dict):
            raise ValueError(f"a config must be a JSON object, got {type(values).__name__}")
        values = dict(values)
        task = values.pop("task", TASK_NAME)
        if task != TASK_NAME:
            raise ValueError(f"this is a config for task {task!r}, not '{TASK_NAME}'")
        written_by = values.pop("metajax_version", "?")
        config_format = values.pop("config_format", CONFIG_FORMAT)
        if type(config_format) is not int or config_format != CONFIG_FORMAT:
            raise ValueError(
                f"it was written by metajax {written_by} in config format {config_format!r}; "
                f"this metajax ({version('metajax')}) reads format {CONFIG_FORMAT}"
            )
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**values)


def load_config(path: str | Path) -> SinusoidConfig:
    """Reads a config file written by :func:`train` (a run's ``config.json``).

    Raises:
      RunDirError: naming the file, if it is missing, not JSON, or not a valid config.
    """
    path = Path(path)
    if path.is_dir():
        raise run_dir.RunDirError(
            f"'{path}' is a directory; give a config file such as '{path / run_dir.CONFIG}'"
        )
    if not path.exists():
        raise run_dir.RunDirError(f"config file '{path}' does not exist")
    values = run_dir.read_json(path)
    try:
        return SinusoidConfig.from_dict(values)
    except (ValueError, TypeError, OverflowError) as error:
        raise run_dir.RunDirError(f"'{path}' is not a usable config: {error}") from None


class Setup(NamedTuple):
    """The pieces a config builds, shared by training, plotting and evaluation."""

    model: MLP
    static: MLP
    learner: MetaLearner
    sample_tasks: TaskSampler
    train_key: jax.Array


def build(config: SinusoidConfig) -> Setup:
    """Builds the initial model, the learner and the task sampler for a config."""
    model = mlp(stream_key(config.seed, INIT_STREAM), (1, *config.hidden_sizes, 1))
    _, static = eqx.partition(model, eqx.is_inexact_array)
    learner = make_learner(config, regression_loss(static))
    sample_tasks = partial(
        config.family.sample_tasks,
        num_tasks=config.meta_batch_size,
        num_support=config.k_shot,
        num_query=config.k_query,
    )
    return Setup(model, static, learner, sample_tasks, stream_key(config.seed, TRAIN_STREAM))


def regression_loss(static: MLP) -> LossFn:
    """``loss_fn(params, batch)``: the MSE of the model that ``params`` and ``static`` make."""

    def loss_fn(params, batch):
        return mse_loss(eqx.combine(params, static), batch)

    return loss_fn


def make_learner(config: SinusoidConfig, loss_fn: LossFn, inner_lr=None) -> MetaLearner:
    """The config's algorithm on ``loss_fn``; ``inner_lr`` replaces the config's."""
    inner_lr = config.inner_lr if inner_lr is None else inner_lr
    if config.algorithm == "pretrain":
        return pretrain(loss_fn, inner_lr=inner_lr, num_steps=config.inner_steps)
    return maml(
        loss_fn, inner_lr=inner_lr, num_steps=config.inner_steps, first_order=config.first_order
    )


def train(
    config: SinusoidConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Meta-trains on sinusoids and writes the run directory ``out``.

    The directory receives ``config.json`` first, then ``metrics.jsonl`` and checkpoints in
    ``checkpoints/`` as training goes (see :func:`metajax.training_run.run`), then
    ``params.eqx`` (the meta-trained model), with ``plots`` the figures ``adaptation.png`` and
    ``meta_loss.png``, and last ``summary.json``.

    Args:
      config: the run's settings.
      out: the run directory; an earlier run there is an error unless ``overwrite``.
      overwrite: replace an earlier run's files in ``out``.
      progress: show a progress bar.
      plots: draw the figures.

    Returns:
      The summary: the final meta-loss (the mean over the last 1000 meta-steps), the meta-steps
      per second and the compile and training times.

    Raises:
      RunDirError: if ``out`` holds an earlier run and ``overwrite`` is false.
      metajax.training_run.Interrupted: SIGINT or SIGTERM stopped the run after a checkpoint;
        :func:`resume` continues it.
      metajax.training_run.Diverged: a meta-loss or meta-gradient was not finite.
    """
    out = run_dir.prepare(out, overwrite=overwrite)
    run_dir.write_json(out / run_dir.CONFIG, config.to_dict())
    return _train(config, out, resume=False, progress=progress, plots=plots)


def resume(out: str | Path, *, progress: bool = True, plots: bool = True) -> dict[str, Any]:
    """Continues the run in ``out`` from its newest checkpoint, with its saved config.

    The result is bit for bit the run that was never stopped. A finished run (one with
    ``summary.json``) is left alone and its summary returned.

    Raises:
      RunDirError: if ``out`` is not a run directory or its config cannot be read.
      CheckpointError: if the newest checkpoint is damaged or was written for another config.
      metajax.training_run.Interrupted, metajax.training_run.Diverged: as for :func:`train`.
    """
    out = _existing_run_dir(out)
    config = load_config(out / run_dir.CONFIG)
    if finished(out):
        return run_dir.read_json(out / run_dir.SUMMARY)
    return _train(config, out, resume=True, progress=progress, plots=plots)


def finished(path: str | Path) -> bool:
    """Whether the run in ``path`` has finished: ``summary.json`` is the last file it writes."""
    return (Path(path) / run_dir.SUMMARY).exists()


def _train(
    config: SinusoidConfig, out: Path, *, resume: bool, progress: bool, plots: bool
) -> dict[str, Any]:
    # Signals stop the work at the next safe point from here on, figures included.
    with training_run.StopSignals() as stop:
        setup = build(config)
        params, _ = eqx.partition(setup.model, eqx.is_inexact_array)
        optimizer = optax.adam(config.meta_lr)
        outcome = training_run.run(
            out,
            config.to_dict(),
            setup.learner,
            optimizer,
            setup.sample_tasks,
            init_train_state(setup.learner, optimizer, params, setup.train_key),
            config.run_settings,
            resume=resume,
            progress=progress,
            stop=stop,
        )
        model = eqx.combine(outcome.state.meta_params, setup.static)
        run_dir.save_model(out / run_dir.PARAMS, model)
        if plots:
            stop.raise_if_received(out, config.steps, config.steps)
            plot(out)
        stop.raise_if_received(out, config.steps, config.steps)
        trained = config.steps - outcome.resumed_from
        summary = {
            "steps": config.steps,
            "final_meta_loss": float(np.mean(outcome.recent_losses[-FINAL_LOSS_WINDOW:])),
            "final_meta_loss_window": min(FINAL_LOSS_WINDOW, config.steps),
            "resumed_from_step": outcome.resumed_from if resume else None,
            "compile_seconds": round(outcome.compile_seconds, 3),
            "train_seconds": round(outcome.train_seconds, 3),
            "steps_per_second": round(trained / outcome.train_seconds, 1) if trained else None,
        }
        run_dir.write_json(out / run_dir.SUMMARY, summary)
    return summary


def algorithm_label(config: SinusoidConfig) -> str:
    if config.algorithm == "pretrain":
        return "pretrained"
    return "first-order MAML" if config.first_order else "MAML"


def _existing_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise run_dir.RunDirError(f"run directory '{path}' does not exist")
    if not path.is_dir():
        raise run_dir.RunDirError(f"'{path}' is a file, not a run directory")
    return path


def load(path: str | Path) -> tuple[SinusoidConfig, MLP]:
    """The config and the meta-trained model of a finished run directory."""
    path = _existing_run_dir(path)
    config = load_config(path / run_dir.CONFIG)
    skeleton = eqx.filter_eval_shape(mlp, jax.random.key(0), (1, *config.hidden_sizes, 1))
    model = run_dir.load_model(path / run_dir.PARAMS, skeleton)
    return config, model


def plot(path: str | Path, *, adapt_steps: int = 5) -> list[Path]:
    """Draws a run's figures from its directory and returns their paths.

    ``adaptation.png``: a held-out task (from the test stream of evaluation seed 0),
    its ``k_shot`` support points, and the model before adaptation and after 1 to
    ``adapt_steps`` inner steps, each labelled with its mean squared error over the x range.
    ``meta_loss.png``: the logged meta-loss against meta-steps.

    Raises:
      ValueError: if ``adapt_steps`` is not an integer >= 1.
      RunDirError: if the directory is not a finished run.
    """
    adapt_steps = _validation.integer("adapt_steps", adapt_steps, 1)
    from metajax import plots  # matplotlib is imported only by the code that draws

    path = Path(path)
    config, model = load(path)
    # The learner only; build() would also initialise a model that plotting never uses.
    learner = make_learner(config, regression_loss(eqx.partition(model, eqx.is_inexact_array)[1]))
    family = config.family

    sinusoid, support, grid, curves = _adaptation_curves(
        learner, family, config.k_shot, adapt_steps, model, stream_key(0, TEST_STREAM)
    )
    target, *predicted = np.asarray(curves)
    predictions = []
    for step, values in enumerate(predicted):
        mse = float(np.mean((values - target) ** 2))
        label = "pre-update" if step == 0 else f"after {step} step{'s' if step > 1 else ''}"
        predictions.append((f"{label} (MSE {mse:.3g})", values))

    adaptation_path = path / run_dir.ADAPTATION_PLOT
    plots.plot_adaptation(
        adaptation_path,
        np.asarray(grid),
        target,
        predictions,
        (np.asarray(support[0]), np.asarray(support[1])),
        title=(
            f"Held-out task A={float(sinusoid.amplitude):.2f}, "
            f"phase={float(sinusoid.phase):.2f}: {config.k_shot}-shot, inner lr {config.inner_lr}"
        ),
    )

    records = run_dir.read_metrics(path / run_dir.METRICS)
    meta_loss_path = path / run_dir.META_LOSS_PLOT
    plots.plot_meta_loss(
        meta_loss_path,
        np.array([record["step"] for record in records]),
        np.array([record["meta_loss"] for record in records]),
        title=(
            f"{algorithm_label(config)}, preset {config.preset}: "
            f"{config.meta_batch_size} tasks/step, K={config.k_shot}, "
            f"{config.inner_steps} inner step{'s' if config.inner_steps != 1 else ''}"
        ),
        ylabel=(
            f"{'MSE on all points' if config.algorithm == 'pretrain' else 'query MSE'}, "
            f"mean of {config.log_every} steps"
        ),
    )
    return [adaptation_path, meta_loss_path]


@eqx.filter_jit
def _adaptation_curves(learner, family, k_shot, adapt_steps, model, key):
    """One held-out sinusoid, its support set, and the curves of the adaptation figure on a grid
    over the x range: the target first, then the model after 0..adapt_steps inner steps."""
    sinusoid_key, x_key = jax.random.split(key)
    sinusoids = family.sample_sinusoids(sinusoid_key, 1)
    task, sinusoid = jax.tree.map(
        lambda leaf: leaf[0], (family.tasks_for(x_key, sinusoids, k_shot, 0), sinusoids)
    )
    support = task.support
    grid = jnp.linspace(*family.x_range, 200)[:, None]
    params, static = eqx.partition(model, eqx.is_inexact_array)
    trajectory = learner.adapt_trajectory(params, support, adapt_steps)
    predicted = jax.vmap(lambda p: jax.vmap(eqx.combine(p, static))(grid))(trajectory)
    curves = jnp.concatenate([sinusoid(grid)[None], predicted])[..., 0]
    return sinusoid, support, grid[:, 0], curves
