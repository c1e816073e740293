"""The sinusoid experiment: its config, and the run directory it writes and reads."""

import json
import math

import equinox as eqx
import jax
import numpy as np
import pytest

from metajax import OptionError, run_dir
from metajax.experiments.sinusoid import SinusoidConfig, load, plot, train


def test_defaults_are_the_tutorial_preset():
    config = SinusoidConfig()
    assert config == SinusoidConfig(preset="tutorial")
    assert (config.amplitude_range, config.phase_range, config.x_range) == (
        (0.1, 0.5),
        (0.0, math.pi),
        (-5.0, 5.0),
    )
    assert (config.meta_batch_size, config.k_shot, config.k_query) == (4, 20, 20)
    assert (config.inner_lr, config.inner_steps, config.first_order) == (0.1, 1, False)
    assert (config.meta_lr, config.steps, config.seed) == (1e-3, 20000, 0)


def test_finn2017_preset_is_the_papers_setting():
    config = SinusoidConfig(preset="finn2017", seed=3)
    assert config.amplitude_range == (0.1, 5.0)
    assert (config.meta_batch_size, config.k_shot, config.k_query) == (25, 10, 10)
    assert (config.inner_lr, config.inner_steps, config.steps) == (0.01, 1, 70000)
    assert config.seed == 3


def test_explicit_settings_override_the_preset_and_the_rest_come_from_it():
    config = SinusoidConfig(preset="finn2017", k_shot=5, amplitude_range=(1, 2))
    assert (config.k_shot, config.amplitude_range) == (5, (1.0, 2.0))
    assert (config.meta_batch_size, config.inner_lr, config.x_range) == (25, 0.01, (-5.0, 5.0))


def test_dict_round_trip_and_rejections():
    config = SinusoidConfig(preset="finn2017", hidden_sizes=(8,), first_order=True)
    values = json.loads(json.dumps(config.to_dict()))
    assert values["task"] == "sinusoid" and values["metajax_version"]
    assert SinusoidConfig.from_dict(values) == config
    with pytest.raises(ValueError, match=r"unknown config keys: colour"):
        SinusoidConfig.from_dict({**values, "colour": "blue"})
    with pytest.raises(ValueError, match=r"this is a config for task 'omniglot', not 'sinusoid'"):
        SinusoidConfig.from_dict({**values, "task": "omniglot"})
    with pytest.raises(ValueError, match=r"a config must be a JSON object, got list"):
        SinusoidConfig.from_dict([1, 2])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(preset="nope"), r"`preset` must be one of \['finn2017', 'tutorial'\], got 'nope'"),
        (dict(steps=-5), r"`steps` must be an integer in \[1, 2147483647\], got -5"),
        (dict(k_shot=0), r"`k_shot` must be an integer in \[1, 2147483647\], got 0"),
        (
            dict(meta_batch_size=2.0),
            r"`meta_batch_size` must be an integer in \[1, 2147483647\], got 2.0",
        ),
        (dict(inner_steps=-1), r"`inner_steps` must be an integer in \[0, 2147483647\], got -1"),
        (dict(inner_lr=0.0), r"`inner_lr` must be a finite number > 0, got 0.0"),
        (dict(meta_lr=float("inf")), r"`meta_lr` must be a finite number > 0, got inf"),
        (dict(seed=2**32), r"`seed` must be an integer in \[0, 2\*\*32\), got 4294967296"),
        (dict(first_order="yes"), r"`first_order` must be true or false, got 'yes'"),
        (dict(algorithm="reptile"), r"`algorithm` must be one of \['maml', 'pretrain'\]"),
        (
            dict(algorithm="pretrain", first_order=True),
            r"`first_order` must be false with algorithm 'pretrain', got True",
        ),
        (
            dict(hidden_sizes=()),
            r"`hidden_sizes` must be a list of at least 1 integers in \[1, 2147483647\]",
        ),
        (dict(k_query=True), r"`k_query` must be an integer in \[1, 2147483647\], got True"),
        (dict(x_range=(1.0, -1.0)), r"`x_range` must be a pair \(low, high\) of finite numbers"),
        (dict(steps=2**31), r"`steps` must be an integer in \[1, 2147483647\], got 2147483648"),
        (dict(inner_lr=10**400), r"`inner_lr` must be a finite number > 0, got 1000000"),
        (dict(x_range=(0, 10**400)), r"`x_range` must be a pair \(low, high\) of finite numbers"),
    ],
)
def test_every_option_is_range_checked(overrides, message):
    with pytest.raises(OptionError, match=message):
        SinusoidConfig(**overrides)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "sinusoid"
    config = SinusoidConfig(steps=250, log_every=100, steps_per_call=125, seed=7)
    summary = train(config, out, progress=False)
    return config, out, summary


def test_run_directory_contents(finished_run):
    config, out, summary = finished_run
    assert sorted(path.name for path in out.iterdir()) == sorted(run_dir.RUN_FILES)
    # Checkpoints at the start and the end (checkpoint_every is 5000), complete.
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == [
        "step_000000000",
        "step_000000250",
    ]
    assert SinusoidConfig.from_dict(json.loads((out / "config.json").read_text())) == config
    records = run_dir.read_metrics(out / "metrics.jsonl")
    # Two full windows of 100 steps and the last 50.
    assert [record["step"] for record in records] == [100, 200, 250]
    assert all(record["meta_loss"] > 0 for record in records)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 250 and summary["final_meta_loss_window"] == 250
    # The final meta-loss averages all 250 steps here: the windows' weighted mean.
    weighted = (
        100 * records[0]["meta_loss"] + 100 * records[1]["meta_loss"] + 50 * records[2]["meta_loss"]
    ) / 250
    assert summary["final_meta_loss"] == pytest.approx(weighted, rel=1e-9)


