"""The outer optimizer that a run's training settings build: Adam or SGD, at a constant step
size or one that follows a cosine or linear schedule over the meta-steps, and Adam's epsilon.
Closed forms of the updates, the errors of settings that do not go together, and the run's use
of them (a run under a schedule resumes bit for bit: test_training_run.py)."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fakes import line_config

import metajax
from metajax import OptionError
from metajax.runs.setup import build

GRADIENT = jnp.array([1e-8, 1e-6, 0.5, -2.0])


def updates(optimizer: optax.GradientTransformation, steps: int) -> np.ndarray:
    """The updates of ``steps`` optimizer steps that all see ``GRADIENT``."""
    params = {"w": jnp.zeros_like(GRADIENT)}
    state = optimizer.init(params)
    found = []
    for _ in range(steps):
        update, state = optimizer.update({"w": GRADIENT}, state, params)
        found.append(np.asarray(update["w"]))
    return np.stack(found)


def step_sizes(schedule: str, first: float, end: float, steps: int) -> np.ndarray:
    """The closed forms: the step size of each of ``steps`` updates."""
    t = np.arange(steps) / steps
    if schedule == "linear":
        return first + (end - first) * t
    if schedule == "cosine":
        return end + (first - end) * (1 + np.cos(math.pi * t)) / 2
    if schedule == "halving":  # every 3 steps
        return first * 0.5 ** (np.arange(steps) // 3)
    return np.full(steps, first)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear", "halving"])
def test_sgd_steps_along_the_gradient_by_the_scheduled_step_size(schedule):
    end = {"cosine": 0.01, "linear": 0.0}.get(schedule)
    settings = metajax.TrainSettings(
        meta_steps=10, meta_optimizer="sgd", meta_lr=0.5, meta_lr_schedule=schedule,
        meta_lr_end=end, meta_lr_halve_every=3 if schedule == "halving" else None,
    )  # fmt: skip
    expected = -step_sizes(schedule, 0.5, end or 0.0, 10)[:, None] * np.asarray(GRADIENT)
    np.testing.assert_allclose(updates(settings.outer_optimizer(), 10), expected, rtol=1e-6)


def test_adam_at_the_defaults_is_optax_adam_at_1e_3_bit_for_bit():
    found = updates(metajax.TrainSettings().outer_optimizer(), 5)
    np.testing.assert_array_equal(found, updates(optax.adam(1e-3), 5))


def test_adam_s_first_step_is_the_gradient_over_its_magnitude_plus_epsilon():
    # Bias-corrected, Adam's first moments are g and g**2: its first update is -lr g/(|g|+eps)
    # (to float32's rounding of the correction 1/(1-0.999): 7e-6).
    for eps in (1e-8, 1e-6):
        settings = metajax.TrainSettings(adam_eps=eps)
        expected = -1e-3 * GRADIENT / (jnp.abs(GRADIENT) + eps)
        np.testing.assert_allclose(updates(settings.outer_optimizer(), 1)[0], expected, rtol=1e-5)


def test_adam_under_a_schedule_scales_each_constant_step_by_the_scheduled_size():
    # Adam's direction does not depend on its step size, so a schedule only rescales it.
    constant = updates(metajax.TrainSettings(meta_lr=0.1).outer_optimizer(), 8)
    settings = metajax.TrainSettings(
        meta_steps=8, meta_lr=0.1, meta_lr_schedule="cosine", meta_lr_end=1e-3
    )
    scale = step_sizes("cosine", 0.1, 1e-3, 8)[:, None] / 0.1
    np.testing.assert_allclose(updates(settings.outer_optimizer(), 8), constant * scale, rtol=1e-5)


def test_a_run_trains_with_the_optimizer_its_config_describes():
    config = line_config(
        meta_steps=6, meta_optimizer="sgd", meta_lr=0.2, meta_lr_schedule="linear",
        meta_lr_end=0.02,
    )  # fmt: skip
    expected = -step_sizes("linear", 0.2, 0.02, 6)[:, None] * np.asarray(GRADIENT)
    np.testing.assert_allclose(updates(build(config).optimizer, 6), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"meta_lr_end": 0.1},
            "`meta_lr_end` must be left unset unless the meta step size follows a schedule "
            "to an end (meta_lr_schedule cosine or linear), got 0.1",
        ),
        (
            {"meta_lr_schedule": "halving", "meta_lr_end": 0.1, "meta_lr_halve_every": 5},
            "`meta_lr_end` must be left unset unless the meta step size follows a schedule "
            "to an end (meta_lr_schedule cosine or linear), got 0.1",
        ),
        (
            {"meta_lr_schedule": "halving"},
            "`meta_lr_halve_every` must be set with meta_lr_schedule halving and only then, "
            "got None",
        ),
        (
            {"meta_lr_schedule": "cosine", "meta_lr_halve_every": 5},
            "`meta_lr_halve_every` must be set with meta_lr_schedule halving and only then, "
            "got 5",
        ),
        (
            {"meta_lr_schedule": "cosine", "meta_lr_end": -1e-5},
            "`meta_lr_end` must be a finite number >= 0, got -1e-05",
        ),
        ({"meta_optimizer": "rmsprop"}, "`meta_optimizer` must be one of 'adam', 'sgd', got "
         "'rmsprop'"),
        ({"adam_eps": 0.0}, "`adam_eps` must be a finite number > 0, got 0.0"),
    ],
)  # fmt: skip
def test_settings_that_do_not_go_together_are_refused(changes, message):
    with pytest.raises(OptionError) as caught:
        metajax.TrainSettings(**changes)
    assert str(caught.value) == message
