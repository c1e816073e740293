"""Task batches sharded over devices: 8 simulated CPU devices give the 1-device result, for
every algorithm (MAML's in the quick suite, the others' with ``-m slow``) and both kinds of
task family, and a meta-batch they cannot share evenly is refused before a run writes
anything."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from images import alphabets
from numeric import assert_runs_agree
from sharded_training import QUICK, RUNS

import metajax
from metajax.core import sharding
from metajax.runs import run_dir
from metajax.runs.setup import build

EIGHT_DEVICES = "--xla_force_host_platform_device_count=8"


def on_eight_devices(child_env: dict, *args: str) -> subprocess.CompletedProcess:
    env = {**child_env, "XLA_FLAGS": f"{child_env.get('XLA_FLAGS', '')} {EIGHT_DEVICES}"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory, child_env):
    """``trained(name)``: the directory of the runs of :mod:`sharded_training` named ``name``,
    trained on 1 device and on 8; the quick ones in one process, the others in another."""
    data = alphabets(tmp_path_factory.mktemp("data") / "set", groups=3, characters=4)
    script = Path(__file__).with_name("sharded_training.py")
    done: dict[str, Path] = {}

    def trained(name: str) -> Path:
        if name not in done:
            names = QUICK if name in QUICK else [n for n in RUNS if n not in QUICK]
            out = tmp_path_factory.mktemp("sharded")
            result = on_eight_devices(child_env, str(script), str(out), str(data), *names)
            assert result.returncode == 0, result.stderr[-3000:]
            done.update(dict.fromkeys(names, out))
        return done[name]

    return trained


@pytest.mark.parametrize(
    "name", [name if name in QUICK else pytest.param(name, marks=pytest.mark.slow) for name in RUNS]
)
def test_eight_devices_give_the_one_device_result(sharded_runs, name):
    runs = sharded_runs(name)
    one, eight = runs / name / "devices-1", runs / name / "devices-all"
    assert run_dir.read_json(one / run_dir.SUMMARY)["devices"] == 1
    assert run_dir.read_json(eight / run_dir.SUMMARY)["devices"] == 8
    assert len(assert_runs_agree(one, eight)) == 10
    # Training moved the parameters, so the comparison is of something that changed.
    one_params = metajax.load(one).meta_params
    setup = build(metajax.load_config(one / run_dir.CONFIG))
    start = setup.learner.init(setup.params)
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), start, one_params)
    assert max(jax.tree.leaves(moved)) > 1e-3


def test_a_meta_batch_the_devices_cannot_share_is_refused_before_anything_is_written(
    tmp_path, child_env
):
    out = tmp_path / "run"
    args = ["-m", "metajax", "train", "sinusoid", "--meta-batch-size", "12", "--out", str(out)]
    result = on_eight_devices(child_env, *args)
    assert result.returncode == 2
    assert result.stderr.endswith(
        "metajax train: error: argument --meta-batch-size: must be a multiple of the 8 devices "
        "that share each task batch (8 or 16, say), or run on fewer devices, got 12\n"
    )
    assert not out.exists()
    result = on_eight_devices(child_env, *args, "--devices", "9")
    assert result.returncode == 2
    assert result.stderr.endswith(
        "metajax train: error: argument --devices: must be an integer in [1, 8], got 9\n"
    )
    # On 4 or 6 devices, 12 tasks divide evenly.
    result = on_eight_devices(child_env, *args, "--devices", "6", "--meta-steps", "10")
    assert result.returncode == 0, result.stderr
    assert "10 meta-steps at" in result.stdout and "steps/s on 6 devices" in result.stdout
    assert json.loads((out / run_dir.SUMMARY).read_text())["devices"] == 6


def test_the_mesh_and_its_errors_in_python():
    mesh = sharding.task_mesh()
    assert mesh.axis_names == ("tasks",) and mesh.size == jax.device_count()
    with pytest.raises(metajax.OptionError, match=r"^`devices` must be an integer in \[1, 1\]"):
        sharding.task_mesh(2)
    sharding.check_divisible(7, sharding.task_mesh(1))
