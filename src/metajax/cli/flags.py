"""Flags generated from the settings: each declared setting becomes ``--its-name``.

Every flag of ``metajax train FAMILY``, ``metajax eval`` and ``metajax plot`` comes from a
settings dataclass (a family's config, the algorithms' hyper-parameters, the training,
evaluation and plot settings), with its help text and its check: this module only turns Python
names into flags (``inner_lr`` into ``--inner-lr``), each kind of setting into what argparse
reads, defaults into help text, and parsed arguments back into a config.

Why argparse, generated from the declarations, rather than tyro: the defaults of ``metajax
train`` depend on the preset chosen on the same command line ("20000 with tutorial, 70000 with
finn2017"), and a flag belongs to the algorithm chosen there; errors must read ``argument
--shots: must be an integer in [1, 2147483647], got 0`` with the usage of the subcommand, and
flags renamed since metajax 0.1 must be named with their new names. That is a hundred lines
over argparse, which the settings' declarations drive; tyro would bring its own help and error
formatting and a dependency, and still need that logic.
"""

import argparse
import dataclasses
import functools
from typing import Any

from metajax.config import registry
from metajax.config.family import TaskFamily
from metajax.config.run_config import RunConfig, presets
from metajax.config.training_settings import TrainSettings
from metajax.options import (
    Choice,
    CountOrWord,
    Flag,
    Integer,
    Kind,
    Number,
    Options,
    Range,
    Sizes,
    Text,
    declared,
)


def flag_name(name: str) -> str:
    """The command-line flag of a setting: ``inner_lr`` is ``--inner-lr``."""
    return "--" + name.replace("_", "-")


@functools.singledispatch
def parser_arguments(kind: Kind) -> dict[str, Any]:
    """Keyword arguments for ``argparse.ArgumentParser.add_argument`` that read a setting of
    this kind."""
    return {"metavar": kind.metavar}


@parser_arguments.register
def _(kind: Integer) -> dict[str, Any]:
    return {"type": int, "metavar": kind.metavar or "N"}


@parser_arguments.register
def _(kind: Number) -> dict[str, Any]:
    return {"type": float, "metavar": kind.metavar or "X"}


@parser_arguments.register
def _(kind: Flag) -> dict[str, Any]:
    return {"action": argparse.BooleanOptionalAction}


@parser_arguments.register
def _(kind: Range) -> dict[str, Any]:
    return {"type": float, "nargs": 2, "metavar": ("LOW", "HIGH")}


@parser_arguments.register
def _(kind: Sizes) -> dict[str, Any]:
    return {"type": int, "nargs": "+", "metavar": kind.metavar or "N"}


@parser_arguments.register
def _(kind: CountOrWord) -> dict[str, Any]:
    word = kind.word

    def parse(text: str) -> int | str:
        if text == word:
            return word
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer or {word}, got {text!r}"
            ) from None

    return {"type": parse, "metavar": kind.metavar or f"N|{word}"}


@parser_arguments.register
def _(kind: Text) -> dict[str, Any]:
    return {"type": str, "metavar": kind.metavar or "TEXT"}


@parser_arguments.register
def _(kind: Choice) -> dict[str, Any]:
    return {"type": type(kind.choices[0]), "choices": kind.choices, "metavar": kind.metavar}


def add_flag(parser: Any, name: str, kind: Kind, default_text: str | None) -> None:
    """Adds the flag of setting ``name`` to an argparse parser or argument group; its value is
    ``None`` unless given, so that only the settings given on the command line are applied."""
    text = kind.help if default_text is None else f"{kind.help} (default: {default_text})"
    parser.add_argument(
        flag_name(name),
        dest=name,
        default=None,
        help=text.replace("%", "%%"),
        **parser_arguments(kind),
    )


def _by_preset(shown: dict[str, str]) -> str:
    """``--help``'s default of a setting whose value may depend on the preset."""
    if len(set(shown.values())) == 1:
        return next(iter(shown.values()))
    return ", ".join(f"{value} with {preset}" for preset, value in shown.items())


def _preset_defaults(kind: Kind, values: dict[str, Any]) -> str:
    def shown(value: Any) -> str:
        return kind.default_text if value is None and kind.default_text else kind.show(value)

    return _by_preset({preset: shown(value) for preset, value in values.items()})


def add_settings(
    parser: Any, settings: type[Options] | Options, by_family: dict[str, dict[str, str]]
) -> None:
    """The flags of ``settings``; a setting whose default each task family chooses shows each
    family's (``by_family``: setting, then family, to the default's text)."""
    for name, kind in declared(settings).items():
        default = kind.default_text or kind.show(getattr(settings, name))
        if name in by_family:
            shown = ", ".join(f"{value} for {family}" for family, value in by_family[name].items())
            default += f": {shown}"
        add_flag(parser, name, kind, default)


