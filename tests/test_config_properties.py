"""Property tests: any config values either make a valid config or fail with a message that
names the option, its valid range and the value given."""

import contextlib
import io
import json
import math
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metajax
from metajax import OptionError
from metajax.cli import main
from metajax.config import registry

# The documented rules of every setting of a sinusoid MAML run, by config section.
MAX = 2**31 - 1  # JAX's int32 indices
MAXIMUMS = {"log_every": 10**6}  # the others: MAX
MINIMUMS = {
    "shots": 1,
    "query_shots": 1,
    "inner_steps": 0,
    "meta_steps": 1,
    "meta_batch_size": 1,
    "log_every": 1,
    "steps_per_call": 1,
    "checkpoint_every": 1,
    "keep_checkpoints": 1,
}
POSITIVE = ("inner_lr", "meta_lr")
RANGES = ("amplitude_range", "phase_range", "x_range")
SECTIONS = {
    "task": ("amplitude_range", "phase_range", "x_range", "shots", "query_shots", "hidden_sizes"),
    "hparams": ("inner_lr", "inner_steps", "first_order"),
    "training": (
        "meta_steps",
        "meta_batch_size",
        "meta_lr",
        "seed",
        "log_every",
        "steps_per_call",
        "checkpoint_every",
        "keep_checkpoints",
    ),
}
PRESET = metajax.presets("sinusoid")["tutorial"]

# Values of every kind a config file or a caller might hold.
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
        return st.integers(MINIMUMS[name], MAXIMUMS.get(name, MAX))
    if name in POSITIVE:
        return st.floats(1e-9, 1e3)
    if name in RANGES:
        return st.tuples(finite, finite).map(sorted)
    return {
        "first_order": st.booleans(),
        "hidden_sizes": st.lists(st.integers(1, MAX), min_size=1, max_size=3),
        "seed": st.integers(0, 2**32 - 1),
    }[name]


@st.composite
def config_values(draw):
    """Some settings of each section, each from its valid values or from anything at all."""
    values = {}
    for section, names in SECTIONS.items():
        chosen = {}
        for name in names:
            if draw(st.booleans()):
                chosen[name] = draw(st.one_of(valid_values(name), junk))
        values[section] = chosen
    return values


def is_integer(value, minimum, maximum=MAX):
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum


def is_number(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 2**1024  # what a float holds
    return isinstance(value, float) and math.isfinite(value)


def is_valid(name, value):
    if name in MINIMUMS:
        return is_integer(value, MINIMUMS[name], MAXIMUMS.get(name, MAX))
    if name in POSITIVE:
        return is_number(value) and value > 0
    if name in RANGES:
        return (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(is_number(v) for v in value)
            and value[0] <= value[1]
        )
    if name == "first_order":
        return isinstance(value, bool)
    if name == "hidden_sizes":
        return (
            isinstance(value, (list, tuple))
            and len(value) >= 1
            and all(is_integer(v, 1) for v in value)
        )
    return is_integer(value, 0, 2**32 - 1)  # seed


@settings(max_examples=400, deadline=None)
@given(config_values())
def test_a_config_is_valid_or_names_a_bad_setting(values):
    bad = {name for part in values.values() for name, v in part.items() if not is_valid(name, v)}
    try:
        config = metajax.RunConfig.from_dict({"family": "sinusoid", **values})
    except OptionError as error:
        assert error.name in bad, (error, bad)
        assert str(error).startswith(f"`{error.name}` must be ")
        given = next(part[error.name] for part in values.values() if error.name in part)
        assert str(error).endswith(f", got {given!r}")
        # The message states the valid range.
        name = error.name
        requirement = str(error)[len(f"`{name}` must be ") :]
        if name in MINIMUMS:
            maximum = MAXIMUMS.get(name, MAX)
            assert requirement.startswith(f"an integer in [{MINIMUMS[name]}, {maximum}], got")
        elif name in POSITIVE:
            assert requirement.startswith("a finite number > 0, got")
        elif name in RANGES:
            assert requirement.startswith("a pair (low, high) of finite numbers with low <= high")
        elif name == "seed":
            assert requirement.startswith("an integer in [0, 4294967295], got")
        elif name == "hidden_sizes":
            assert requirement.startswith(f"a list of at least 1 integers in [1, {MAX}], got")
        return
    assert not bad, bad
    # Settings given are the config's; the rest are the preset's.
    for section, part in config.settings().items():
        preset_part = PRESET.settings()[section]
        for name in SECTIONS[section]:
            expected = values[section].get(name, getattr(preset_part, name))
            expected = tuple(expected) if isinstance(expected, list) else expected
            assert getattr(part, name) == expected, name
    # The saved config reads back as the same config.
    assert metajax.RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


KNOWN = {name for names in SECTIONS.values() for name in names}
RENAMED = {"k_shot", "k_query", "steps"}


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(sorted(SECTIONS)),
    st.sets(
        st.text(min_size=1, max_size=8).filter(lambda key: key not in KNOWN | RENAMED), min_size=1
    ),
)
def test_unknown_config_keys_are_listed(section, keys):
    values = {"family": "sinusoid", section: {key: 1 for key in keys}}
    with pytest.raises(ValueError) as caught:
        metajax.RunConfig.from_dict(values)
    assert str(caught.value) == f"unknown config keys in {section}: " + ", ".join(sorted(keys))


