"""The metajax command stopped by real signals, SIGKILL included, at many points, then resumed.

Each test starts ``metajax train`` in a subprocess, stops it, resumes it with
``metajax train --resume`` and compares the run directory with one that was never stopped:
the parameters and metrics must be the same bytes. Some signals come from this process while the
child trains (slowed down, so that they land mid-run); others the child sends itself from inside
a chosen function, to hit exact points such as the middle of a checkpoint write.

The runs are of the test-only family ``lines`` and algorithm ``learned-lr`` (fakes.py), which
the metajax command loads as a plugin: the machinery is the same for every family, and this
also shows that a family and an algorithm from outside metajax survive every interruption.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

# Checkpoints at 0, 600, 1200, 1800 and 2000; a metrics record every 70 steps and the last 40.
TRAIN_ARGS = [
    "train",
    "lines",
    "--algorithm",
    "learned-lr",
    "--meta-steps",
    "2000",
    "--steps-per-call",
    "100",
    "--log-every",
    "70",
    "--checkpoint-every",
    "600",
    "--keep-checkpoints",
    "2",
    "--no-progress",
]

# Runs the metajax command after patching one public function to send a signal, or to slow
# it down.
CHILD = r"""
import os, signal, sys, time
from pathlib import Path
from metajax import plots
from metajax.runs import checkpoints, metrics
from metajax.cli import main

mode, args = sys.argv[1], sys.argv[2:]

def send(number):
    os.kill(os.getpid(), number)

if mode == "slow":  # a slow disk: the parent's signals land mid-run
    write = metrics.JsonlMetrics.write
    def slow_write(self, step, values):
        write(self, step, values)
        time.sleep(0.05)
    metrics.JsonlMetrics.write = slow_write
elif mode.startswith("during-checkpoint-write:"):  # after the files, before the rename
    number = getattr(signal, mode.split(":")[1])
    rename = os.rename
    def hooked(source, destination):
        if Path(source).name.startswith(".partial-step_000001200-"):
            send(number)
        rename(source, destination)
    os.rename = hooked
elif mode == "before-first-checkpoint":
    def kill(*args, **kwargs):
        send(signal.SIGKILL)
    checkpoints.save = kill
elif mode == "while-plotting":  # training done, outputs not yet written
    def kill(*args, **kwargs):
        send(signal.SIGKILL)
    plots.plot_adaptation = kill
elif mode == "sigint-twice":  # a user who will not wait for the checkpoint
    write = metrics.JsonlMetrics.write
    def impatient_write(self, step, values):
        write(self, step, values)
        if step == 910:
            send(signal.SIGINT)
            send(signal.SIGINT)
    metrics.JsonlMetrics.write = impatient_write

sys.exit(main(args))
"""


def start(mode, args, env):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def metajax(args, env, mode="plain"):
    return finish(start(mode, args, env))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, child_env):
    out = tmp_path_factory.mktemp("reference") / "run"
    status, _, err = metajax([*TRAIN_ARGS, "--out", str(out)], child_env)
    assert status == 0, err
    return out


def resume_and_compare(out, reference, env, plots=False):
    status, printed, err = metajax(
        ["train", "--resume", str(out), "--no-progress", *([] if plots else ["--no-plots"])], env
    )
    assert status == 0, err
    assert "Traceback" not in err
    assert printed.startswith("metajax: resumed at meta-step ")
    assert (out / "params.eqx").read_bytes() == (reference / "params.eqx").read_bytes()
    assert (out / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    ours, theirs = (json.loads((path / "summary.json").read_text()) for path in (out, reference))
    assert ours["final_meta_loss"] == theirs["final_meta_loss"]
    assert not [entry for entry in (out / "checkpoints").iterdir() if entry.name.startswith(".")]
    return printed


def wait_for_records(out, count, process, timeout=120):
    """Waits until the child has written ``count`` metrics records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count("\n") >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    raise AssertionError(f"the child wrote fewer than {count} records in {timeout} s")