def test_load_returns_the_trained_model_and_a_rerun_reproduces_it(finished_run, tmp_path):
    config, out, _ = finished_run
    loaded_config, model = load(out)
    assert loaded_config == config
    train(config, tmp_path / "again", progress=False, plots=False)
    _, again = load(tmp_path / "again")
    jax.tree.map(
        np.testing.assert_array_equal,
        eqx.filter(model, eqx.is_array),
        eqx.filter(again, eqx.is_array),
    )


def test_plot_redraws_the_figures(finished_run):
    _, out, _ = finished_run
    from PIL import Image

    for path in (out / "adaptation.png", out / "meta_loss.png"):
        path.unlink()
    paths = plot(out, adapt_steps=2)
    assert [path.name for path in paths] == ["adaptation.png", "meta_loss.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (900, 540)
    with pytest.raises(ValueError, match=r"`adapt_steps` must be an integer >= 1, got 0"):
        plot(out, adapt_steps=0)


def test_an_earlier_run_is_never_overwritten_silently(finished_run):
    config, out, _ = finished_run
    before = (out / "params.eqx").read_bytes()
    with pytest.raises(
        run_dir.RunDirError,
        match=r"already holds a finished run \(config.json, .*, checkpoints\); choose another "
        r"directory, or pass --overwrite to replace it",
    ):
        train(config, out, progress=False)
    assert (out / "params.eqx").read_bytes() == before


def test_metrics_windows_do_not_depend_on_the_call_size(tmp_path):
    # Calls of 7 steps: the first ends before the first window does, later ones cross windows.
    config = SinusoidConfig(steps=25, steps_per_call=7, log_every=10)
    train(config, tmp_path, progress=False, plots=False)
    records = run_dir.read_metrics(tmp_path / "metrics.jsonl")
    assert [record["step"] for record in records] == [10, 20, 25]
    reference = SinusoidConfig(steps=25, steps_per_call=25, log_every=25)
    train(reference, tmp_path / "reference", progress=False, plots=False)
    (total,) = run_dir.read_metrics(tmp_path / "reference" / "metrics.jsonl")
    weighted = sum(r["meta_loss"] * n for r, n in zip(records, (10, 10, 5), strict=True)) / 25
    assert weighted == pytest.approx(total["meta_loss"], rel=1e-9)


def test_damaged_metrics_are_named_with_their_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "meta_loss": 0.5}\n\n{"step": 2}\n')
    with pytest.raises(run_dir.RunDirError, match=r"metrics.jsonl' line 3 lacks one of step, meta"):
        run_dir.read_metrics(path)
    path.write_text('{"step": 1, "meta_loss": 0.5}\n{"step": 2, "meta_lo\n')
    with pytest.raises(run_dir.RunDirError, match=r"metrics.jsonl' line 2 is not valid JSON"):
        run_dir.read_metrics(path)
    with pytest.raises(run_dir.RunDirError, match=r"missing.jsonl' is missing"):
        run_dir.read_metrics(tmp_path / "missing.jsonl")


def test_a_file_is_not_a_run_directory(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(run_dir.RunDirError, match=r"run directory '.*file' is a file; choose a"):
        run_dir.prepare(tmp_path / "file")


def test_overwrite_replaces_only_the_runs_own_files(tmp_path):
    config = SinusoidConfig(steps=20, steps_per_call=20, log_every=10)
    (tmp_path / "notes.txt").write_text("keep me")
    train(config, tmp_path, progress=False, plots=False)
    train(config, tmp_path, progress=False, plots=False, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert len(run_dir.read_metrics(tmp_path / "metrics.jsonl")) == 2


def test_damaged_or_missing_runs_give_errors_that_name_the_file(finished_run, tmp_path):
    _, out, _ = finished_run
    with pytest.raises(run_dir.RunDirError, match=r"run directory '.*nowhere' does not exist"):
        load(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((out / "config.json").read_text())
    with pytest.raises(run_dir.RunDirError, match=r"'.*broken/params.eqx' is missing"):
        load(broken)
    (broken / "params.eqx").write_bytes((out / "params.eqx").read_bytes()[:100])
    with pytest.raises(run_dir.RunDirError, match=r"'.*broken/params.eqx' could not be read"):
        load(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(run_dir.RunDirError, match=r"'.*broken/config.json' is not valid JSON"):
        load(broken)
    (broken / "config.json").write_text("[1, 2]")
    with pytest.raises(run_dir.RunDirError, match=r"not a usable config: a config must be a JSON"):
        load(broken)
    with pytest.raises(run_dir.RunDirError, match=r"'.*config.json' is a file, not a run dir"):
        load(broken / "config.json")
    (broken / "config.json").write_text(json.dumps({"task": "sinusoid", "steps": 0}))
    with pytest.raises(
        run_dir.RunDirError, match=r"config.json' is not a usable config: `steps` must be"
    ):
        load(broken)
