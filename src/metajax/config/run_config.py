"""A run's config: a task family's settings, an algorithm's hyper-parameters and training's.

A :class:`RunConfig` is complete: every value it holds is the one the run uses. Presets are
complete configs too (``metajax.presets("sinusoid")["finn2017"]``); a variation is
``config.replace(seed=1, inner_lr=0.02)``. ``config.json`` holds it as

.. code-block:: json

    {"config_format": 2, "metajax_version": "...", "family": "sinusoid", "preset": "tutorial",
     "task": {...}, "algorithm": "maml", "hparams": {...}, "training": {...}}

A config file may leave settings out: they then come from its preset (or the family's first
preset), so ``{"family": "sinusoid", "training": {"seed": 3}}`` is the tutorial's run with
seed 3. Configs written by metajax 0.1 (format 1) are read too, through their family.
"""

import dataclasses
from importlib.metadata import version
from typing import Any, Self

from metajax import options
from metajax._validation import OptionError, UnknownOptionError
from metajax.config import registry
from metajax.config.algorithm import Algorithm
from metajax.config.family import TaskFamily
from metajax.config.training_settings import TrainSettings
from metajax.options import Options, declared

CONFIG_FORMAT = 2
"""The layout of ``config.json``; format 1 (metajax 0.1) is converted when read."""

