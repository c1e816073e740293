"""Settings declared once: each field of a settings dataclass carries its check, help and flag.

A task family's config, an algorithm's hyper-parameters, the training settings and the
evaluation settings are frozen dataclasses derived from :class:`Options`, whose fields are
declared with this module's functions (:func:`integer`, :func:`choice` and the others). The
declaration is the only place a setting is written: the dataclass checks every field when it
is constructed (an :class:`~metajax.OptionError` names the field), :meth:`Options.to_json` and
:meth:`Options.from_json` give the config file, and the command line makes each its flag
(``inner_lr`` becomes ``--inner-lr``) with the declared help text and placeholder. It may
import only metajax._validation.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self, TypeVar

import jax

from metajax import _validation
from metajax._validation import MAX_INT32, OptionError

_KIND = "metajax.option"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Kind:
    """What a setting may hold, and how the command line reads it.

    Attributes:
      help: one line for ``--help``.
      metavar: the placeholder ``--help`` shows for the value (``None``: the kind's own).
      optional: ``None`` is a valid value, meaning "chosen elsewhere" (``default_text`` says
        where).
      default_text: what ``--help`` shows as the default, when the value itself would not say
        it (``"the run's"``).
    """

    help: str
    metavar: str | tuple[str, ...] | None = None
    optional: bool = False
    default_text: str | None = None

    def check(self, name: str, value: Any) -> Any:
        """``value`` in its canonical type; raises :class:`OptionError` naming ``name``."""
        if value is None and self.optional:
            return None
        return self._check(name, value)

    def _check(self, name: str, value: Any) -> Any:
        raise NotImplementedError

    def show(self, value: Any) -> str:
        """``value`` as text, as ``--help`` writes a default."""
        return str(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Integer(Kind):
    minimum: int = 1
    maximum: int = MAX_INT32

    def _check(self, name: str, value: Any) -> int:
        return _validation.integer(name, value, self.minimum, self.maximum)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Number(Kind):
    """A finite number > 0 (with ``zero``, >= 0); with ``traceable``, also a scalar JAX array,
    which may be traced (so that step sizes can be swept with ``vmap``)."""

    traceable: bool = False
    zero: bool = False

    def _check(self, name: str, value: Any) -> Any:
        if not self.traceable:
            return _validation.positive_number(name, value, zero=self.zero)
        checked = _validation.step_size(name, value)
        # A concrete array is kept as a number, so that the config can be saved; only a traced
        # one (inside jit or vmap) stays an array.
        return checked if isinstance(checked, jax.core.Tracer) else float(checked)

    def show(self, value: Any) -> str:
        return f"{value:g}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Flag(Kind):
    def _check(self, name: str, value: Any) -> bool:
        return _validation.boolean(name, value)

    def show(self, value: Any) -> str:
        return "on" if value else "off"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Range(Kind):
    def _check(self, name: str, value: Any) -> tuple[float, float]:
        return _validation.number_range(name, value)

    def show(self, value: Any) -> str:
        return " ".join(f"{v:g}" for v in value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sizes(Kind):
    """A list of integers in ``[1, maximum]``, at least ``min_length`` of them."""

    min_length: int = 1
    maximum: int = MAX_INT32
    distinct: bool = False

    def _check(self, name: str, value: Any) -> tuple[int, ...]:
        checked = _validation.sizes(name, value, self.min_length, self.maximum)
        if self.distinct and len(set(checked)) != len(checked):
            raise OptionError(name, "distinct values", value)
        return checked

    def show(self, value: Any) -> str:
        return " ".join(str(v) for v in value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CountOrWord(Kind):
    """An integer in ``[1, maximum]`` or one word, e.g. ``shots`` for "as many as the shots"."""

    word: str
    maximum: int = MAX_INT32

    def _check(self, name: str, value: Any) -> int | str:
        if value == self.word and isinstance(value, str):
            return value
        try:
            return _validation.integer(name, value, 1, self.maximum)
        except OptionError:
            requirement = f"an integer in [1, {self.maximum}] or '{self.word}'"
            raise OptionError(name, requirement, value) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Text(Kind):
    """A non-empty string, such as a path."""

    def _check(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise OptionError(name, "a non-empty string", value)
        return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Choice(Kind):
    """One of a few values, all strings or all integers."""

    choices: tuple[Any, ...]

    def _check(self, name: str, value: Any) -> Any:
        if type(value) is not type(self.choices[0]) or value not in self.choices:
            shown = ", ".join(repr(choice) for choice in self.choices)
            raise OptionError(name, f"one of {shown}", value)
        return value


def _field(default: Any, kind: Kind) -> Any:
    return dataclasses.field(default=default, metadata={_KIND: kind})


def integer(
    default: int | None,
    help: str,
    *,
    minimum: int = 1,
    maximum: int = MAX_INT32,
    metavar: str = "N",
    optional: bool = False,
    default_text: str | None = None,
) -> Any:
    """An integer setting in ``[minimum, maximum]``."""
    kind = Integer(
        help=help,
        metavar=metavar,
        minimum=minimum,
        maximum=maximum,
        optional=optional,
        default_text=default_text,
    )
    return _field(default, kind)


def number(
    default: float | None,
    help: str,
    *,
    metavar: str = "X",
    traceable: bool = False,
    zero: bool = False,
    optional: bool = False,
    default_text: str | None = None,
) -> Any:
    """A finite number > 0 (a step size); with ``zero``, >= 0."""
    kind = Number(
        help=help,
        metavar=metavar,
        traceable=traceable,
        zero=zero,
        optional=optional,
        default_text=default_text,
    )
    return _field(default, kind)


def flag(
    default: bool | None, help: str, *, optional: bool = False, default_text: str | None = None
) -> Any:
    """A true-or-false setting; the command line has ``--name`` and ``--no-name``."""
    return _field(default, Flag(help=help, optional=optional, default_text=default_text))


def number_range(default: tuple[float, float], help: str) -> Any:
    """A pair ``(low, high)`` of finite numbers with ``low <= high``."""
    return _field(default, Range(help=help))


def sizes(
    default: tuple[int, ...] | None,
    help: str,
    *,
    min_length: int = 1,
    maximum: int = MAX_INT32,
    distinct: bool = False,
    metavar: str = "N",
    optional: bool = False,
    default_text: str | None = None,
) -> Any:
    """A list of positive integers."""
    kind = Sizes(
        help=help,
        metavar=metavar,
        min_length=min_length,
        maximum=maximum,
        distinct=distinct,
        optional=optional,
        default_text=default_text,
    )
    return _field(default, kind)


def count_or_word(
    default: int | str | None,
    help: str,
    *,
    word: str,
    optional: bool = False,
    default_text: str | None = None,
) -> Any:
    """An integer >= 1 or the word ``word``."""
    return _field(
        default, CountOrWord(help=help, word=word, optional=optional, default_text=default_text)
    )


def text(
    default: str | None,
    help: str,
    *,
    metavar: str = "TEXT",
    optional: bool = False,
    default_text: str | None = None,
) -> Any:
    """A non-empty string (a path, say)."""
    return _field(
        default, Text(help=help, metavar=metavar, optional=optional, default_text=default_text)
    )


def choice(
    default: Any,
    choices: tuple[Any, ...],
    help: str,
    *,
    metavar: str | None = None,
    optional: bool = False,
    default_text: str | None = None,
) -> Any:
    """One of ``choices``: strings, or integers."""
    kind = Choice(
        help=help, choices=choices, metavar=metavar, optional=optional, default_text=default_text
    )
    return _field(default, kind)


def declared(options: "Options | type[Options]") -> dict[str, Kind]:
    """The declared settings of an :class:`Options` dataclass (or instance), in field order."""
    fields: tuple[dataclasses.Field[Any], ...] = ()
    if dataclasses.is_dataclass(options):
        fields = dataclasses.fields(options)
    return {field.name: field.metadata[_KIND] for field in fields if _KIND in field.metadata}


def replace(settings: "OptionsT", **changes: Any) -> "OptionsT":
    """A copy of ``settings`` with ``changes``, checked like a new one."""
    return dataclasses.replace(settings, **changes)  # type: ignore[type-var]


class Options:
    """Base of every settings dataclass: checks each declared field when it is constructed.

    Subclasses are ``@dataclasses.dataclass(frozen=True)`` classes whose fields are declared
    with this module's functions; a subclass with checks that involve several fields extends
    ``__post_init__``.

    Class attributes:
      renamed_options: settings renamed since an earlier metajax, old name to new, so that the
        command line can say what an old flag is called now.
    """

    renamed_options: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def renamed_hint(cls, names: Any) -> str:
        """`` (steps is now meta_steps)`` for the ``names`` that were renamed, else ``""``."""
        hints = [f"{n} is now {cls.renamed_options[n]}" for n in names if n in cls.renamed_options]
        return f" ({'; '.join(hints)})" if hints else ""

    def __post_init__(self) -> None:
        for name, kind in declared(self).items():
            object.__setattr__(self, name, kind.check(name, getattr(self, name)))

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON-ready values (tuples become lists)."""
        values = {name: getattr(self, name) for name in declared(self)}
        return {name: list(v) if isinstance(v, tuple) else v for name, v in values.items()}

    @classmethod
    def from_json(cls, values: Any, *, base: "Self | None" = None, where: str = "") -> Self:
        """The settings in ``values`` (a dict from JSON); fields it leaves out come from
        ``base``, or from the defaults.

        Raises:
          ValueError: if ``values`` is not a dict or has keys that are not settings (``where``
            names the part of a config file it came from).
          OptionError: for a value out of its range.
        """
        place = f" in {where}" if where else ""
        if not isinstance(values, Mapping):
            raise ValueError(f"the settings{place} must be a JSON object, got {values!r}")
        unknown = sorted(set(values) - set(declared(cls)))
        if unknown:
            raise ValueError(
                f"unknown config keys{place}: {', '.join(map(str, unknown))}"
                + cls.renamed_hint(unknown)
            )
        if base is None:
            return cls(**values)
        return replace(base, **values)


OptionsT = TypeVar("OptionsT", bound=Options)
