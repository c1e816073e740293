"""Runs in a run directory: stopped by signals, resumed bit for bit, stopped at NaNs.

The run machinery is generic, so these tests drive it with the test-only family ``lines``
(fakes.py), whose loss has an aux metric: its windows must resume bit for bit too.
"""

import json
import os
import shutil
import signal
import warnings

import fakes
import numpy as np
import pytest
from fakes import line_config

import metajax
from metajax import Diverged, Interrupted
from metajax.evaluation import reports
from metajax.runs import checkpoints, metrics, recording, run_dir, training_run
from metajax.runs.setup import build
from metajax.runs.stop_signals import StopSignals

# Checkpoints at 0, 200, 400, 600 and 730; metrics every 70 steps and the last 30.
CONFIG = line_config(
    meta_steps=730, steps_per_call=100, log_every=70, checkpoint_every=200, keep_checkpoints=2
)


class SignalAt:
    """A metrics sink that sends this process a signal when it receives the record of a step:
    the way a user's Ctrl-C lands while a compiled call runs."""

    def __init__(self, step, signal_number, times=1):
        self.step, self.signal_number, self.times = step, signal_number, times

    def write(self, step, values):
        if step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signal_number)

    def flush(self):
        pass

    def close(self):
        pass


class SignalOnClose(SignalAt):
    """Sends its signal when the run closes its sinks: after training, before the summary."""

    def write(self, step, values):
        pass

    def close(self):
        os.kill(os.getpid(), self.signal_number)


def train(config=CONFIG, out=None, sinks=()):
    return metajax.train(config, out, progress=False, plots=False, sinks=sinks)


