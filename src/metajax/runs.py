"""Runs of any task family and algorithm: from a config to a finished run directory, and back.

:func:`train` writes ``config.json`` first, then ``metrics.jsonl`` and ``checkpoints/`` as
training goes (see :func:`metajax.training_run.run`), then ``params.eqx`` (the meta-parameters),
the figures ``adaptation.png`` (the family's) and ``meta_loss.png`` (see
:mod:`metajax.run_figures`), and last ``summary.json``. :func:`resume` continues a stopped run
bit for bit; :func:`metajax.load` gives a finished run back, ready to adapt to new tasks.
"""

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import equinox as eqx
import jax
import optax
from jax.sharding import Mesh

from metajax import (
    checkpoints,
    memory,
    metrics,
    multi_process,
    registry,
    run_dir,
    sharding,
    training_run,
)
from metajax.algorithms.meta_learner import LossFn, MetaLearner, Params
from metajax.config import (
    INIT_STREAM,
    TRAIN_STREAM,
    VALIDATION_STREAM,
    RunConfig,
    stream_key,
)
from metajax.loaded_run import existing_run_dir, family_loss, run_config
from metajax.memory import OutOfMemoryError
from metajax.micro_batching import automatic_micro_batches, micro_batched
from metajax.options import Integer, Sizes, declared
from metajax.run_figures import plot
from metajax.stop_signals import StopSignals
from metajax.training import TaskSampler, TrainState, init_train_state
from metajax.training_run import FINAL_LOSS_WINDOW


class Setup(NamedTuple):
    """What a config builds for training: the model's parameters, the rest of the model, the
    loss, the learner (in ``micro_batches`` chunks), the outer optimizer (Adam at ``meta_lr``),
    the task sampler and the key of the training tasks."""

    params: Params
    static: Any
    loss_fn: LossFn
    learner: MetaLearner
    optimizer: optax.GradientTransformation
    sample_tasks: TaskSampler
    train_key: jax.Array
    micro_batches: int

    def initial_state(self) -> TrainState:
        """The state before the first meta-step."""
        return init_train_state(self.learner, self.optimizer, self.params, self.train_key)


def build(config: RunConfig, devices: int = 1) -> Setup:
    """Builds the initial model, the learner and the task sampler for a config whose task
    batches ``devices`` devices share (which sets the automatic number of micro-batches)."""
    with memory.converted("building the model"):
        model = config.task.build_model(stream_key(config.training.seed, INIT_STREAM))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    loss_fn = family_loss(config.task, static)
    training = config.training
    chunks = training.micro_batches or automatic_micro_batches(training.meta_batch_size, devices)
    return Setup(
        params=params,
        static=static,
        loss_fn=loss_fn,
        learner=micro_batched(config.algorithm.make(loss_fn, has_aux=True), chunks),
        optimizer=optax.adam(config.training.meta_lr),
        sample_tasks=config.task.task_sampler(config.training.meta_batch_size),
        train_key=stream_key(config.training.seed, TRAIN_STREAM),
        micro_batches=chunks,
    )


def memory_sizes(config: RunConfig) -> dict[str, Any]:
    """The settings that set how much memory a run needs, by name."""
    sizes = {
        name: getattr(part, name)
        for part in (config.task, config.algorithm)
        for name, kind in declared(part).items()
        if isinstance(kind, (Integer, Sizes))
    }
    training = config.training
    return {
        "meta_batch_size": training.meta_batch_size,
        "steps_per_call": training.steps_per_call,
        **sizes,
    }


