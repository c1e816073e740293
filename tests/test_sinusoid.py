"""The sinusoid task family: shapes, ranges, exact targets, statistics, presets, old configs."""

import dataclasses
import json
import math
import signal

import jax
import numpy as np
import pytest

import metajax
from metajax import OptionError, Sinusoid, SinusoidConfig, SinusoidDistribution

sample_tasks = jax.jit(SinusoidDistribution.sample_tasks, static_argnums=(0, 2, 3, 4))
TUTORIAL = SinusoidDistribution((0.1, 0.5), (0.0, math.pi), (-5.0, 5.0))
FINN2017 = SinusoidDistribution((0.1, 5.0), (0.0, math.pi), (-5.0, 5.0))
DISTRIBUTIONS = {"tutorial": TUTORIAL, "finn2017": FINN2017}


def test_presets_are_the_tutorials_and_the_papers_complete_settings():
    presets = metajax.presets("sinusoid")
    assert list(presets) == [
        "tutorial",
        "finn2017",
        "finn2017-code",
        "finn2017-maml++",
        "finn2017-imaml",
    ]
    tutorial, finn2017 = presets["tutorial"], presets["finn2017"]
    assert tutorial.task == SinusoidConfig() and tutorial.task.distribution == TUTORIAL
    assert (tutorial.task.shots, tutorial.task.query_shots, tutorial.task.hidden_sizes) == (
        20,
        20,
        (40, 40),
    )
    assert tutorial.algorithm == metajax.MAML(
        inner_lr=0.1, inner_steps=1, first_order=False, test_steps=10
    )
    assert tutorial.training == metajax.TrainSettings(meta_steps=20000, meta_batch_size=4)
    assert finn2017.task.distribution == FINN2017
    assert (finn2017.task.shots, finn2017.task.query_shots) == (10, 10)
    assert finn2017.algorithm == metajax.MAML(inner_lr=0.01, inner_steps=1, test_steps=10)
    assert (finn2017.training.meta_steps, finn2017.training.meta_batch_size) == (70000, 25)
    assert finn2017.training.meta_lr == 1e-3 and finn2017.preset == "finn2017"
    # The paper's code differs from its text only in the inner step size (update_lr 0.001).
    code = presets["finn2017-code"]
    assert dataclasses.replace(code.replace(inner_lr=0.01), preset="finn2017") == finn2017
    assert code.algorithm.inner_lr == 0.001
    # MAML++ on finn2017's tasks, with its Omniglot code's cosine decay to 1e-5, 10 steps
    # with the multi-step loss kept all run, and slowly learned step sizes.
    plus = presets["finn2017-maml++"]
    assert plus.task == finn2017.task
    assert plus.algorithm == metajax.MAMLPlusPlus(
        initial_lr=0.01, inner_steps=10, anneal_steps=1_000_000_000, step_size_lr_scale=0.01
    )
    assert plus.training == dataclasses.replace(
        finn2017.training, meta_lr_schedule="cosine", meta_lr_end=1e-5
    )
    # iMAML on the same tasks and outer loop, its inner loop solved by L-BFGS.
    implicit = presets["finn2017-imaml"]
    assert (implicit.task, implicit.training) == (finn2017.task, finn2017.training)
    assert implicit.algorithm == metajax.IMAML(
        inner_lr=0.01, inner_steps=10, prox_lambda=2.0, cg_steps=5, inner_solver="lbfgs"
    )
    # A variation is a replace away, and the rest stays the preset's.
    variation = dataclasses.replace(finn2017, training=finn2017.training).replace(seed=3, shots=5)
    assert (variation.training.seed, variation.task.shots, variation.algorithm.inner_lr) == (
        3,
        5,
        0.01,
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(shots=0), r"`shots` must be an integer in \[1, 2147483647\], got 0"),
        (
            dict(query_shots=True),
            r"`query_shots` must be an integer in \[1, 2147483647\], got True",
        ),
        (dict(shots=2.0), r"`shots` must be an integer in \[1, 2147483647\], got 2.0"),
        (
            dict(hidden_sizes=()),
            r"`hidden_sizes` must be a list of at least 1 integers in \[1, 2147483647\]",
        ),
        (dict(x_range=(1.0, -1.0)), r"`x_range` must be a pair \(low, high\) of finite numbers"),
        (dict(x_range=(0, 10**400)), r"`x_range` must be a pair \(low, high\) of finite numbers"),
    ],
)
def test_every_setting_is_range_checked(overrides, message):
    with pytest.raises(OptionError, match=message):
        SinusoidConfig(**overrides)