def resume(out):
    return metajax.resume(out, progress=False, plots=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run that was never stopped."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(out=out)
    return out


def assert_same_run(out, reference):
    assert (out / "params.eqx").read_bytes() == (reference / "params.eqx").read_bytes()
    assert (out / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    ours, theirs = (json.loads((path / "summary.json").read_text()) for path in (out, reference))
    for key in ("final_meta_loss", "initial_meta_loss", "diverged"):
        assert ours[key] == theirs[key]


@pytest.mark.parametrize(
    "signal_number, record_step, stop_step",
    [
        (signal.SIGINT, 280, 300),  # between checkpoints, in the middle of a metrics window
        (signal.SIGTERM, 350, 400),  # at a periodic checkpoint
    ],
)
def test_a_run_stopped_by_a_signal_resumes_bit_for_bit(
    tmp_path, reference, signal_number, record_step, stop_step, capsys
):
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as caught:
        train(out=out, sinks=[SignalAt(record_step, signal_number)])
    error = caught.value
    checkpoint = out / "checkpoints" / f"step_{stop_step:09d}"
    assert (error.signal, error.exit_status, error.step) == (
        signal_number,
        128 + signal_number,
        stop_step,
    )
    assert (error.checkpoint, error.run_dir) == (checkpoint, out)
    assert str(error) == (
        f"stopped by {signal.Signals(signal_number).name} at meta-step {stop_step} of 730; "
        f"the run is saved in checkpoint '{checkpoint}'"
    )
    assert (
        "received; saving a checkpoint after the current compiled call" in capsys.readouterr().err
    )
    assert not (out / "params.eqx").exists() and not (out / "summary.json").exists()
    # The handlers are the defaults again once the run has stopped.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    summary = resume(out)
    assert summary["resumed_from_step"] == stop_step
    assert_same_run(out, reference)
    # The newest two checkpoints are kept, the ones written after resuming.
    assert [found.step for found in checkpoints.list_complete(out / "checkpoints")] == [600, 730]


def stopped_and_resumed(config, tmp_path, *, record_step, resumed_from):
    """Train `config` once straight through and once stopped by SIGINT at a record and resumed;
    assert the two runs are the same, bit for bit, and return the resumed one."""
    never_stopped = tmp_path / "never-stopped"
    train(config, never_stopped)
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(config, out, sinks=[SignalAt(record_step, signal.SIGINT)])
    assert resume(out)["resumed_from_step"] == resumed_from
    assert_same_run(out, never_stopped)
    return out


def test_a_run_under_a_meta_lr_schedule_resumes_bit_for_bit(tmp_path, reference):
    # The schedule's step count is part of the optimizer state the checkpoint keeps.
    config = CONFIG.replace(meta_optimizer="sgd", meta_lr_schedule="cosine", meta_lr_end=1e-4)
    out = stopped_and_resumed(config, tmp_path, record_step=280, resumed_from=300)
    assert (out / "params.eqx").read_bytes() != (reference / "params.eqx").read_bytes()
    # Each record has the mean step size of its window: cosine decay from the preset's
    # meta_lr to 1e-4 over the 730 meta-steps; the last window is steps 700 to 729.
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    sizes = 1e-4 + (config.training.meta_lr - 1e-4) * (1 + np.cos(np.pi * np.arange(730) / 730)) / 2
    assert [record["step"] for record in records] == [*range(70, 730, 70), 730]
    for record in records:
        window = sizes[(record["step"] - 1) // 70 * 70 : record["step"]]
        np.testing.assert_allclose(record["meta_lr"], window.mean(), rtol=1e-6)
    assert "meta_lr" not in (reference / "metrics.jsonl").read_text()


def test_a_run_carrying_reptile_s_inner_state_resumes_bit_for_bit(tmp_path):
    # The inner Adam's moments live in the meta-parameters: checkpoints keep them.
    config = line_config(meta_steps=400, steps_per_call=100, log_every=70, checkpoint_every=200)
    config = config.with_algorithm("reptile").replace(
        inner_steps=2, inner_optimizer="adam", carry_inner_state=True, meta_optimizer="sgd"
    )
    out = stopped_and_resumed(config, tmp_path, record_step=140, resumed_from=200)
    run = metajax.load(out)
    adam, _ = run.meta_params["inner_state"]
    assert int(adam.count) == 400 * 2


def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path, reference):
    out = tmp_path / "run"
    run_dir.prepare(out)
    run_dir.write_json(out / "config.json", CONFIG.to_dict())
    summary = resume(out)
    assert summary["resumed_from_step"] == 0
    assert_same_run(out, reference)


def test_metrics_written_after_the_newest_checkpoint_are_redone(tmp_path, reference):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(out=out, sinks=[SignalAt(280, signal.SIGINT)])
    # As if killed after writing the records of steps past 300 and half of another.
    with open(out / "metrics.jsonl", "a") as file:
        file.write('{"step": 350, "meta_loss": 1.0}\n{"step": 420, "meta_')
    resume(out)
    assert_same_run(out, reference)


@pytest.fixture
def stopped_run(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(out=out, sinks=[SignalAt(280, signal.SIGINT)])
    return out


def test_a_checkpoint_written_for_another_config_is_refused(stopped_run):
    config = json.loads((stopped_run / "config.json").read_text())
    config["training"]["seed"] = 1
    config["preset"] = "steep"
    (stopped_run / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"checkpoint '.*step_000000300/checkpoint.json' was written for another config "
        r"than '.*run/config.json' \(they differ in preset, training\); restore the run's "
        r"config.json, or start a new run",
    ):
        resume(stopped_run)


def test_a_damaged_newest_checkpoint_is_named_when_resuming(stopped_run):
    state_file = stopped_run / "checkpoints" / "step_000000300" / "state.eqx"
    data = bytearray(state_file.read_bytes())
    data[-1] ^= 0xFF
    state_file.write_bytes(bytes(data))
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"step_000000300/state.eqx' is damaged: .*\. To resume from the checkpoint before "
        r"it \(meta-step 200\), move '.*step_000000300' out of '.*run/checkpoints'",
    ):
        resume(stopped_run)


def test_a_renamed_checkpoint_is_refused_when_resuming(stopped_run):
    found = stopped_run / "checkpoints" / "step_000000300"
    found.rename(found.with_name("step_000000500"))
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"step_000000500/checkpoint.json' is damaged: it holds meta-step 300 \(state 300\), "
        r"not the 500 of its directory's name",
    ):
        resume(stopped_run)


def test_an_unknown_config_key_or_format_is_named_when_resuming(stopped_run):
    config = json.loads((stopped_run / "config.json").read_text())
    (stopped_run / "config.json").write_text(json.dumps({**config, "learning_rate": 1}))
    with pytest.raises(
        run_dir.RunDirError,
        match=r"'.*run/config.json' is not a usable config: unknown config keys: learning_rate",
    ):
        resume(stopped_run)
    (stopped_run / "config.json").write_text(
        json.dumps({**config, "config_format": 3, "metajax_version": "2.0"})
    )
    with pytest.raises(
        run_dir.RunDirError,
        match=r"config.json' is not a usable config: it was written by metajax 2.0 in config "
        r"format 3; this metajax \(.*\) reads formats 1 to 2",
    ):
        resume(stopped_run)


def test_resuming_a_finished_run_changes_nothing(tmp_path, reference):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    assert metajax.resume(out, progress=False) == json.loads((out / "summary.json").read_text())
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before


def test_an_absurd_inner_step_size_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    config = line_config(meta_steps=300, inner_lr=1e30, steps_per_call=100, checkpoint_every=100)
    with pytest.raises(Diverged) as caught:
        train(config, out)
    assert str(caught.value) == (
        "meta-training stopped: the meta-loss and meta-gradient became non-finite at meta-step 1 "
        f"(meta-loss inf); the last good checkpoint is '{out}/checkpoints/step_000000000' "
        "(meta-step 0). Resuming would repeat it: start a new run with smaller step sizes "
        "(meta_lr, or the algorithm's inner step size)"
    )
    assert sorted(path.name for path in out.iterdir()) == [
        "checkpoints",
        "config.json",
        "metrics.jsonl",
    ]
    assert (out / "metrics.jsonl").read_text() == ""


def rewrite_newest_checkpoint(run, changes):
    """Writes the newest checkpoint of ``run`` again with a valid checksum, its metadata changed
    by ``changes`` (unusable values another program wrote, say); returns its manifest before."""
    found = checkpoints.latest(run / "checkpoints")
    state, manifest = checkpoints.load(found.path, pieces(CONFIG)[3])
    metadata = {key: manifest[key] for key in ("config", "recent_losses", "recent_aux")}
    checkpoints.save(found.path.parent, state, step=found.step, metadata=metadata | changes, keep=5)
    return manifest


def test_a_damaged_initial_meta_loss_is_refused(stopped_run):
    manifest = rewrite_newest_checkpoint(stopped_run, {"initial_meta_loss": float("inf")})
    assert type(manifest["initial_meta_loss"]) is float  # kept since the first meta-step
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"step_000000300/checkpoint.json' is damaged: initial_meta_loss must be the first "
        r"meta-step's loss, a finite number, not inf",
    ):
        resume(stopped_run)


