"""Run directories of any family and algorithm: what train writes, load and plot read back.

Driven by the test-only family ``lines`` and algorithm ``learned-lr`` (fakes.py): nothing here
depends on a family metajax ships.
"""

import hashlib
import json
import shutil
import threading

import fakes
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fakes import line_config
from PIL import Image

import metajax
from metajax import OptionError
from metajax.cli import main
from metajax.core import memory
from metajax.runs import checkpoints, metrics, run_dir
from metajax.runs.setup import build


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "lines"
    config = line_config(meta_steps=250, log_every=100, steps_per_call=125, seed=7)
    config = config.with_algorithm("learned-lr")
    summary = metajax.train(config, out, progress=False)
    return config, out, summary


def test_run_directory_contents(finished_run):
    config, out, summary = finished_run
    assert sorted(path.name for path in out.iterdir()) == sorted(
        set(run_dir.RUN_FILES) - {run_dir.TENSORBOARD, run_dir.DATA}  # lines needs no data
    )
    # Checkpoints at the start, at 100 and 200 (checkpoint_every), and the end; the newest 2.
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == [
        "step_000000200",
        "step_000000250",
    ]
    assert metajax.RunConfig.from_dict(json.loads((out / "config.json").read_text())) == config
    records = metrics.read(out / "metrics.jsonl", ("step", "meta_loss", "hit_rate"))
    # Two full windows of 100 steps and the last 50, with the family's aux metric.
    assert [record["step"] for record in records] == [100, 200, 250]
    assert all(record["meta_loss"] > 0 and 0 <= record["hit_rate"] <= 1 for record in records)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["meta_steps"] == 250 and summary["final_meta_loss_window"] == 250
    # The final meta-loss averages all 250 steps here: the windows' weighted mean.
    weighted = (
        100 * records[0]["meta_loss"] + 100 * records[1]["meta_loss"] + 50 * records[2]["meta_loss"]
    ) / 250
    assert summary["final_meta_loss"] == pytest.approx(weighted, rel=1e-9)


def test_load_gives_a_run_ready_to_adapt_and_a_rerun_reproduces_it(finished_run, tmp_path):
    config, out, _ = finished_run
    run = metajax.load(out)
    assert run.config == config and run.path == out
    # The algorithm's own meta-parameters survive: learned-lr's step size was trained.
    checkpoint = checkpoints.latest(out / "checkpoints")
    state, _ = checkpoints.load(checkpoint.path, build(config).initial_state)
    jax.tree.map(np.testing.assert_array_equal, run.meta_params, state.meta_params)
    assert float(run.meta_params["log_lr"]) != pytest.approx(np.log(0.05), abs=1e-3)
    # Ready to adapt: one call adapts to a new task, and the adapted model fits it better.
    task = jax.tree.map(lambda leaf: leaf[0], config.task.sample_tasks(jax.random.key(5), 1))
    adapted = run.adapt(task.support, inner_steps=5)
    before, _ = run.loss_fn(run.params, task.query)
    after, aux = run.loss_fn(adapted, task.query)
    assert after < before and set(aux) == {"hit_rate"}
    assert run.model(adapted)["w1"].shape == (1, 16)
    metajax.train(config, tmp_path / "again", progress=False, plots=False)
    assert (tmp_path / "again" / "params.eqx").read_bytes() == (out / "params.eqx").read_bytes()


def test_plot_redraws_the_figures(finished_run):
    _, out, _ = finished_run
    for path in (out / "adaptation.png", out / "meta_loss.png"):
        path.unlink()
    paths = metajax.plot(out, adapt_steps=2)
    assert [path.name for path in paths] == ["adaptation.png", "meta_loss.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.size == (900, 540)
    with pytest.raises(OptionError, match=r"`adapt_steps` must be an integer in \[1, 50\], got 0"):
        metajax.plot(out, adapt_steps=0)


def test_an_earlier_run_is_never_overwritten_silently(finished_run):
    config, out, _ = finished_run
    before = (out / "params.eqx").read_bytes()
    with pytest.raises(
        run_dir.RunDirError,
        match=r"already holds a finished run \(config.json, .*, checkpoints\); choose another "
        r"directory, or pass --overwrite to replace it",
    ):
        metajax.train(config, out, progress=False)
    assert (out / "params.eqx").read_bytes() == before


def test_metrics_windows_do_not_depend_on_the_call_size(tmp_path):
    # Calls of 7 steps: the first ends before the first window does, later ones cross windows.
    config = line_config(meta_steps=25, steps_per_call=7, log_every=10)
    metajax.train(config, tmp_path, progress=False, plots=False)
    records = metrics.read(tmp_path / "metrics.jsonl")
    assert [record["step"] for record in records] == [10, 20, 25]
    reference = config.replace(steps_per_call=25, log_every=25)
    metajax.train(reference, tmp_path / "reference", progress=False, plots=False)
    (total,) = metrics.read(tmp_path / "reference" / "metrics.jsonl")
    for name in ("meta_loss", "hit_rate"):
        weighted = sum(r[name] * n for r, n in zip(records, (10, 10, 5), strict=True)) / 25
        assert weighted == pytest.approx(total[name], rel=1e-9)


def test_damaged_metrics_are_named_with_their_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "meta_loss": 0.5}\n\n{"step": 2}\n')
    with pytest.raises(run_dir.RunDirError, match=r"metrics.jsonl' line 3 lacks one of step, meta"):
        metrics.read(path)
    path.write_text('{"step": 1, "meta_loss": 0.5}\n{"step": 2, "meta_lo\n')
    with pytest.raises(run_dir.RunDirError, match=r"metrics.jsonl' line 2 is not valid JSON"):
        metrics.read(path)
    with pytest.raises(run_dir.RunDirError, match=r"missing.jsonl' is missing"):
        metrics.read(tmp_path / "missing.jsonl")


