"""The persistent compilation cache the command turns on: where it goes, that a later run loads
what an earlier one compiled with the same results, and that damaged entries cost a compilation,
not a run."""

import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from metajax.runs import compilation_cache

QUICK = ["--meta-steps", "20", "--steps-per-call", "10", "--no-plots", "--no-progress"]


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({"METAJAX_CACHE": "/c"}, "/c/compiled"),
        ({"XDG_CACHE_HOME": "/x"}, "/x/metajax/compiled"),
        ({"HOME": "/h"}, "/h/.cache/metajax/compiled"),
        ({"METAJAX_CACHE": "/c", "METAJAX_COMPILATION_CACHE": "/elsewhere"}, "/elsewhere"),
        ({"METAJAX_COMPILATION_CACHE": "off"}, None),
        ({"METAJAX_COMPILATION_CACHE": "0"}, None),
    ],
)
def test_the_cache_folder_follows_the_environment(environment, expected, monkeypatch):
    for name in ("METAJAX_CACHE", "XDG_CACHE_HOME", "METAJAX_COMPILATION_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    folder = compilation_cache.default_dir()
    assert (None if folder is None else str(folder)) == expected


def test_a_cache_jax_was_told_to_use_is_kept():
    configured = jax.config.jax_compilation_cache_dir  # the test suite's (conftest.py)
    assert configured
    assert compilation_cache.enable_compilation_cache("/elsewhere") == Path(configured)
    assert jax.config.jax_compilation_cache_dir == configured


def test_a_later_run_loads_the_programs_and_survives_damaged_entries(tmp_path, child_env):
    env = {k: v for k, v in child_env.items() if not k.startswith("JAX_PERSISTENT_CACHE")}
    env.pop("JAX_COMPILATION_CACHE_DIR")
    env["METAJAX_CACHE"] = str(tmp_path / "cache")
    folder = tmp_path / "cache" / "compiled"

    def train(name, **changes):
        command = ["train", "sinusoid", *QUICK, "--out", str(tmp_path / name)]
        result = subprocess.run(
            [sys.executable, "-m", "metajax", *command],
            capture_output=True,
            text=True,
            timeout=300,
            env={**env, **changes},
        )
        assert result.returncode == 0, result.stderr
        return result.stderr, (tmp_path / name / "params.eqx").read_bytes()

    _, params = train("off", METAJAX_COMPILATION_CACHE="off")
    assert not folder.exists()
    (tmp_path / "afile").write_text("not a folder")
    stderr, unusable = train("unusable", METAJAX_COMPILATION_CACHE=str(tmp_path / "afile"))
    assert unusable == params
    assert stderr == (
        f"metajax: warning: the compilation cache cannot be kept: '{tmp_path}/afile' is a file, "
        "not a folder; choose a folder; compiling without it (METAJAX_COMPILATION_CACHE=DIR "
        "chooses another folder, =off none)\n"
    )
    stderr, cold = train("cold")
    entries = {entry.name: entry.stat().st_size for entry in folder.glob("*-cache")}
    # The initial state's program and the training loop's (the run draws no figures).
    assert stderr == "" and cold == params and len(entries) == 2
    for name, size in entries.items():  # every entry cut short, as by a killed process
        (folder / name).write_bytes((folder / name).read_bytes()[: size // 2])
    stderr, damaged = train("damaged")
    assert damaged == params and "Traceback" not in stderr
    assert f"metajax: warning: an entry of the compilation cache in '{folder}' could not be " in (
        stderr
    )
    # The damaged entries were removed and written whole again: the next run reads them all.
    rewritten = {e.name: e.stat().st_size for e in folder.glob("*-cache")}
    assert rewritten.keys() == entries.keys()
    assert all(rewritten[name] > size // 2 for name, size in entries.items())
    stderr, warm = train("warm")
    assert stderr == "" and warm == params


def test_the_default_run_compiles_four_programs(tmp_path, child_env):
    # The README's first command, cold: the initial state, the training loop, the figure's key
    # and its adaptation curves, each once; no eager one-op programs.
    env = {**child_env, "METAJAX_COMPILATION_CACHE": "off", "JAX_LOG_COMPILES": "1"}
    env.pop("JAX_COMPILATION_CACHE_DIR")
    result = subprocess.run(
        [sys.executable, "-m", "metajax", "train", "sinusoid", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    compiled = re.findall(r"Finished XLA compilation of (\S+)", result.stderr)
    # The figure's two are compiled on a thread of their own while training compiles and runs.
    assert sorted(compiled) == [
        "jit(_adaptation_curves)",
        "jit(initialise)",
        "jit(stream_key)",
        "jit(train_steps_on)",
    ]