def test_a_config_written_by_metajax_0_1_is_read_as_the_same_run():
    # config.json of `metajax train sinusoid --preset finn2017 --k-shot 5 --seed 2` in 0.1.
    old = {
        "task": "sinusoid",
        "config_format": 1,
        "metajax_version": "0.1.0",
        "preset": "finn2017",
        "algorithm": "maml",
        "amplitude_range": [0.1, 5.0],
        "phase_range": [0.0, math.pi],
        "x_range": [-5.0, 5.0],
        "meta_batch_size": 25,
        "k_shot": 5,
        "k_query": 10,
        "inner_lr": 0.01,
        "inner_steps": 1,
        "meta_lr": 0.001,
        "steps": 70000,
        "first_order": False,
        "hidden_sizes": [40, 40],
        "seed": 2,
        "log_every": 100,
        "steps_per_call": 1000,
        "checkpoint_every": 5000,
        "keep_checkpoints": 3,
    }
    expected = metajax.presets("sinusoid")["finn2017"].replace(shots=5, seed=2)
    assert metajax.RunConfig.from_dict(old) == expected
    # A pretrained run's config, which wrote first_order too, and a partial one of 0.1's keys.
    pretrained = {**old, "algorithm": "pretrain"}
    assert metajax.RunConfig.from_dict(pretrained) == expected.with_algorithm("pretrain")
    assert metajax.RunConfig.from_dict({"task": "sinusoid", "steps": 7, "k_shot": None}) == (
        metajax.presets("sinusoid")["tutorial"].replace(meta_steps=7)
    )
    with pytest.raises(ValueError, match=r"unknown config keys: colour"):
        metajax.RunConfig.from_dict({**old, "colour": "blue"})
    # Read back in the current format, it is the same config.
    again = json.loads(json.dumps(expected.to_dict()))
    assert again["config_format"] == 2 and metajax.RunConfig.from_dict(again) == expected


def test_shapes_and_dtypes():
    tasks = sample_tasks(TUTORIAL, jax.random.key(0), 4, 20, 7)
    (xs, ys), (xq, yq) = tasks
    assert xs.shape == ys.shape == (4, 20, 1)
    assert xq.shape == yq.shape == (4, 7, 1)
    assert {a.dtype for a in (xs, ys, xq, yq)} == {np.dtype("float32")}


def test_targets_are_exactly_amplitude_times_sin_of_x_plus_phase():
    family = FINN2017
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
    family = TUTORIAL
    a = sample_tasks(family, jax.random.key(2), 3, 5, 5)
    b = sample_tasks(family, jax.random.key(3), 3, 5, 5)
    again = sample_tasks(family, jax.random.key(2), 3, 5, 5)
    assert not np.any(np.isclose(a.support[1], b.support[1]))
    jax.tree.map(np.testing.assert_array_equal, a, again)


@pytest.mark.parametrize("preset", ["tutorial", "finn2017"])
def test_parameters_and_inputs_are_uniform_over_their_ranges(preset):
    family = DISTRIBUTIONS[preset]
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
        SinusoidDistribution(**kwargs)


def test_training_tasks_are_the_distributions_with_the_configs_sizes():
    config = SinusoidConfig(amplitude_range=(1.0, 2.0), shots=3, query_shots=4)
    ours = config.sample_tasks(jax.random.key(7), 6)
    theirs = config.distribution.sample_tasks(jax.random.key(7), 6, 3, 4)
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    assert ours.support[0].shape == (6, 3, 1) and ours.query[0].shape == (6, 4, 1)


class SignalAt:
    """A metrics sink that sends SIGINT when it receives the record of a step."""

    def __init__(self, step):
        self.step = step

    def write(self, step, values):
        if step == self.step:
            signal.raise_signal(signal.SIGINT)

    def flush(self):
        pass

    def close(self):
        pass


def test_a_run_directory_of_metajax_0_1_is_continued_bit_for_bit(tmp_path):
    # As 0.1 wrote it: config.json in format 1, whose checkpoints record that config.
    old = {"task": "sinusoid", "config_format": 1, "metajax_version": "0.1.0"}
    old.update(steps=300, steps_per_call=50, log_every=40, checkpoint_every=100, seed=4)
    out = tmp_path / "old"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(old))
    with pytest.raises(metajax.Interrupted):
        metajax.resume(out, progress=False, plots=False, sinks=[SignalAt(160)])
    manifest = json.loads(
        next((out / "checkpoints").glob("step_000000200/checkpoint.json")).read_text()
    )
    assert manifest["config"]["config_format"] == 1  # the checkpoints keep the run's own format
    metajax.resume(out, progress=False, plots=False)
    assert json.loads((out / "config.json").read_text()) == old  # never rewritten
    # The same run, started in format 2.
    config = metajax.presets("sinusoid")["tutorial"].replace(
        meta_steps=300, steps_per_call=50, log_every=40, checkpoint_every=100, seed=4
    )
    metajax.train(config, tmp_path / "new", progress=False, plots=False)
    for name in ("params.eqx", "metrics.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "new" / name).read_bytes()