def train(
    config: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    plots: bool = True,
    tensorboard: bool = False,
    sinks: Sequence[metrics.MetricsSink] = (),
    devices: int | None = None,
) -> dict[str, Any]:
    """Meta-trains as ``config`` says and writes the run directory ``out``.

    In a multi-process run (see :mod:`metajax.multi_process`), every process calls this with
    the same arguments; process 0 alone writes ``out`` and draws the figures, and every process
    returns the summary.

    Args:
      config: the run's settings.
      out: the run directory; an earlier run there is an error unless ``overwrite``.
      overwrite: replace an earlier run's files in ``out``.
      progress: show a progress bar.
      plots: draw the figures.
      tensorboard: also write the metrics for TensorBoard, in ``out/tensorboard`` (needs
        tensorboardX).
      sinks: more places for the metrics (see :class:`metajax.metrics.MetricsSink`).
      devices: how many of ``jax.devices()`` share each task batch (all of them by default,
        and all of every process's in a multi-process run; see :mod:`metajax.sharding`); the
        meta-batch size must be a multiple of it. The result is the same on any number, up to
        the order of float additions.

    Returns:
      The summary (``summary.json``): the final meta-loss (the mean over the last 1000
      meta-steps), the meta-steps per second, the compile and training times, the numbers
      of devices and processes, and the number of micro-batches (as chosen, when automatic).

    Raises:
      ValueError: if the config's family or algorithm is not registered.
      RunDirError: if ``out`` holds an earlier run and ``overwrite`` is false.
      MissingDependencyError: ``tensorboard`` without tensorboardX installed.
      OutOfMemoryError: the run needs more memory than the device has; it names the sizes.
      metajax.Interrupted: SIGINT or SIGTERM stopped the run after a checkpoint; :func:`resume`
        continues it.
      metajax.Diverged: a meta-loss or meta-gradient was not finite.
      ProcessFailed: another process of a multi-process run failed to set the run up (its
        data missing, say).
    """
    _check_registered(config)
    out, values = Path(out), config.to_dict()
    # Every check before anything is written; an error on any process stops them all.
    with multi_process.together("setting the run up"):
        mesh = _task_mesh(config, devices)
        if tensorboard:
            metrics.tensorboard_writer()
        data = config.task.prepare()
        _check_traceable(config)
        if multi_process.is_writer():
            run_dir.prepare(out, overwrite=overwrite)
            run_dir.write_json(out / run_dir.CONFIG, values)
            if data is not None:
                run_dir.write_json(out / run_dir.DATA, data)
    return _train(config, values, out, False, progress, plots, tensorboard, sinks, mesh)


def _check_registered(config: RunConfig) -> None:
    """A run's config must name a family and an algorithm that resuming and loading can find."""
    for kind, name, registered in (
        ("task family", config.family, registry.families().get(config.family)),
        ("algorithm", config.algorithm.name, registry.algorithms().get(config.algorithm.name)),
    ):
        used = type(config.task if kind == "task family" else config.algorithm)
        if registered is not used:
            decorator = "register_family" if kind == "task family" else "register_algorithm"
            raise ValueError(
                f"the {kind} {used.__name__} is not registered as {name!r}; decorate it with "
                f"metajax.{decorator} so that the run can be resumed and loaded"
            )


def resume(
    out: str | Path,
    *,
    progress: bool = True,
    plots: bool = True,
    tensorboard: bool | None = None,
    sinks: Sequence[metrics.MetricsSink] = (),
    devices: int | None = None,
) -> dict[str, Any]:
    """Continues the run in ``out`` from its newest checkpoint, with its saved config.

    The result is bit for bit the run that was never stopped. A finished run (one with
    ``summary.json``) is left alone and its summary returned. TensorBoard logging continues if
    the run has a ``tensorboard`` directory, unless ``tensorboard`` says otherwise. A run may
    resume on another number of ``devices`` or processes than it started on (see
    :func:`train`); it is then the same run up to the order of float additions. In a
    multi-process run, every process must see ``out`` at the same path.

    Raises:
      RunDirError: if ``out`` is not a run directory or its config cannot be read.
      CheckpointError: if the newest checkpoint is damaged or was written for another config,
        or the processes of a multi-process run found different ones.
      metajax.Interrupted, metajax.Diverged, OutOfMemoryError, ProcessFailed: as for
        :func:`train`.
    """
    with multi_process.together("reading the run"):
        out = existing_run_dir(out)
        config = run_config(out)
        done = finished(out)
    if all(multi_process.gather(done)):
        return run_dir.read_json(out / run_dir.SUMMARY)
    with multi_process.together("setting the run up"):
        mesh = _task_mesh(config, devices)
        if tensorboard is None:
            tensorboard = (out / run_dir.TENSORBOARD).is_dir()
        if tensorboard:
            metrics.tensorboard_writer()
        _check_data(out, config.task.prepare())
        _check_traceable(config)
        # Checkpoints record the config as config.json holds it, in the format it was written.
        values = run_dir.read_json(out / run_dir.CONFIG)
    return _train(config, values, out, True, progress, plots, tensorboard, sinks, mesh)


def _task_mesh(config: RunConfig, devices: int | None) -> Mesh | None:
    """The mesh a run shards its task batches over (``None`` on one device: no sharding)."""
    mesh = sharding.task_mesh(devices)
    sharding.check_divisible(config.training.meta_batch_size, mesh)
    return mesh if mesh.size > 1 else None


def _check_data(out: Path, data: dict[str, Any] | None) -> None:
    """A run resumes only on the data it started with (as its ``data.json`` records it)."""
    path = out / run_dir.DATA
    saved = run_dir.read_json(path) if path.exists() else None
    if saved != data:
        raise run_dir.RunDirError(
            f"the data differs from what '{path}' records of the run's start (the classes of "
            "each split, or the number of images); resume with the data the run started with"
        )