INTEGER_FLAGS = {
    "--" + name.replace("_", "-"): (minimum, MAXIMUMS.get(name, MAX))
    for name, minimum in MINIMUMS.items()
}


def run_cli(args):
    """``metajax train sinusoid ARGS``, stopped at the config: the training of a run is
    replaced by a record of its config, through ``metajax.runs.training.train``."""
    seen = []

    def fake_train(config, out, **kwargs):
        seen.append(config)
        return {
            "meta_steps": config.training.meta_steps,
            "final_meta_loss": 0.5,
            "final_meta_loss_window": 1,
            "meta_steps_per_second": 1.0,
            "train_seconds": 1.0,
            "compile_seconds": 1.0,
        }

    stderr = io.StringIO()
    with (
        mock.patch.object(metajax.runs.training, "train", fake_train),
        contextlib.redirect_stderr(stderr),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            status = main(["train", "sinusoid", *args, "--out", "unused"])
        except SystemExit as exit:
            status = exit.code
    return status, seen, stderr.getvalue()


def setting(config, name):
    return next(getattr(part, name) for part in config.settings().values() if hasattr(part, name))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(INTEGER_FLAGS)), st.integers(-(10**6), 10**12))
def test_an_integer_flag_is_accepted_or_refused_with_its_range(flag, value):
    status, seen, err = run_cli([flag, str(value)])
    minimum, maximum = INTEGER_FLAGS[flag]
    if minimum <= value <= maximum:
        assert status == 0 and setting(seen[0], flag[2:].replace("-", "_")) == value
    else:
        assert status == 2 and not seen
        assert f"argument {flag}: must be an integer in [{minimum}, {maximum}], got {value}" in err


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["--inner-lr", "--meta-lr"]), st.floats(allow_nan=True))
def test_a_step_size_flag_is_accepted_or_refused_with_its_range(flag, value):
    # FLAG=VALUE: argparse would take a separate "-1e+16" for an option.
    status, seen, err = run_cli([f"{flag}={value!r}"])
    if math.isfinite(value) and value > 0:
        assert status == 0 and setting(seen[0], flag[2:].replace("-", "_")) == value
    else:
        assert status == 2 and not seen
        assert f"argument {flag}: must be a finite number > 0, got {value!r}" in err


def test_every_integer_setting_of_every_family_and_algorithm_is_bounded():
    """No integer option, of any command, is unbounded: each has a maximum the device's int32
    indices (or the seed's uint32) can hold, or less."""
    from metajax.evaluation.harness import EvalSettings
    from metajax.options import CountOrWord, Integer, Sizes, declared
    from metajax.runs.figures import PlotSettings

    settings_types = [
        *registry.families().values(),
        *registry.algorithms().values(),
        metajax.TrainSettings,
        EvalSettings,
        PlotSettings,
    ]
    for settings_type in settings_types:
        for name, kind in declared(settings_type).items():
            if isinstance(kind, (Integer, Sizes, CountOrWord)):
                assert kind.maximum <= 2**32 - 1, (settings_type, name)