SECTIONS = ("task", "hparams", "training")
"""The parts of a config that hold settings, in ``config.json`` and :class:`RunConfig`."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a meta-training run.

    Attributes:
      task: the task family's settings, an instance of a registered :class:`TaskFamily`.
      algorithm: the algorithm's hyper-parameters, an instance of a registered
        :class:`Algorithm`.
      training: the outer loop's settings.
      preset: the name of the preset the config started from, for titles and run names
        (``None`` for one built by hand).
    """

    task: TaskFamily
    algorithm: Algorithm
    training: TrainSettings = TrainSettings()
    preset: str | None = None

    def __post_init__(self) -> None:
        for name, kind in (("task", TaskFamily), ("algorithm", Algorithm)):
            if not isinstance(getattr(self, name), kind):
                raise OptionError(name, f"a {kind.__name__} instance", getattr(self, name))
        if not isinstance(self.training, TrainSettings):
            raise OptionError("training", "a TrainSettings instance", self.training)
        if self.preset is not None and not isinstance(self.preset, str):
            raise OptionError("preset", "a preset's name or None", self.preset)

    @property
    def family(self) -> str:
        """The task family's name."""
        return self.task.name

    def settings(self) -> dict[str, Options]:
        """The three parts that hold settings, by their ``config.json`` keys."""
        return {"task": self.task, "hparams": self.algorithm, "training": self.training}

    def replace(self, **changes: Any) -> Self:
        """A copy with settings changed by name, wherever they live: ``config.replace(seed=1,
        inner_lr=0.02, shots=5)``.

        Raises:
          UnknownOptionError: for a name that is not a setting of this config's family,
            algorithm or training.
          OptionError: for a value out of its range.
        """
        parts = self.settings()
        updates: dict[str, dict[str, Any]] = {key: {} for key in parts}
        for name, value in changes.items():
            owner = next((key for key, part in parts.items() if name in declared(part)), None)
            if owner is None:
                hint = "".join(part.renamed_hint([name]) for part in parts.values())
                raise UnknownOptionError(name, f"is not a setting of {self._owners()}{hint}")
            updates[owner][name] = value
        return dataclasses.replace(
            self,
            task=options.replace(self.task, **updates["task"]),
            algorithm=options.replace(self.algorithm, **updates["hparams"]),
            training=dataclasses.replace(self.training, **updates["training"]),
        )

    def _owners(self) -> str:
        return (
            f"task family '{self.family}', algorithm '{self.algorithm.name}' or the training "
            "settings"
        )

    def with_algorithm(self, name: str) -> Self:
        """The config with another algorithm; hyper-parameters it shares with the current one
        (``inner_lr``, say) keep their values, the others take the new algorithm's defaults."""
        algorithm_type = registry.algorithm(name)
        if isinstance(self.algorithm, algorithm_type):
            return self
        shared = {
            field: getattr(self.algorithm, field)
            for field in declared(algorithm_type)
            if field in declared(self.algorithm)
        }
        return dataclasses.replace(self, algorithm=algorithm_type(**shared))

    def to_dict(self) -> dict[str, Any]:
        """The config as ``config.json`` holds it, with the metajax version that wrote it."""
        return {
            "config_format": CONFIG_FORMAT,
            "metajax_version": version("metajax"),
            "family": self.family,
            "preset": self.preset,
            "task": self.task.to_json(),
            "algorithm": self.algorithm.name,
            "hparams": self.algorithm.to_json(),
            "training": self.training.to_json(),
        }

    @classmethod
    def from_dict(cls, values: Any) -> "RunConfig":
        """The config that a dict from ``config.json`` describes; settings it leaves out come
        from its preset, or the family's first.

        Raises:
          ValueError: for another config format, an unknown family, algorithm or key.
          OptionError: for a value out of its range.
        """
        if not isinstance(values, dict):
            raise ValueError(f"a config must be a JSON object, got {type(values).__name__}")
        values = dict(values)
        written_by = values.pop("metajax_version", "?")
        config_format = values.pop("config_format", None)
        if config_format is None and isinstance(values.get("task"), str):
            config_format = 1  # metajax 0.1 named the family "task" and wrote no format
        if config_format is None:
            config_format = CONFIG_FORMAT
        if type(config_format) is not int or not 1 <= config_format <= CONFIG_FORMAT:
            raise ValueError(
                f"it was written by metajax {written_by} in config format {config_format!r}; "
                f"this metajax ({version('metajax')}) reads formats 1 to {CONFIG_FORMAT}"
            )
        if config_format == 1:
            name = values.pop("task", None)
            values = registry.family(name).upgrade_config(values, config_format)
        unknown = sorted(set(values) - {"family", "preset", "algorithm", *SECTIONS})
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        if "family" not in values:
            raise ValueError(
                f'a config must name its task family: "family": one of '
                f"{sorted(registry.families())}"
            )
        family = registry.family(values["family"])
        known = presets(family)
        preset = values.get("preset", next(iter(known)))
        if preset is not None and (not isinstance(preset, str) or preset not in known):
            raise OptionError("preset", f"one of {sorted(known)}", preset)
        base = known[next(iter(known)) if preset is None else preset]
        if "algorithm" in values:
            base = base.with_algorithm(values["algorithm"])
        return cls(
            task=family.from_json(values.get("task", {}), base=base.task, where="task"),
            algorithm=type(base.algorithm).from_json(
                values.get("hparams", {}), base=base.algorithm, where="hparams"
            ),
            training=TrainSettings.from_json(
                values.get("training", {}), base=base.training, where="training"
            ),
            preset=preset,
        )


def presets(family: str | type[TaskFamily]) -> dict[str, RunConfig]:
    """A task family's presets, complete configs by name; the first is its default.

    Args:
      family: a registered family's name, or a family class.

    Raises:
      OptionError: for a name that is not a registered family's.
      TypeError: if the family's ``presets()`` returns anything but run configs of that family.
    """
    family_type = registry.family(family) if isinstance(family, str) else family
    found = family_type.presets()
    for name, config in found.items():
        if not (isinstance(config, RunConfig) and isinstance(config.task, family_type)):
            raise TypeError(
                f"preset {name!r} of task family {family_type.name!r} must be a RunConfig whose "
                f"task is a {family_type.__name__}, got {config!r}"
            )
    if not found:
        raise TypeError(f"task family {family_type.name!r} has no presets; give it one at least")
    return dict(found)
