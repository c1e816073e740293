"""Multi-process runs: two processes of two simulated CPU devices each, over loopback with
gloo collectives, train like one process on one device; SIGTERM to one of them stops both at
the same step; the run resumes after SIGKILL; process 0 alone writes; and bad settings are
refused with the flag that is wrong."""

import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from numeric import assert_runs_agree

import metajax
from metajax._validation import OptionError
from metajax.core import multi_process
from metajax.runs import run_dir
from metajax.runs.checkpoints import CheckpointError

TRAIN = ["train", "sinusoid", "--meta-steps", "200", "--meta-batch-size", "8"]
TRAIN += ["--steps-per-call", "4", "--checkpoint-every", "50", "--log-every", "4"]
TRAIN += ["--no-plots", "--no-progress"]
"""A run long enough to be signalled in the middle: 50 compiled calls, each with collectives.
Not much longer: a ReLU that round-off tips over, a few hundred steps in, makes runs that sum
their tasks in different orders part by 1e-4 (600 steps on 4 devices against 1, say)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(child_env: dict, args: list[str], *, devices: int = 2, **env: str) -> subprocess.Popen:
    flags = f"{child_env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    return subprocess.Popen(
        [sys.executable, "-m", "metajax", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**child_env, "XLA_FLAGS": flags, "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo", **env},
    )


def two_processes(child_env: dict, args: list[str], *, by_environment: bool = False) -> list:
    """Starts ``metajax ARGS`` as the two processes of a run, with the multi-process settings
    as flags or as JAX's environment variables."""
    address = f"127.0.0.1:{free_port()}"
    processes = []
    for index in range(2):
        if by_environment:
            env = {"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2"}
            processes.append(start(child_env, args, JAX_PROCESS_ID=str(index), **env))
        else:
            flags = ["--coordinator-address", address, "--num-processes", "2"]
            processes.append(start(child_env, [*args, *flags, "--process-id", str(index)]))
    return processes


def finish(processes: list) -> list[tuple[int, str, str]]:
    """Each process's exit status, stdout and stderr, once all have ended."""
    outputs = [process.communicate(timeout=300) for process in processes]
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs, strict=True)]


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stop_message(stderr: str) -> str:
    return re.findall(r"stopped by SIGTERM at meta-step \d+ of 200[^\n]*", stderr)[-1]


def test_two_processes_stop_together_resume_after_a_kill_and_train_like_one(tmp_path, child_env):
    one, two = tmp_path / "one", tmp_path / "two"
    single = start(child_env, [*TRAIN, "--out", str(one)], devices=1)

    # Every process must share the task batch: a mesh without the other process's devices
    # is refused by both processes before anything is written.
    refused = finish(two_processes(child_env, [*TRAIN, "--out", str(two), "--devices", "2"]))
    for status, _, stderr in refused:
        assert status == 2
        assert stderr.endswith(
            "argument --devices: must be all 4 devices of the 2 processes of a multi-process "
            "run, got 2\n"
        )
    assert not two.exists()
    # Nor can each process name the run directory after its own clock.
    unnamed = finish(two_processes(child_env, TRAIN))
    for status, _, stderr in unnamed:
        assert status == 2
        assert stderr.endswith(
            "argument --out: required in a multi-process run (or --name), so that every "
            "process uses the same run directory\n"
        )

    # SIGTERM to process 1 only: both processes stop at the same step, in a checkpoint.
    processes = two_processes(child_env, [*TRAIN, "--out", str(two)])
    log = two / run_dir.METRICS
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, "training")
    processes[1].send_signal(signal.SIGTERM)
    stopped = finish(processes)
    assert [status for status, _, _ in stopped] == [143, 143]
    messages = [stop_message(stderr) for _, _, stderr in stopped]
    assert messages[0] == messages[1]
    step = int(messages[0].split("meta-step ")[1].split()[0])
    assert 8 <= step < 50
    assert (two / "checkpoints" / f"step_{step:09d}").is_dir()
    assert not (two / run_dir.SUMMARY).exists()

    # Resumed, with the settings in JAX's environment variables, then process 1 is killed
    # after the next checkpoint, and process 0 with it (as a cluster ends a failed job: JAX
    # would end it after its heartbeat timeout).
    processes = two_processes(child_env, ["train", "--resume", str(two)], by_environment=True)
    checkpoint = two / "checkpoints" / "step_000000050"
    wait_for(checkpoint.is_dir, "the checkpoint of meta-step 50")
    processes[1].kill()
    processes[0].kill()
    assert [status for status, _, _ in finish(processes)] == [-signal.SIGKILL] * 2

    finished = finish(two_processes(child_env, ["train", "--resume", str(two)]))
    assert [status for status, _, _ in finished] == [0, 0], finished[0][2][-3000:]
    assert "resumed at meta-step 50; " in finished[0][1]
    assert "150 meta-steps at" in finished[0][1]
    assert "on 4 devices of 2 processes" in finished[0][1]
    assert "metajax:" not in finished[1][1]  # process 0 speaks for the run (gloo talks too)
    summary = run_dir.read_json(two / run_dir.SUMMARY)
    assert (summary["devices"], summary["processes"]) == (4, 2)

    status, _, stderr = finish([single])[0]
    assert status == 0, stderr[-3000:]
    assert run_dir.read_json(one / run_dir.SUMMARY)["devices"] == 1
    assert assert_runs_agree(one, two) == list(range(4, 201, 4))

    # A stage that fails on process 0 only (its run directory is taken) fails on both.
    taken = finish(two_processes(child_env, [*TRAIN, "--out", str(two)]))
    assert [status for status, _, _ in taken] == [1, 1]
    assert "already holds a finished run" in taken[0][2]
    assert taken[1][2].endswith(
        "metajax: error: process 0 failed while setting the run up; its output says why\n"
    )
    assert json.loads((two / run_dir.SUMMARY).read_text()) == summary


