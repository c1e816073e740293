"""``--overwrite`` replaces an earlier run only once the new one has started: every refusal
before that leaves the earlier run's files as they were, byte for byte."""

import math
import shutil

import pytest
from bad_input import deny_new_files, snapshot, status_of

import metajax
from metajax.cli import main
from metajax.core import memory
from metajax.runs import run_dir

QUICK = ["--meta-steps", "20", "--steps-per-call", "10", "--log-every", "10", "--no-progress"]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """A finished sinusoid run, with a user's own file beside it."""
    out = tmp_path_factory.mktemp("overwrite") / "run"
    assert main(["train", "sinusoid", *QUICK, "--seed", "1", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("keep me")
    return out


def wide() -> str:
    """A hidden size whose weight matrix XLA cannot allocate (see test_memory.py)."""
    return str(max(100000, 2 * math.isqrt(memory.available_bytes() // 4)))


@pytest.mark.parametrize(
    "args, status, error",
    [
        # Refused by the memory estimate of the first compiled call, after the new run's
        # config.json and first checkpoint were written.
        (["--meta-batch-size", "2147483647"], 1, "meta-training needs more memory"),
        # Refused while building the model, after config.json too.
        (["--hidden-sizes", wide(), wide()], 1, "building the model needs more memory"),
        # Refused before anything is written.
        (["--micro-batches", "7"], 2, "--micro-batches: must be a divisor of meta_batch_size"),
        (["--devices", "3"], 2, "--devices: must be an integer in [1, 1], got 3"),
    ],
)
def test_a_refused_run_leaves_the_earlier_one_byte_for_byte(
    earlier_run, capsys, args, status, error
):
    before = snapshot(earlier_run)
    command = ["train", "sinusoid", *QUICK, "--out", str(earlier_run), "--overwrite", *args]
    assert status_of(command) == status
    err = capsys.readouterr().err
    assert error in err and "Traceback" not in err, err
    assert snapshot(earlier_run) == before
    assert sorted(path.name for path in earlier_run.iterdir()) == sorted(
        {*run_dir.RUN_FILES, "notes.txt"} - {run_dir.TENSORBOARD, run_dir.DATA}
    )


def test_a_run_stopped_before_its_first_meta_steps_puts_the_earlier_one_back(
    earlier_run, monkeypatch
):
    before = snapshot(earlier_run)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # As if Ctrl-C came while the first call compiled: the new run wrote its config and its
    # first checkpoint, and trained nothing.
    monkeypatch.setattr(metajax.runs.training_run, "meta_train", interrupted)
    config = metajax.presets("sinusoid")["tutorial"].replace(meta_steps=20, steps_per_call=10)
    with pytest.raises(KeyboardInterrupt):
        metajax.train(config, earlier_run, overwrite=True, progress=False)
    assert snapshot(earlier_run) == before


def test_once_the_new_run_has_trained_the_earlier_one_is_gone(earlier_run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name, data in snapshot(earlier_run).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)

    class FailingSink:
        def write(self, step, metrics):
            raise OSError("the disk is full")

        def flush(self):
            pass

        def close(self):
            pass

    # The new run's first call of meta-steps ran, then writing its records failed: the new
    # run is the one to keep (it resumes from its first checkpoint), the earlier one is gone.
    config = metajax.presets("sinusoid")["tutorial"].replace(
        meta_steps=20, steps_per_call=10, log_every=10
    )
    with pytest.raises(OSError, match="the disk is full"):
        metajax.train(config, out, overwrite=True, progress=False, sinks=[FailingSink()])
    assert not (out / run_dir.SET_ASIDE).exists()
    assert not (out / run_dir.SUMMARY).exists() and (out / "notes.txt").read_text() == "keep me"
    assert metajax.resume(out, progress=False, plots=False)["resumed_from_step"] == 0


def test_a_folder_set_aside_by_a_killed_overwrite_is_named_and_kept(earlier_run, tmp_path):
    out = tmp_path / "run"
    (out / run_dir.SET_ASIDE).mkdir(parents=True)
    (out / run_dir.SET_ASIDE / "params.eqx").write_bytes(b"the earlier run")
    config = metajax.presets("sinusoid")["tutorial"].replace(meta_steps=20, steps_per_call=10)
    with pytest.raises(run_dir.RunDirError) as caught:
        metajax.train(config, out, overwrite=True, progress=False)
    assert str(caught.value) == (
        f"'{out / run_dir.SET_ASIDE}' holds the files of a run that an --overwrite set aside, "
        "and the process that did so stopped before the new run started (killed, say); move "
        f"them back into '{out}' (after removing the files the new run left there), or delete "
        "the folder if the run is not wanted"
    )
    assert (out / run_dir.SET_ASIDE / "params.eqx").read_bytes() == b"the earlier run"
    assert [path.name for path in out.iterdir()] == [run_dir.SET_ASIDE]


def test_resuming_into_a_folder_that_cannot_be_written_is_refused_before_any_step(
    earlier_run, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "unfinished"
    shutil.copytree(earlier_run, out)
    (out / run_dir.SUMMARY).unlink()  # stopped before its end, from its newest checkpoint's view
    before = snapshot(out)

    deny_new_files(monkeypatch)
    assert main(["train", "--resume", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"metajax: error: '{out}' cannot be written: Permission denied\n"
    )
    assert snapshot(out) == before
