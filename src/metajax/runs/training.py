"""Runs of any task family and algorithm: from a config to a finished run directory, and back.

:func:`train` writes ``config.json`` first, then ``metrics.jsonl`` and ``checkpoints/`` as
training goes (see :func:`metajax.runs.training_run.run`), then ``params.eqx`` (the
meta-parameters), the figures ``adaptation.png`` (the family's) and ``meta_loss.png`` (see
:mod:`metajax.runs.figures`), and last ``summary.json``. :func:`resume` continues a stopped run
bit for bit; :func:`metajax.load` gives a finished run back, ready to adapt to new tasks.
"""

import contextlib
import importlib
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
from jax.sharding import Mesh

from metajax.config import registry
from metajax.config.family import family_learner
from metajax.config.run_config import RunConfig
from metajax.config.streams import TEST_STREAM, stream_key
from metajax.core import multi_process, sharding
from metajax.core.memory import OutOfMemoryError
from metajax.runs import checkpoints, metrics, run_dir, training_run
from metajax.runs.figures import PlotSettings, draw, plot
from metajax.runs.loaded_run import LoadedRun, existing_run_dir, run_config
from metajax.runs.recording import DIVERGED_FACTOR, FINAL_LOSS_WINDOW
from metajax.runs.setup import (
    Setup,
    build,
    check_traceable,
    memory_sizes,
    validator,
    warn_of_settings,
)
from metajax.runs.stop_signals import StopSignals


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

    In a multi-process run (see :mod:`metajax.core.multi_process`), every process calls this with
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
      sinks: more places for the metrics (see :class:`metajax.runs.metrics.MetricsSink`).
      devices: how many of ``jax.devices()`` share each task batch (all of them by default,
        and all of every process's in a multi-process run; see :mod:`metajax.core.sharding`); the
        meta-batch size must be a multiple of it. The result is the same on any number, up to
        the order of float additions.

    Returns:
      The summary (``summary.json``): the final meta-loss (the mean over the last 1000
      meta-steps), the first meta-step's (``initial_meta_loss``), whether the run diverged
      though every value stayed finite (``diverged``: a final meta-loss over 10 times the
      first, which also warns, :class:`~metajax.DivergenceWarning`), the meta-steps per
      second, the compile and training times, the numbers of devices and processes, the
      number of micro-batches (as chosen, when automatic), and the SHA-256 of ``params.eqx``
      (``params_sha256``, on the process that writes the run), which loading the run checks.

    Raises:
      ValueError: if the config's family or algorithm is not registered.
      RunDirError: if ``out`` is a file, or holds an earlier run and ``overwrite`` is false.
      FolderError: if ``out`` lies under a file or cannot be written.
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
    earlier: run_dir.SetAside | None = None
    try:
        # Every check before anything is written; an error on any process stops them all.
        with multi_process.together("setting the run up"):
            mesh = _task_mesh(config, devices)
            if multi_process.is_writer():
                run_dir.check_writable(out)  # before the data is read, which may take minutes
            if tensorboard:
                metrics.tensorboard_writer()
            data = config.task.prepare()
            check_traceable(config)
            if multi_process.is_writer():
                warn_of_settings(config)
                earlier = run_dir.prepare(out, overwrite=overwrite)
                run_dir.write_json(out / run_dir.CONFIG, values)
                if data is not None:
                    run_dir.write_json(out / run_dir.DATA, data)
        # An earlier run that --overwrite replaces is deleted only once the new one has passed
        # the checks of its first compiled call (the memory estimate among them).
        started = None if earlier is None else earlier.discard
        summary = _train(
            config, values, out, False, progress, plots, tensorboard, sinks, mesh, started
        )
    except BaseException:
        if earlier is not None:
            earlier.put_back()
        raise
    if earlier is not None:
        earlier.discard()
    return summary


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
      FolderError: if ``out`` cannot be written.
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
        if multi_process.is_writer():
            run_dir.check_writable(out)  # its next checkpoint would fail after the work
        if tensorboard is None:
            tensorboard = (out / run_dir.TENSORBOARD).is_dir()
        if tensorboard:
            metrics.tensorboard_writer()
        _check_data(out, config.task.prepare())
        check_traceable(config)
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
    if _splits(saved) != _splits(data):
        raise run_dir.RunDirError(
            f"the data differs from what '{path}' records of the run's start (the classes of "
            "each split, or the number of images); resume with the data the run started with"
        )


def _splits(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """What ``data.json`` says of the classes and images of each split (older runs' files
    record more, or less, beside them)."""
    if data is None:
        return None
    return {key: value for key, value in data.items() if key.endswith(("_classes", "_images"))}


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
    on_started: Callable[[], None] | None = None,
) -> dict[str, Any]:
    steps = config.training.meta_steps
    try:
        # Signals stop the work at the next safe point from here on, figures included.
        with StopSignals() as stop, contextlib.ExitStack() as closing:
            setup = build(config, 1 if mesh is None else mesh.size)
            writer = multi_process.is_writer()
            figures = _Figures(out, config, setup, mesh) if plots and writer else None
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
                setup.initial_state,
                config.training,
                resume=resume,
                progress=progress,
                stop=stop,
                sinks=all_sinks,
                steps_per_draw=config.task.steps_per_draw,
                mesh=mesh,
                validate=validator(config, setup),
                on_started=on_started,
            )
            summary = _summary(outcome, steps, resume, mesh, setup.micro_batches)
            if writer and outcome.diverged:
                warnings.warn(_diverged_text(summary), training_run.DivergenceWarning, stacklevel=4)
            if writer:
                sha256 = run_dir.save_params(out / run_dir.PARAMS, outcome.state.meta_params)
                summary["params_sha256"] = sha256
                if figures is not None:
                    stop.raise_if_received(out, steps, steps)
                    figures.draw(outcome.state.meta_params)
                stop.raise_if_received(out, steps, steps)
                run_dir.write_json(out / run_dir.SUMMARY, summary)
    except OutOfMemoryError as error:
        newest = checkpoints.latest(out / run_dir.CHECKPOINTS)
        if multi_process.is_writer() and not resume and (newest is None or newest.step == 0):
            # Nothing was trained: leave no unfinished run to resume or overwrite.
            run_dir.remove_run_files(out)
        raise error.with_sizes(memory_sizes(config)) from None
    return summary