def checkpoint_steps(out):
    return sorted(int(p.name[5:]) for p in (out / "checkpoints").iterdir() if p.name[0] != ".")


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_from_outside_saves_a_checkpoint_and_exits_with_a_resume_message(
    tmp_path, reference, child_env, signal_number
):
    out = tmp_path / "run"
    process = start("slow", [*TRAIN_ARGS, "--out", str(out), "--no-plots"], child_env)
    wait_for_records(out, 8, process)  # past step 560
    process.send_signal(signal_number)
    status, _, err = finish(process)
    name = signal.Signals(signal_number).name
    assert status == 128 + signal_number, err
    assert f"metajax: {name} received; saving a checkpoint after the current compiled call" in err
    stopped_at = checkpoint_steps(out)[-1]
    assert stopped_at % 100 == 0 and 560 < stopped_at < 2000
    assert (
        f"metajax: stopped by {name} at meta-step {stopped_at} of 2000; the run is saved in "
        f"checkpoint '{out}/checkpoints/step_{stopped_at:09d}'\n"
        f"metajax: resume with: metajax train --resume {out}\n"
    ) in err
    assert "Traceback" not in err
    resume_and_compare(out, reference, child_env)


def test_sigkill_from_outside_loses_nothing_before_the_newest_checkpoint(
    tmp_path, reference, child_env
):
    out = tmp_path / "run"
    process = start("slow", [*TRAIN_ARGS, "--out", str(out), "--no-plots"], child_env)
    wait_for_records(out, 12, process)  # past step 840, so past the checkpoint at 600
    process.kill()
    assert finish(process)[0] == -signal.SIGKILL
    assert checkpoint_steps(out)[-1] >= 600
    resume_and_compare(out, reference, child_env)


def test_sigkill_in_the_middle_of_a_checkpoint_write(tmp_path, reference, child_env):
    out = tmp_path / "run"
    status, _, _ = metajax(
        [*TRAIN_ARGS, "--out", str(out), "--no-plots"],
        child_env,
        mode="during-checkpoint-write:SIGKILL",
    )
    assert status == -signal.SIGKILL
    # The half-written checkpoint is a hidden directory; the one at 600 is the newest.
    (partial,) = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert partial.startswith(".partial-step_000001200-")
    assert checkpoint_steps(out) == [0, 600]
    printed = resume_and_compare(out, reference, child_env)
    assert printed.startswith("metajax: resumed at meta-step 600;")


def test_sigint_in_the_middle_of_a_checkpoint_write_stops_after_it(tmp_path, reference, child_env):
    out = tmp_path / "run"
    status, _, err = metajax(
        [*TRAIN_ARGS, "--out", str(out), "--no-plots"],
        child_env,
        mode="during-checkpoint-write:SIGINT",
    )
    assert status == 130, err
    assert "stopped by SIGINT at meta-step 1200 of 2000" in err
    assert checkpoint_steps(out) == [600, 1200]
    printed = resume_and_compare(out, reference, child_env)
    assert printed.startswith("metajax: resumed at meta-step 1200;")


def test_sigkill_before_the_first_checkpoint_starts_over(tmp_path, reference, child_env):
    out = tmp_path / "run"
    status, _, _ = metajax(
        [*TRAIN_ARGS, "--out", str(out), "--no-plots"], child_env, mode="before-first-checkpoint"
    )
    assert status == -signal.SIGKILL
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    printed = resume_and_compare(out, reference, child_env)
    assert printed.startswith("metajax: resumed at meta-step 0;")


def test_sigkill_after_training_while_drawing_the_figures(tmp_path, reference, child_env):
    out = tmp_path / "run"
    status, _, _ = metajax([*TRAIN_ARGS, "--out", str(out)], child_env, mode="while-plotting")
    assert status == -signal.SIGKILL
    assert not (out / "summary.json").exists()
    printed = resume_and_compare(out, reference, child_env, plots=True)
    assert "resumed at meta-step 2000;" in printed and "no meta-steps were left to take" in printed
    assert (out / "adaptation.png").exists() and (out / "meta_loss.png").exists()


def test_a_second_sigint_stops_at_once(tmp_path, reference, child_env):
    out = tmp_path / "run"
    status, _, err = metajax(
        [*TRAIN_ARGS, "--out", str(out), "--no-plots"], child_env, mode="sigint-twice"
    )
    assert status == 130, err
    assert err.endswith(
        f"metajax: interrupted; resume from the newest checkpoint with: metajax train --resume "
        f"{out}\n"
    )
    assert checkpoint_steps(out) == [0, 600]
    resume_and_compare(out, reference, child_env)
