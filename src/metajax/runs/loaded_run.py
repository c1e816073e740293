"""A finished run read back from its directory: its config, its meta-parameters and the learner
that adapts them, ready for new tasks (:func:`load`)."""

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import equinox as eqx
import jax

from metajax.config.algorithm import Algorithm
from metajax.config.family import family_learner, family_loss
from metajax.config.run_config import RunConfig
from metajax.config.streams import INIT_STREAM, stream_key
from metajax.core.meta_learner import LossFn, MetaLearner, Params
from metajax.runs import run_dir
from metajax.runs.run_dir import load_config


def existing_run_dir(path: str | Path) -> Path:
    """``path``, if it is an existing directory."""
    path = Path(path)
    if not path.exists():
        raise run_dir.RunDirError(f"run directory '{path}' does not exist")
    if not path.is_dir():
        raise run_dir.RunDirError(f"'{path}' is a file, not a run directory")
    return path


def run_config(path: Path) -> RunConfig:
    """The config of the run in the directory ``path``."""
    if not (path / run_dir.CONFIG).exists():
        raise run_dir.RunDirError(
            f"'{path / run_dir.CONFIG}' is missing; is '{path}' a metajax run?"
        )
    return load_config(path / run_dir.CONFIG)


class LoadedRun(NamedTuple):
    """A finished run, ready to adapt to new tasks.

    ``run.adapt(support)`` adapts to one task's support set and returns the model parameters;
    ``run.model(params)`` puts them into the model (an Equinox module for the built-in
    families); ``run.loss_fn(params, batch)`` is the family's ``(loss, aux)``.

    Attributes:
      path: the run directory.
      config: the run's config.
      meta_params: the meta-trained meta-parameters, as ``params.eqx`` holds them.
      static: the part of the model that is not parameters.
      learner: the algorithm, built as in training.
      loss_fn: ``loss_fn(params, batch) -> (loss, aux)``.
      summary: what the run's ``summary.json`` records (empty for a run without one, such
        as a run that is still training).
    """

    path: Path
    config: RunConfig
    meta_params: Params
    static: Any
    learner: MetaLearner
    loss_fn: LossFn
    summary: Mapping[str, Any] = MappingProxyType({})

    @property
    def algorithm(self) -> Algorithm:
        """The algorithm's hyper-parameters: ``config.algorithm``."""
        return self.config.algorithm

    @property
    def params(self) -> Params:
        """The model parameters that adaptation starts from."""
        return self.learner.model_params(self.meta_params)

    def model(self, params: Params | None = None) -> Any:
        """The model with ``params`` (by default :attr:`params`, the unadapted ones)."""
        return eqx.combine(self.params if params is None else params, self.static)

    def adapt(self, support: Any, inner_steps: int | None = None) -> Params:
        """The model parameters adapted to one task's ``support`` set."""
        return self.learner.adapt(self.meta_params, support, inner_steps)


def load(path: str | Path) -> LoadedRun:
    """A finished run directory, with its learner and meta-parameters.

    Raises:
      RunDirError: if the directory, its config or its ``params.eqx`` is missing or damaged.
    """
    path = existing_run_dir(path)
    config = run_config(path)
    seed = config.training.seed
    params_like, static = eqx.filter_eval_shape(
        lambda: eqx.partition(
            config.task.build_model(stream_key(seed, INIT_STREAM)), eqx.is_inexact_array
        )
    )
    loss_fn = family_loss(config.task, static)
    learner = family_learner(config.task, config.algorithm, static)
    like = jax.eval_shape(learner.init, params_like)
    summary_path = path / run_dir.SUMMARY
    summary = run_dir.read_json(summary_path) if summary_path.exists() else {}
    summary = summary if isinstance(summary, dict) else {}
    # Runs of metajax 0.2 and earlier record no SHA-256.
    meta_params = run_dir.load_params(path / run_dir.PARAMS, like, summary.get("params_sha256"))
    return LoadedRun(path, config, meta_params, static, learner, loss_fn, summary)
