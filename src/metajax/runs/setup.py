"""What a run's config builds for training: the model, the learner, the outer optimizer and
the task sampler; the scores of validation tasks; the errors tracing finds before anything is
written, and the settings known to fail; and the settings that set how much memory the run
needs."""

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from metajax.config.algorithm import SettingWarning
from metajax.config.family import family_learner, family_loss
from metajax.config.run_config import RunConfig
from metajax.config.streams import INIT_STREAM, TRAIN_STREAM, VALIDATION_STREAM, stream_key
from metajax.core import memory
from metajax.core.meta_learner import LossFn, MetaLearner, Params, loss_value
from metajax.core.meta_steps import TaskSampler, TrainState, init_train_state
from metajax.core.micro_batching import automatic_micro_batches, micro_batched
from metajax.options import Integer, Sizes, declared
from metajax.runs import metrics


class Setup(NamedTuple):
    """What a config builds for training: the model's parameters, the rest of the model, the
    loss, the learner (in ``micro_batches`` chunks), the outer optimizer (as the training
    settings describe it), the task sampler, the key of the training tasks and the state before
    the first meta-step."""

    params: Params
    static: Any
    loss_fn: LossFn
    learner: MetaLearner
    optimizer: optax.GradientTransformation
    sample_tasks: TaskSampler
    micro_batches: int
    initial_state: TrainState

    @property
    def train_key(self) -> jax.Array:
        """The root of the training tasks' stream: the initial state's key."""
        return self.initial_state.key


def build(config: RunConfig, devices: int = 1) -> Setup:
    """Builds the initial model, the learner and the task sampler for a config whose task
    batches ``devices`` devices share (which sets the automatic number of micro-batches)."""
    seed = config.training.seed

    def parameters() -> tuple[Params, Any]:
        return eqx.partition(
            config.task.build_model(stream_key(seed, INIT_STREAM)), eqx.is_inexact_array
        )

    # The rest of the model is known from a trace, before the learner it shapes is built ...
    _, static = eqx.filter_eval_shape(parameters)
    training = config.training
    chunks = training.micro_batches or automatic_micro_batches(training.meta_batch_size, devices)
    learner = micro_batched(family_learner(config.task, config.algorithm, static), chunks)
    optimizer = training.outer_optimizer()

    # ... so that the parameters, the keys and the optimizer's state come from one compiled
    # program, not from one for each random key, initialiser and optimizer leaf.
    @eqx.filter_jit
    def initialise() -> tuple[Params, TrainState]:
        params, _ = parameters()
        train_key = stream_key(seed, TRAIN_STREAM)
        return params, init_train_state(learner, optimizer, params, train_key)

    with memory.converted("building the model"):
        params, initial_state = initialise()
    return Setup(
        params=params,
        static=static,
        loss_fn=family_loss(config.task, static),
        learner=learner,
        optimizer=optimizer,
        sample_tasks=config.task.task_sampler(config.training.meta_batch_size),
        micro_batches=chunks,
        initial_state=initial_state,
    )


def memory_sizes(config: RunConfig) -> dict[str, Any]:
    """The settings that set how much memory a run needs, by name."""
    sizes = {
        name: getattr(part, name)
        for part in (config.task, config.algorithm)
        for name, kind in declared(part).items()
        # test_steps sets evaluation's adaptation, not training's memory.
        if isinstance(kind, (Integer, Sizes))
        and name != "test_steps"
        and getattr(part, name) is not None
    }
    training = config.training
    return {
        "meta_batch_size": training.meta_batch_size,
        "steps_per_call": training.steps_per_call,
        **sizes,
    }