def test_bad_multi_process_settings_name_their_flag(run_metajax, child_env):
    result = run_metajax(*TRAIN, "--num-processes", "2", "--process-id", "2")
    assert result.returncode == 2
    assert result.stderr.endswith(
        "metajax train: error: argument --process-id: must be an integer in [0, 1], got 2\n"
    )
    # JAX looks for the missing address in the cluster it runs on, and finds none.
    result = run_metajax(*TRAIN, "--num-processes", "2", "--process-id", "0")
    assert result.returncode == 2
    assert result.stderr.endswith(
        "argument --coordinator-address: must be given (or set in JAX_COORDINATOR_ADDRESS) to "
        "join a multi-process run, unless it runs on a cluster that JAX detects (SLURM, Open "
        "MPI, Kubernetes), got None\n"
    )
    env = {**child_env, "JAX_NUM_PROCESSES": "two"}
    result = subprocess.run(
        [sys.executable, "-m", "metajax", *TRAIN], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert result.stderr.endswith(
        "argument --num-processes: must be an integer (in JAX_NUM_PROCESSES), got 'two'\n"
    )


def test_a_run_that_cannot_start_says_where_and_what_to_check(run_metajax, tmp_path):
    out = ["--out", str(tmp_path / "run"), "--num-processes", "2"]
    with socket.socket() as holder:  # another program listens on the coordinator's port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        result = run_metajax(*TRAIN, *out, "--process-id", "0", "--coordinator-address", taken)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == (
        f"metajax: error: cannot start the coordinator at {taken}: another program (an earlier "
        "run still running, say) listens on its port; choose another port in "
        "--coordinator-address, the same for every process, or stop that program\n"
    )
    nobody = f"127.0.0.1:{free_port()}"
    waits = ["--coordinator-address", nobody, "--coordinator-timeout", "2"]
    for index, message in (
        ("1", f"no coordinator answered at {nobody} within 2 s, or not every process joined"),
        ("0", f"not every one of the 2 processes joined the run at {nobody} within 2 s"),
    ):
        start = time.monotonic()
        result = run_metajax(*TRAIN, *out, "--process-id", index, *waits)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert f"metajax: error: {message}" in result.stderr, result.stderr
        assert time.monotonic() - start < 30  # not JAX's own five minutes
    assert not (tmp_path / "run").exists()
    result = run_metajax(*TRAIN, *out, "--process-id", "1", "--coordinator-timeout", "0")
    assert result.returncode == 2
    assert result.stderr.endswith(
        "argument --coordinator-timeout: must be an integer in [1, 86400], got 0\n"
    )


@pytest.fixture
def no_cluster(monkeypatch):
    """An environment with no multi-process setting and no cluster for JAX to detect."""
    for variable in (*multi_process.ENVIRONMENT.values(), "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(variable, raising=False)


def test_initialize_joins_nothing_without_settings(no_cluster):
    assert multi_process.initialize() is False
    assert not multi_process.joined()
    assert multi_process.gather(7) == [7]
    assert multi_process.is_writer()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"coordinator_address": "localhost"},
            "`coordinator_address` must be HOST:PORT, the address of process 0, got 'localhost'",
        ),
        ({"num_processes": 0}, "`num_processes` must be an integer >= 1, got 0"),
    ],
)
def test_initialize_refuses_bad_or_missing_settings(no_cluster, settings, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        multi_process.initialize(**settings)
    assert not multi_process.joined()


def test_processes_that_find_different_checkpoints_refuse_to_train(tmp_path, monkeypatch):
    # As if another process saw another newest checkpoint (a run directory not shared).
    monkeypatch.setattr(multi_process, "gather", lambda value: [value, value + 50])
    config = metajax.presets("sinusoid")["tutorial"].replace(meta_steps=10)
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"the processes restored different checkpoints of '{tmp_path / 'run' / 'checkpoints'}'"
            " (meta-steps 0, 50, by process): every process must see the run directory at the "
            "same path, on a shared filesystem"
        ),
    ):
        metajax.train(config, tmp_path / "run", progress=False, plots=False)
