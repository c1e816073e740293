"""Property tests: any config values either make a valid config or fail with a message that
names the option, its valid range and the value given."""

import contextlib
import dataclasses
import io
import json
import math
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metajax import OptionError
from metajax.cli import main
from metajax.experiments import sinusoid
from metajax.experiments.sinusoid import PRESETS, SinusoidConfig

MINIMUMS = {
    "meta_batch_size": 1,
    "k_shot": 1,
    "k_query": 1,
    "steps": 1,
    "inner_steps": 0,
    "log_every": 1,
    "steps_per_call": 1,
    "checkpoint_every": 1,
    "keep_checkpoints": 1,
}
POSITIVE = ("inner_lr", "meta_lr")
RANGES = ("amplitude_range", "phase_range", "x_range")
PRESET_FILLED = set(PRESETS["tutorial"])  # None means "the preset's value" for these

# Values of every kind a config file or a caller might hold.
MAX = 2**31 - 1  # JAX's int32 indices
scalars = st.one_of(
    st.integers(-3, 2**33),
    st.integers(2**31 - 2, 10**400),  # past int32, and past what a float holds
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=4),
    st.none(),
)
junk = st.one_of(scalars, st.lists(scalars, max_size=3))
finite = st.floats(-1e6, 1e6, allow_nan=False)


def valid_values(name):
    if name in MINIMUMS:
        return st.integers(MINIMUMS[name], MAX)
    if name in POSITIVE:
        return st.floats(1e-9, 1e3)
    if name in RANGES:
        return st.tuples(finite, finite).map(sorted)
    return {
        "preset": st.sampled_from(sorted(PRESETS)),
        "algorithm": st.sampled_from(sinusoid.ALGORITHMS),
        "first_order": st.booleans(),
        "hidden_sizes": st.lists(st.integers(1, MAX), min_size=1, max_size=3),
        "seed": st.integers(0, 2**32 - 1),
    }[name]


FIELDS = [field.name for field in dataclasses.fields(SinusoidConfig)]
KNOWN = {*FIELDS, "task", "config_format", "metajax_version"}


@st.composite
def config_values(draw):
    """Some fields, each from its valid values or from anything at all."""
    values = {}
    for name in FIELDS:
        if draw(st.booleans()):
            values[name] = draw(st.one_of(valid_values(name), junk))
    return values


def is_integer(value, minimum, maximum=MAX):
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum


def is_number(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 2**1024  # what a float holds
    return isinstance(value, float) and math.isfinite(value)


def invalid_fields(values):
    """The fields of ``values`` that the config must refuse, by the documented rules."""
    bad = set()
    for name, value in values.items():
        if value is None and name in PRESET_FILLED:
            continue
        if name in MINIMUMS:
            ok = is_integer(value, MINIMUMS[name])
        elif name in POSITIVE:
            ok = is_number(value) and value > 0
        elif name in RANGES:
            ok = (
                isinstance(value, (list, tuple))
                and len(value) == 2
                and all(is_number(v) for v in value)
                and value[0] <= value[1]
            )
        elif name == "preset":
            ok = isinstance(value, str) and value in PRESETS
        elif name == "algorithm":
            ok = isinstance(value, str) and value in sinusoid.ALGORITHMS
        elif name == "first_order":
            ok = isinstance(value, bool)
        elif name == "hidden_sizes":
            ok = (
                isinstance(value, (list, tuple))
                and len(value) >= 1
                and all(is_integer(v, 1) for v in value)
            )
        else:
            ok = is_integer(value, 0, 2**32 - 1)
        if not ok:
            bad.add(name)
    if values.get("first_order") is True and values.get("algorithm") == "pretrain":
        bad.add("first_order")
    return bad


@settings(max_examples=400, deadline=None)
@given(config_values())
def test_a_config_is_valid_or_names_a_bad_option(values):
    bad = invalid_fields(values)
    try:
        config = SinusoidConfig(**values)
    except OptionError as error:
        assert error.name in bad, (error, bad)
        assert str(error).startswith(f"`{error.name}` must be ")
        assert str(error).endswith(f", got {values[error.name]!r}")
        # The message states the valid range.
        name = error.name
        requirement = str(error)[len(f"`{name}` must be ") :]
        if name in MINIMUMS:
            assert requirement.startswith(f"an integer in [{MINIMUMS[name]}, {MAX}], got")
        elif name in POSITIVE:
            assert requirement.startswith("a finite number > 0, got")
        elif name in RANGES:
            assert requirement.startswith("a pair (low, high) of finite numbers with low <= high")
        elif name == "seed":
            assert requirement.startswith("an integer in [0, 2**32), got")
        elif name == "hidden_sizes":
            assert requirement.startswith(f"a list of at least 1 integers in [1, {MAX}], got")
        elif name in ("preset", "algorithm"):
            assert requirement.startswith("one of [")
        return
    assert not bad, bad
    preset = PRESETS[config.preset]
    for name, value in values.items():
        expected = preset[name] if value is None else value
        resolved = getattr(config, name)
        if isinstance(expected, list):
            expected = tuple(expected)
        assert resolved == expected, name
    # The saved config reads back as the same config.
    assert SinusoidConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@settings(max_examples=100, deadline=None)
@given(st.sets(st.text(min_size=1, max_size=8).filter(lambda key: key not in KNOWN), min_size=1))
def test_unknown_config_keys_are_listed(keys):
    values = SinusoidConfig().to_dict() | {key: 1 for key in keys}
    with pytest.raises(ValueError) as caught:
        SinusoidConfig.from_dict(values)
    assert str(caught.value) == "unknown config keys: " + ", ".join(sorted(keys))


INTEGER_FLAGS = {"--" + name.replace("_", "-"): minimum for name, minimum in MINIMUMS.items()}


def run_cli(args):
    """``metajax train sinusoid ARGS``, with training replaced by a record of the config."""
    seen = []

    def fake_train(config, out, **kwargs):
        seen.append(config)
        return {
            "steps": config.steps,
            "final_meta_loss": 0.5,
            "final_meta_loss_window": 1,
            "steps_per_second": 1.0,
            "train_seconds": 1.0,
            "compile_seconds": 1.0,
        }

    stderr = io.StringIO()
    with (
        mock.patch.object(sinusoid, "train", fake_train),
        contextlib.redirect_stderr(stderr),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            status = main(["train", "sinusoid", *args, "--out", "unused"])
        except SystemExit as exit:
            status = exit.code
    return status, seen, stderr.getvalue()


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(INTEGER_FLAGS)), st.integers(-(10**6), 10**6))
def test_an_integer_flag_is_accepted_or_refused_with_its_range(flag, value):
    status, seen, err = run_cli([flag, str(value)])
    minimum = INTEGER_FLAGS[flag]
    if value >= minimum:
        assert status == 0 and getattr(seen[0], flag[2:].replace("-", "_")) == value
    else:
        assert status == 2 and not seen
        assert f"argument {flag}: must be an integer in [{minimum}, {MAX}], got {value}" in err


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["--inner-lr", "--meta-lr"]), st.floats(allow_nan=True))
def test_a_step_size_flag_is_accepted_or_refused_with_its_range(flag, value):
    # FLAG=VALUE: argparse would take a separate "-1e+16" for an option.
    status, seen, err = run_cli([f"{flag}={value!r}"])
    if math.isfinite(value) and value > 0:
        assert status == 0 and getattr(seen[0], flag[2:].replace("-", "_")) == value
    else:
        assert status == 2 and not seen
        assert f"argument {flag}: must be a finite number > 0, got {value!r}" in err