def test_a_file_is_not_a_run_directory(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(run_dir.RunDirError, match=r"run directory '.*file' is a file; choose a"):
        run_dir.prepare(tmp_path / "file")


def test_overwrite_replaces_only_the_runs_own_files(tmp_path):
    config = line_config(meta_steps=20, steps_per_call=20, log_every=10)
    (tmp_path / "notes.txt").write_text("keep me")
    metajax.train(config, tmp_path, progress=False, plots=False)
    metajax.train(config, tmp_path, progress=False, plots=False, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert len(metrics.read(tmp_path / "metrics.jsonl")) == 2


def test_damaged_or_missing_runs_give_errors_that_name_the_file(finished_run, tmp_path):
    _, out, _ = finished_run
    with pytest.raises(run_dir.RunDirError, match=r"run directory '.*nowhere' does not exist"):
        metajax.load(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((out / "config.json").read_text())
    with pytest.raises(run_dir.RunDirError, match=r"'.*broken/params.eqx' is missing"):
        metajax.load(broken)
    (broken / "params.eqx").write_bytes((out / "params.eqx").read_bytes()[:100])
    with pytest.raises(run_dir.RunDirError, match=r"'.*broken/params.eqx' could not be read"):
        metajax.load(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(run_dir.RunDirError, match=r"'.*broken/config.json' is not valid JSON"):
        metajax.load(broken)
    (broken / "config.json").write_text("[1, 2]")
    with pytest.raises(run_dir.RunDirError, match=r"not a usable config: a config must be a JSON"):
        metajax.load(broken)
    with pytest.raises(run_dir.RunDirError, match=r"'.*config.json' is a file, not a run dir"):
        metajax.load(broken / "config.json")
    (broken / "config.json").write_text(json.dumps({"family": "lines", "training": {"seed": -1}}))
    with pytest.raises(
        run_dir.RunDirError, match=r"config.json' is not a usable config: `seed` must be"
    ):
        metajax.load(broken)


def test_running_out_of_memory_after_training_keeps_the_run(tmp_path, monkeypatch):
    def plot_too_large(self, path, run, adapt_steps, key):
        raise memory.OutOfMemoryError("drawing the figure", "as if it did not fit")

    monkeypatch.setattr(fakes.Lines, "plot_example", plot_too_large)
    out = tmp_path / "run"
    with pytest.raises(memory.OutOfMemoryError, match=r"drawing the figure needs more memory"):
        metajax.train(line_config(meta_steps=20, steps_per_call=10), out, progress=False)
    # What was trained stays; the run is finished by resuming it.
    assert (out / "params.eqx").exists() and checkpoints.latest(out / "checkpoints").step == 20
    monkeypatch.undo()
    assert metajax.resume(out, progress=False)["resumed_from_step"] == 20


def test_the_figure_is_prepared_meanwhile_and_a_failure_there_costs_only_the_speed(
    tmp_path, monkeypatch
):
    seen = []

    def prepare_and_fail(self, run, adapt_steps, key):
        seen.append((threading.current_thread().name, jax.tree.map(jnp.shape, run.meta_params)))
        raise RuntimeError("as if the figure could not be compiled")

    monkeypatch.setattr(fakes.Lines, "prepare_example", prepare_and_fail)
    out = tmp_path / "run"
    metajax.train(line_config(meta_steps=20, steps_per_call=10), out, progress=False)
    trained = jax.tree.map(jnp.shape, metajax.load(out).meta_params)
    assert seen == [("prepare figures", trained)]
    assert (out / "adaptation.png").stat().st_size > 0 and (out / "summary.json").exists()


def test_a_changed_byte_of_params_is_named_by_eval_adapt_and_plot(finished_run, tmp_path, capsys):
    _, out, summary = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    params = copy / "params.eqx"
    data = bytearray(params.read_bytes())
    assert hashlib.sha256(data).hexdigest() == summary["params_sha256"]
    data[-3] ^= 0x01  # the last float's lowest bits: loads fine, as another number
    params.write_bytes(bytes(data))
    message = (
        f"'{params}' is not the file the run saved: its SHA-256 differs from the one "
        f"'{copy / 'summary.json'}' records, so its bytes were changed or damaged since; "
        "restore it from a copy, or train the run again"
    )
    for command in (["eval", str(copy), "--num-tasks", "2"], ["plot", str(copy)]):
        assert main(command) == 1
        assert capsys.readouterr().err == f"metajax: error: {message}\n"
    with pytest.raises(run_dir.RunDirError) as error:
        metajax.load(copy)
    assert str(error.value) == message