def check_traceable(config: RunConfig) -> None:
    """Errors that tracing finds come here, before the run writes anything, rather than at the
    first compilation: the algorithm on the family's model and tasks (an ANIL pattern that
    picks no parameter, say), and validation tasks that cannot be drawn. Nothing is compiled."""
    family = config.task

    def adapt_one_task(key: jax.Array) -> Params:
        params, static = eqx.partition(family.build_model(key), eqx.is_inexact_array)
        learner = family_learner(family, config.algorithm, static)
        task = jax.tree.map(lambda leaf: leaf[0], family.task_sampler(1)(key))
        return learner.adapt(learner.init(params), task.support)

    # The key is made inside the traced functions: made here, it would compile programs.
    jax.eval_shape(lambda: adapt_one_task(jax.random.key(0)))
    if config.training.validation_tasks:
        sizes = family.validation_sizes()
        jax.eval_shape(lambda: family.validation_tasks(jax.random.key(0), 1, *sizes))


def warn_of_settings(config: RunConfig) -> None:
    """Warns (:class:`~metajax.SettingWarning`) of each setting the algorithm knows to make a
    run diverge or not learn (:meth:`~metajax.Algorithm.setting_warnings`)."""
    for text in config.algorithm.setting_warnings(
        functools.cache(lambda: support_curvature(config))
    ):
        warnings.warn(text, SettingWarning, stacklevel=3)


def support_curvature(config: RunConfig, iterations: int = 30) -> float:
    """The largest eigenvalue in magnitude of the support loss's Hessian at the initial model
    parameters on the first training task, by power iteration with Hessian-vector products."""
    family = config.task
    seed = config.training.seed

    @jax.jit
    def measure() -> jax.Array:
        key = stream_key(seed, INIT_STREAM)
        params, static = eqx.partition(family.build_model(key), eqx.is_inexact_array)
        task = jax.tree.map(lambda leaf: leaf[0], family.task_sampler(1)(key))
        inner_loss = loss_value(family_loss(family, static), True)

        def hvp(vector: Params) -> Params:
            def gradient(p: Params) -> Params:
                return jax.grad(inner_loss)(p, task.support)

            return jax.jvp(gradient, (params,), (vector,))[1]

        def norm(tree: Params) -> jax.Array:
            return jnp.sqrt(sum(jnp.vdot(leaf, leaf) for leaf in jax.tree.leaves(tree)))

        def step(_: int, vector: Params) -> Params:
            product = hvp(vector)
            return jax.tree.map(lambda leaf: leaf / norm(product), product)

        start = jax.tree.map(lambda leaf: jnp.ones_like(leaf) / leaf.size, params)
        return norm(hvp(jax.lax.fori_loop(0, iterations, step, start)))

    with memory.converted("measuring the support loss's curvature"):
        return float(measure())


def validator(config: RunConfig, setup: Setup) -> Callable[[Params], dict[str, float]] | None:
    """The scores of meta-parameters on the run's validation tasks, after the training's inner
    steps: ``validation_<metric>``, the means over ``validation_tasks`` tasks of evaluation
    seed 0's validation stream (``None`` without validation tasks)."""
    count = config.training.validation_tasks
    if not count:
        return None
    family = config.task
    learner, loss_fn = setup.learner, setup.loss_fn
    loss_name = family.loss_metric()

    @jax.jit
    def scores(meta_params: Params) -> dict[str, jax.Array]:
        key = stream_key(0, VALIDATION_STREAM)
        tasks = family.validation_tasks(key, count, *family.validation_sizes())

        def one_task(task: Any) -> dict[str, jax.Array]:
            loss, aux = loss_fn(learner.adapt(meta_params, task.support), task.query)
            return {loss_name: loss, **aux}

        values = jax.lax.map(one_task, tasks, batch_size=family.eval_batch_size or count)
        return jax.tree.map(lambda leaf: leaf.mean(), values)

    def validate(meta_params: Params) -> dict[str, float]:
        with memory.converted("scoring validation tasks"):
            values = scores(meta_params)
        return {f"{metrics.VALIDATION_PREFIX}{name}": float(v) for name, v in values.items()}

    return validate