class _Figures:
    """The run's figures. Made as the run starts, it starts a thread that, while the run
    trains, imports matplotlib (about 0.6 s) and compiles the family's figure for the initial
    parameters (which have the trained ones' shapes): the Python thread is free while the
    compiled training calls run, so the figures then wait for little but drawing. The thread
    writes nothing, so a run stopped meanwhile loses nothing; if it fails, drawing meets the
    error again and reports it."""

    def __init__(self, out: Path, config: RunConfig, setup: Setup, mesh: Mesh | None):
        self.out, self.mesh = out, mesh
        self.adapt_steps = PlotSettings().adapt_steps
        learner = family_learner(config.task, config.algorithm, setup.static)
        # One learner for both, so that the figure's compiled program is found again.
        self.run = LoadedRun(
            out, config, setup.initial_state.meta_params, setup.static, learner, setup.loss_fn
        )
        # Not a daemon: a run that ends early (an error, Ctrl-C) waits the second or so the
        # thread needs, rather than have the interpreter stop it inside an XLA compilation.
        self.thread = threading.Thread(target=self._prepare, name="prepare figures")
        self.thread.start()

    def _prepare(self) -> None:
        try:
            importlib.import_module("metajax.plots")
            if self.mesh is None:
                key = stream_key(0, TEST_STREAM)
                self.run.config.task.prepare_example(self.run, self.adapt_steps, key)
        except Exception:  # met again, and reported, when the figures are drawn
            pass

    def draw(self, meta_params: Any) -> None:
        """Draws the figures from the trained parameters in memory on one device; from the
        saved ones, on one device, where they are sharded over a mesh."""
        self.thread.join()
        if self.mesh is not None:
            plot(self.out)
            return
        draw(self.run._replace(meta_params=meta_params), adapt_steps=self.adapt_steps)


def _summary(
    outcome: training_run.RunOutcome,
    steps: int,
    resume: bool,
    mesh: Mesh | None,
    micro_batches: int,
) -> dict[str, Any]:
    """What ``summary.json`` records of a run that trained to its last step."""
    trained = steps - outcome.resumed_from
    return {
        "meta_steps": steps,
        "final_meta_loss": outcome.final_meta_loss,
        "final_meta_loss_window": min(FINAL_LOSS_WINDOW, steps),
        "initial_meta_loss": outcome.initial_loss,
        "diverged": outcome.diverged,
        "resumed_from_step": outcome.resumed_from if resume else None,
        "compile_seconds": round(outcome.compile_seconds, 3),
        "train_seconds": round(outcome.train_seconds, 3),
        "meta_steps_per_second": round(trained / outcome.train_seconds, 1) if trained else None,
        "devices": 1 if mesh is None else mesh.size,
        "processes": jax.process_count(),
        "micro_batches": micro_batches,
    }


def _diverged_text(summary: dict[str, Any]) -> str:
    """What :class:`~metajax.runs.training_run.DivergenceWarning` says of a run."""
    final, initial = summary["final_meta_loss"], summary["initial_meta_loss"]
    return (
        f"meta-training diverged, though every value stayed finite: the final meta-loss, "
        f"{final:.4g} (the mean of the last {summary['final_meta_loss_window']} meta-steps), is "
        f"{final / initial:.3g} times the first meta-step's, {initial:.4g}, and more than "
        f"{DIVERGED_FACTOR:g} times is no training; the run's meta-parameters are not usable. "
        "Start a new run with smaller step sizes (`meta_lr`, or the algorithm's inner step size)"
    )


def _tensorboard_sink(out: Path, config: RunConfig, resume: bool) -> metrics.TensorBoardMetrics:
    resumed_through = None
    if resume:  # the records that metrics.jsonl keeps when the run resumes
        last = checkpoints.latest(out / run_dir.CHECKPOINTS)
        step = 0 if last is None else last.step
        resumed_through = step - step % config.training.log_every
    return metrics.TensorBoardMetrics(out / run_dir.TENSORBOARD, resumed_through)
