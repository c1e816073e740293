"""The sinusoid task family: shapes, ranges, exact targets, statistics, presets."""

import math

import jax
import numpy as np
import pytest

from metajax import SINUSOID_PRESETS, Sinusoid, SinusoidFamily

sample_tasks = jax.jit(SinusoidFamily.sample_tasks, static_argnums=(0, 2, 3, 4))


def test_presets_match_the_tutorial_and_the_paper():
    assert SINUSOID_PRESETS["tutorial"] == SinusoidFamily((0.1, 0.5), (0.0, math.pi), (-5.0, 5.0))
    assert SINUSOID_PRESETS["finn2017"] == SinusoidFamily((0.1, 5.0), (0.0, math.pi), (-5.0, 5.0))


def test_shapes_and_dtypes():
    tasks = sample_tasks(SINUSOID_PRESETS["tutorial"], jax.random.key(0), 4, 20, 7)
    (xs, ys), (xq, yq) = tasks
    assert xs.shape == ys.shape == (4, 20, 1)
    assert xq.shape == yq.shape == (4, 7, 1)
    assert {a.dtype for a in (xs, ys, xq, yq)} == {np.dtype("float32")}


def test_targets_are_exactly_amplitude_times_sin_of_x_plus_phase():
    family = SINUSOID_PRESETS["finn2017"]
    key = jax.random.key(1)
    tasks = family.sample_tasks(key, 5, 10, 10)
    sinusoid_key, _ = jax.random.split(key)
    sinusoids = family.sample_sinusoids(sinusoid_key, 5)
    amplitude = np.asarray(sinusoids.amplitude)[:, None, None]
    phase = np.asarray(sinusoids.phase)[:, None, None]
    for x, y in (tasks.support, tasks.query):
        np.testing.assert_allclose(
            y, amplitude * np.sin(np.asarray(x) + phase), rtol=1e-6, atol=1e-6
        )
    # Support and query points of a task are different draws.
    assert not np.allclose(tasks.support[0], tasks.query[0])


def test_a_single_sinusoid_evaluates_pointwise():
    sinusoid = Sinusoid(amplitude=2.0, phase=0.5)
    x = np.linspace(-5, 5, 11)
    np.testing.assert_allclose(sinusoid(x), 2.0 * np.sin(x + 0.5), rtol=1e-6, atol=1e-6)


def test_different_keys_give_different_tasks_and_the_same_key_the_same():
    family = SINUSOID_PRESETS["tutorial"]
    a = sample_tasks(family, jax.random.key(2), 3, 5, 5)
    b = sample_tasks(family, jax.random.key(3), 3, 5, 5)
    again = sample_tasks(family, jax.random.key(2), 3, 5, 5)
    assert not np.any(np.isclose(a.support[1], b.support[1]))
    jax.tree.map(np.testing.assert_array_equal, a, again)


@pytest.mark.parametrize("preset", ["tutorial", "finn2017"])
def test_parameters_and_inputs_are_uniform_over_their_ranges(preset):
    family = SINUSOID_PRESETS[preset]
    n = 20000
    sinusoids = family.sample_sinusoids(jax.random.key(4), n)
    inputs = family.sample_inputs(jax.random.key(5), (n,))
    for values, (low, high) in (
        (sinusoids.amplitude, family.amplitude_range),
        (sinusoids.phase, family.phase_range),
        (inputs, family.x_range),
    ):
        values = np.asarray(values)
        assert low <= values.min() and values.max() <= high
        # Uniform on [low, high]: mean (low + high) / 2, variance (high - low)^2 / 12. Five
        # standard errors of slack.
        std = (high - low) / math.sqrt(12)
        assert abs(values.mean() - (low + high) / 2) < 5 * std / math.sqrt(n)
        assert abs(values.std() - std) < 0.02 * std
        # Every tenth of the range gets its share.
        counts, _ = np.histogram(values, bins=10, range=(low, high))
        assert np.all(np.abs(counts - n / 10) < 5 * math.sqrt(n / 10))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(amplitude_range=(0.5, 0.1)), r"`amplitude_range` must be a pair \(low, high\)"),
        (dict(phase_range=(0.0,)), r"`phase_range` must be a pair"),
        (dict(x_range=(-5.0, float("inf"))), r"`x_range` must be a pair .* got \(-5.0, inf\)"),
    ],
)
def test_bad_ranges_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SinusoidFamily(**kwargs)