def add_family_settings(parser: argparse.ArgumentParser, family: type[TaskFamily]) -> None:
    """``--preset``, ``--algorithm`` and the flags of every setting of a run of ``family``: its
    own, every algorithm's and the training's, with each preset's default."""
    known = presets(family)
    parser.add_argument(
        "--preset",
        choices=list(known),
        help=f"the complete config to start from (default: {next(iter(known))})",
    )
    algorithms = registry.algorithms()
    parser.add_argument(
        "--algorithm",
        choices=list(algorithms),
        help="; ".join(f"{name}: {kind.description}" for name, kind in algorithms.items())
        + " (default: "
        + _by_preset({preset: config.algorithm.name for preset, config in known.items()})
        + ")",
    )
    _add_section(parser, f"{family.name} task settings", known, "task")
    _add_algorithm_settings(parser, known, algorithms)
    _add_section(parser, "training settings", known, "training")


def _add_section(
    parser: argparse.ArgumentParser, title: str, known: dict[str, RunConfig], section: str
) -> None:
    """The flags of one section of the presets' configs (``task`` or ``training``)."""
    group = parser.add_argument_group(title)
    for name, kind in declared(next(iter(known.values())).settings()[section]).items():
        values = {preset: getattr(c.settings()[section], name) for preset, c in known.items()}
        add_flag(group, name, kind, _preset_defaults(kind, values))


def _add_algorithm_settings(
    parser: argparse.ArgumentParser, known: dict[str, RunConfig], algorithms: dict[str, Any]
) -> None:
    """One flag for each hyper-parameter name of any algorithm; its default is the preset's
    (carried over to an algorithm that shares the name) or the first owner's own."""
    group = parser.add_argument_group("algorithm settings")
    for name in dict.fromkeys(n for algorithm in algorithms.values() for n in declared(algorithm)):
        owners = {
            a: declared(other)[name] for a, other in algorithms.items() if name in declared(other)
        }
        kind = next(iter(owners.values()))
        values = {
            preset: getattr(config.with_algorithm(next(iter(owners))).algorithm, name)
            for preset, config in known.items()
        }
        # Algorithms sharing a flag may describe it each in their own words.
        helps = {a: other.help for a, other in owners.items()}
        if len(set(helps.values())) > 1:
            kind = dataclasses.replace(kind, help="; ".join(f"{a}: {h}" for a, h in helps.items()))
        owned = "" if len(owners) == len(algorithms) else f"; {', '.join(owners)} only"
        add_flag(group, name, kind, _preset_defaults(kind, values) + owned)


def renamed_settings(family: type[TaskFamily]) -> dict[str, str]:
    """The settings of a run of ``family`` renamed since metajax 0.1, old name to new."""
    renamed = {**family.renamed_options, **TrainSettings.renamed_options}
    for algorithm in registry.algorithms().values():
        renamed.update(algorithm.renamed_options)
    return renamed


def train_config(args: argparse.Namespace) -> RunConfig:
    """The config that parsed ``metajax train FAMILY`` arguments ask for: the preset, with the
    algorithm and the settings given on the command line.

    Raises:
      OptionError: naming the setting of an out-of-range or misplaced flag.
    """
    family: type[TaskFamily] = args.family_type
    known = presets(family)
    config = known[args.preset or next(iter(known))]
    if args.algorithm is not None:
        config = config.with_algorithm(args.algorithm)
    names = [*declared(family), *declared(TrainSettings)]
    names += [name for algorithm in registry.algorithms().values() for name in declared(algorithm)]
    given = {name: getattr(args, name) for name in dict.fromkeys(names)}
    return config.replace(**{name: value for name, value in given.items() if value is not None})


def given_settings(args: argparse.Namespace, settings: type[Options]) -> dict[str, Any]:
    """The settings of ``settings`` that parsed arguments give, by name."""
    values = {name: getattr(args, name) for name in declared(settings)}
    return {name: value for name, value in values.items() if value is not None}


def renamed_hint(args: argparse.Namespace, extras: list[str]) -> str:
    """Says what flags renamed since metajax 0.1 are called now."""
    renamed = {flag_name(old): flag_name(new) for old, new in args.renamed.items()}
    flags = [extra.split("=")[0] for extra in extras]
    hints = [f"{flag} is now {renamed[flag]}" for flag in flags if flag in renamed]
    return f" ({'; '.join(hints)})" if hints else ""
