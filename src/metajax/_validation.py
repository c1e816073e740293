"""Argument checks shared by every factory and config, with one style of message. It imports no
other part of metajax."""

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class OptionError(ValueError):
    """An argument or config option that is out of its valid range, or not an option at all.

    The library names options by their Python names (``inner_lr``); the command line turns
    :attr:`name` into its flag (``--inner-lr``) and prints :attr:`problem` after it.

    Attributes:
      name: the option's name, e.g. ``"shots"``.
      problem: what is wrong with it, e.g. ``"must be an integer in [1, 2147483647], got 0"``.
    """

    def __init__(self, name: str, requirement: str, value: Any):
        self.name = name
        self.problem = f"must be {requirement}, got {value!r}"
        super().__init__(f"`{name}` {self.problem}")


class UnknownOptionError(OptionError):
    """A name that is not an option where it was given, e.g. ``first_order`` for an algorithm
    without it; :attr:`problem` says where it was looked for."""

    def __init__(self, name: str, problem: str):
        self.name = name
        self.problem = problem
        ValueError.__init__(self, f"`{name}` {problem}")


MAX_INT32 = 2**31 - 1
"""The largest step count or array size JAX's default int32 indices hold."""

MAX_SEED = 2**32 - 1
"""The largest seed: ``jax.random.key`` takes an unsigned 32-bit integer."""


def _is_integer(value: Any, minimum: int, maximum: int | None = None) -> bool:
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, (bool, np.bool_))
        and int(value) >= minimum
        and (maximum is None or int(value) <= maximum)
    )


def integer(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int, if it is an integer (not a bool) >= ``minimum`` and, if given,
    <= ``maximum``."""
    if not _is_integer(value, minimum, maximum):
        requirement = (
            f"an integer >= {minimum}"
            if maximum is None
            else (f"an integer in [{minimum}, {maximum}]")
        )
        raise OptionError(name, requirement, value)
    return int(value)


def sizes(name: str, value: Any, min_length: int, maximum: int | None = None) -> tuple[int, ...]:
    """``value`` as a tuple of ints, if it lists at least ``min_length`` integers >= 1 (and, if
    given, <= ``maximum``)."""
    if not (
        isinstance(value, (tuple, list))
        and len(value) >= min_length
        and all(_is_integer(size, 1, maximum) for size in value)
    ):
        each = "integers >= 1" if maximum is None else f"integers in [1, {maximum}]"
        raise OptionError(name, f"a list of at least {min_length} {each}", value)
    return tuple(int(size) for size in value)


def positive_number(name: str, value: Any, *, zero: bool = False) -> float:
    """``value`` as a float, if it is a finite real number > 0 (a concrete scalar); with
    ``zero``, >= 0."""
    try:
        number = float(value) if not isinstance(value, (bool, np.bool_, str)) else math.nan
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
        number = math.nan
    if not (math.isfinite(number) and (number > 0 or (zero and number == 0))):
        raise OptionError(name, f"a finite number {'>=' if zero else '>'} 0", value)
    return number


def step_size(name: str, value: Any) -> Any:
    """A step size: a number > 0 (returned as a float), or a scalar floating-point JAX array,
    returned as it is so that step sizes can be swept with ``vmap`` (a traced one cannot be
    checked for sign)."""
    if not isinstance(value, jax.Array):
        return positive_number(name, value)
    if value.shape != () or not jnp.issubdtype(value.dtype, jnp.floating):
        raise OptionError(name, "a number > 0 or a scalar floating-point JAX array", value)
    if not isinstance(value, jax.core.Tracer):
        positive_number(name, float(value))
    return value


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise OptionError(name, "true or false", value)
    return bool(value)


def number_range(name: str, value: Any) -> tuple[float, float]:
    """``value`` as ``(low, high)`` floats, if it is a pair of finite numbers with low <= high."""
    requirement = "a pair (low, high) of finite numbers with low <= high"
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise OptionError(name, requirement, value)
    try:
        low, high = (float(v) if not isinstance(v, (bool, str)) else math.nan for v in value)
    except (TypeError, ValueError, OverflowError):
        raise OptionError(name, requirement, value) from None
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise OptionError(name, requirement, value)
    return low, high