def diverging_run(out, meta_lr):
    """200 steps of the lines family with every step's meta-loss on record; Adam at 0.3 ends
    1.3 times above the first meta-loss, at 1 and above more than 10 times: finite, but
    diverged."""
    config = line_config(meta_steps=200, steps_per_call=100, log_every=1, meta_lr=meta_lr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(config, out)
    return summary, [w for w in caught if issubclass(w.category, metajax.DivergenceWarning)]


def test_a_run_that_ends_far_above_its_first_meta_loss_is_reported_as_diverged(tmp_path):
    summary, caught = diverging_run(tmp_path / "run", meta_lr=3.0)
    first = metrics.read(tmp_path / "run" / "metrics.jsonl")[0]
    assert first["step"] == 1 and summary["initial_meta_loss"] == first["meta_loss"]
    final, initial = summary["final_meta_loss"], summary["initial_meta_loss"]
    assert np.isfinite(final) and final > 10 * initial and summary["diverged"] is True
    assert [str(w.message) for w in caught] == [
        f"meta-training diverged, though every value stayed finite: the final meta-loss, "
        f"{final:.4g} (the mean of the last 200 meta-steps), is {final / initial:.3g} times the "
        f"first meta-step's, {initial:.4g}, and more than 10 times is no training; the run's "
        "meta-parameters are not usable. Start a new run with smaller step sizes (`meta_lr`, "
        "or the algorithm's inner step size)"
    ]
    # A finished run all the same, whose evaluation says how its training ended.
    report = metajax.evaluate(tmp_path / "run", metajax.EvalSettings(num_tasks=20), write=False)
    assert report["training_diverged"] == {"initial_meta_loss": initial, "final_meta_loss": final}
    table = reports.format_table(report, fakes.Lines, report["settings"])
    assert table.splitlines()[-1] == (
        f"     diverged: meta-training ended at a meta-loss of {final:.4g}, from {initial:.4g} "
        "at its first step (summary.json)"
    )


def test_the_command_line_shows_a_finite_divergence_as_a_warning_line(tmp_path, run_metajax):
    result = run_metajax(
        "train", "sinusoid", "--meta-lr", "1", "--meta-steps", "100", "--steps-per-call", "100",
        "--no-plots", "--no-progress", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    warning = result.stderr.splitlines()[0]
    assert warning.startswith(
        "metajax: warning: meta-training diverged, though every value stayed finite: the final "
        "meta-loss, "
    )
    assert warning.endswith(
        "Start a new run with smaller step sizes (--meta-lr, or the algorithm's inner step size)"
    )


def test_a_run_that_ends_a_little_above_its_first_meta_loss_is_not_reported(tmp_path, reference):
    summary, caught = diverging_run(tmp_path / "run", meta_lr=0.3)
    ratio = summary["final_meta_loss"] / summary["initial_meta_loss"]
    assert 1 < ratio < 10 and summary["diverged"] is False and caught == []
    assert json.loads((reference / "summary.json").read_text())["diverged"] is False


@pytest.mark.parametrize(
    "initial, final, diverged",
    [(0.1, 1.01, True), (0.1, 0.99, False), (None, 1e30, False), (-1.0, 5.0, False)],
)
def test_the_divergence_rule(initial, final, diverged):
    # A negative first loss (a log-likelihood, say) gives no scale to compare with.
    assert recording.diverged_finitely(initial, final) is diverged


def test_a_second_sigint_stops_at_once_and_the_handlers_are_restored():
    previous = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # already stopping: nothing more
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is previous
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def write_metrics(path, text):
    path.write_text(text)
    return path


def test_truncating_metrics_keeps_the_records_up_to_a_step(tmp_path):
    lines = [json.dumps({"step": step, "meta_loss": 0.5}) + "\n" for step in (10, 20, 30)]
    path = write_metrics(tmp_path / "metrics.jsonl", "".join(lines) + '{"step": 4')
    metrics.truncate(path, 20)
    assert path.read_text() == "".join(lines[:2])
    # A blank line is skipped, and a last record without its newline gets one, so that the
    # records appended after it start on a line of their own.
    write_metrics(path, lines[0] + "\n" + lines[1].strip())
    metrics.truncate(path, 20)
    assert path.read_text() == "".join(lines[:2])
    metrics.truncate(path, 0)
    assert path.read_text() == ""


def test_truncating_metrics_refuses_damage_and_gaps(tmp_path):
    path = write_metrics(tmp_path / "metrics.jsonl", '{"step": 10}\nnot json\n{"step": 30}\n')
    with pytest.raises(run_dir.RunDirError, match=r"metrics.jsonl' line 2 is not valid JSON"):
        metrics.truncate(path, 30)
    write_metrics(path, '{"step": 10}\n{"step": "20"}\n')
    with pytest.raises(run_dir.RunDirError, match=r"metrics.jsonl' line 2 lacks an integer step"):
        metrics.truncate(path, 30)
    write_metrics(path, '{"step": 10}\n{"step": 30}\n')
    with pytest.raises(
        run_dir.RunDirError,
        match=r"metrics.jsonl' has records up to step 10, not 20 like the checkpoint the run "
        r"resumes from, so the metrics cannot be completed. Move the newer checkpoints out",
    ):
        metrics.truncate(path, 20)


def test_a_signal_while_setting_up_stops_at_step_0(tmp_path, monkeypatch, reference):
    out = tmp_path / "run"
    # As if Ctrl-C came while JAX starts up and the model is built.
    monkeypatch.setattr(fakes, "SIGNAL_ON_BUILD", signal.SIGINT)
    with pytest.raises(Interrupted) as caught:
        train(out=out)
    assert (caught.value.step, caught.value.checkpoint.name) == (0, "step_000000000")
    monkeypatch.undo()
    assert resume(out)["resumed_from_step"] == 0
    assert_same_run(out, reference)


def test_a_signal_after_training_stops_before_the_summary(tmp_path, reference):
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as caught:
        train(out=out, sinks=[SignalOnClose(None, signal.SIGTERM)])
    assert (caught.value.step, caught.value.exit_status) == (730, 143)
    assert caught.value.checkpoint.name == "step_000000730"
    assert not (out / "summary.json").exists()
    assert resume(out)["resumed_from_step"] == 730
    assert_same_run(out, reference)


def pieces(config):
    setup = build(config)
    return setup.learner, setup.optimizer, setup.sample_tasks, setup.initial_state


def test_a_new_run_refuses_a_directory_that_holds_a_run(stopped_run):
    with pytest.raises(
        run_dir.RunDirError,
        match=r"run' already holds a run's checkpoints and metrics.jsonl; resume it "
        r"\(resume=True\), or choose another directory",
    ):
        training_run.run(stopped_run, CONFIG.to_dict(), *pieces(CONFIG), CONFIG.training)


def test_a_checkpoint_past_the_runs_length_is_refused(stopped_run):
    shorter = CONFIG.replace(meta_steps=250).training
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"checkpoint '.*step_000000300' is at meta-step 300, past the run's 250",
    ):
        training_run.run(
            stopped_run, CONFIG.to_dict(), *pieces(CONFIG), shorter, resume=True, progress=False
        )


def test_a_model_of_another_shape_is_reported_as_another_config(stopped_run):
    config = json.loads((stopped_run / "config.json").read_text())
    config["task"]["width"] = 8
    (stopped_run / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"was written for another config than '.*config.json' \(they differ in task\)",
    ):
        resume(stopped_run)


@pytest.mark.parametrize(
    "recent",
    [
        {"recent_losses": [float("nan")] * 300},
        {"recent_aux": {"hit_rate": [1.0, 2.0]}},  # shorter than the pending window (20 steps)
        {"recent_aux": [0.5] * 300},
    ],
)
def test_recent_metrics_that_are_not_finite_numbers_are_refused(stopped_run, recent):
    rewrite_newest_checkpoint(stopped_run, recent)
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"step_000000300/checkpoint.json' is damaged: recent_losses must list the "
        r"meta-losses of its last steps",
    ):
        resume(stopped_run)


def test_a_signal_ignored_by_the_process_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.received is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