def _check_traceable(config: RunConfig) -> None:
    """Errors that tracing finds come here, before the run writes anything, rather than at the
    first compilation: the algorithm on the family's model and tasks (an ANIL pattern that
    picks no parameter, say), and validation tasks that cannot be drawn. Nothing is compiled."""
    family = config.task

    def adapt_one_task(key: jax.Array) -> Params:
        params, static = eqx.partition(family.build_model(key), eqx.is_inexact_array)
        learner = config.algorithm.make(family_loss(family, static), has_aux=True)
        task = jax.tree.map(lambda leaf: leaf[0], family.task_sampler(1)(key))
        return learner.adapt(learner.init(params), task.support)

    key = jax.random.key(0)
    jax.eval_shape(adapt_one_task, key)
    if config.training.validation_tasks:
        sizes = family.validation_sizes()
        jax.eval_shape(lambda key: family.validation_tasks(key, 1, *sizes), key)


def finished(path: str | Path) -> bool:
    """Whether the run in ``path`` has finished: ``summary.json`` is the last file it writes."""
    return (Path(path) / run_dir.SUMMARY).exists()


def _train(
    config: RunConfig,
    values: dict[str, Any],
    out: Path,
    resume: bool,
    progress: bool,
    plots: bool,
    tensorboard: bool,
    sinks: Sequence[metrics.MetricsSink],
    mesh: Mesh | None,
) -> dict[str, Any]:
    steps = config.training.meta_steps
    try:
        # Signals stop the work at the next safe point from here on, figures included.
        with StopSignals() as stop, contextlib.ExitStack() as closing:
            setup = build(config, 1 if mesh is None else mesh.size)
            writer = multi_process.is_writer()
            all_sinks = list(sinks)
            if tensorboard and writer:
                board = _tensorboard_sink(out, config, resume)
                closing.callback(board.close)  # also if the run fails before it trains
                all_sinks.append(board)
            outcome = training_run.run(
                out,
                values,
                setup.learner,
                setup.optimizer,
                setup.sample_tasks,
                setup.initial_state(),
                config.training,
                resume=resume,
                progress=progress,
                stop=stop,
                sinks=all_sinks,
                steps_per_draw=config.task.steps_per_draw,
                mesh=mesh,
                validate=_validator(config, setup),
            )
            trained = steps - outcome.resumed_from
            summary = {
                "meta_steps": steps,
                "final_meta_loss": outcome.final_meta_loss,
                "final_meta_loss_window": min(FINAL_LOSS_WINDOW, steps),
                "resumed_from_step": outcome.resumed_from if resume else None,
                "compile_seconds": round(outcome.compile_seconds, 3),
                "train_seconds": round(outcome.train_seconds, 3),
                "meta_steps_per_second": (
                    round(trained / outcome.train_seconds, 1) if trained else None
                ),
                "devices": 1 if mesh is None else mesh.size,
                "processes": jax.process_count(),
                "micro_batches": setup.micro_batches,
            }
            if writer:
                run_dir.save_params(out / run_dir.PARAMS, outcome.state.meta_params)
                if plots:
                    stop.raise_if_received(out, steps, steps)
                    plot(out)
                stop.raise_if_received(out, steps, steps)
                run_dir.write_json(out / run_dir.SUMMARY, summary)
    except OutOfMemoryError as error:
        newest = checkpoints.latest(out / run_dir.CHECKPOINTS)
        if multi_process.is_writer() and not resume and (newest is None or newest.step == 0):
            # Nothing was trained: leave no unfinished run to resume or overwrite.
            run_dir.remove_run_files(out)
        raise error.with_sizes(memory_sizes(config)) from None
    return summary


def _validator(config: RunConfig, setup: Setup) -> Callable[[Params], dict[str, float]] | None:
    """The scores of meta-parameters on the run's validation tasks, after the training's inner
    steps: ``validation_<metric>``, the means over ``validation_tasks`` tasks of evaluation
    seed 0's validation stream (``None`` without validation tasks)."""
    count = config.training.validation_tasks
    if not count:
        return None
    family = config.task
    learner, loss_fn = setup.learner, setup.loss_fn
    loss_name = family.loss_metric()
    key = stream_key(0, VALIDATION_STREAM)

    @jax.jit
    def scores(meta_params: Params) -> dict[str, jax.Array]:
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


def _tensorboard_sink(out: Path, config: RunConfig, resume: bool) -> metrics.TensorBoardMetrics:
    resumed_through = None
    if resume:  # the records that metrics.jsonl keeps when the run resumes
        last = checkpoints.latest(out / run_dir.CHECKPOINTS)
        step = 0 if last is None else last.step
        resumed_through = step - step % config.training.log_every
    return metrics.TensorBoardMetrics(out / run_dir.TENSORBOARD, resumed_through)
