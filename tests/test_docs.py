"""The tutorial and the guide run end to end, as a user runs them, and say what they claim."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setenv("METAJAX_DOCS_QUICK", "1")


@pytest.mark.slow  # its derivatives and toy MAML objective: test_maml.py too
def test_the_documented_command_renders_the_tutorial_with_its_outputs(tmp_path, quick):
    notebook = tmp_path / "tutorial.ipynb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jupytext",
            "--to",
            "ipynb",
            "--execute",
            str(DOCS / "tutorial.md"),
            "-o",
            str(notebook),
        ],
        check=True,
        capture_output=True,
        timeout=600,
        env=os.environ.copy(),
    )
    cells = [
        cell for cell in nbformat.read(notebook, as_version=4).cells if cell.cell_type == "code"
    ]
    outputs = [output for cell in cells for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 6
    printed = "".join(output.get("text", "") for output in outputs)

    # The tutorial's numeric checks: e, e, e for exp at 1; 4, 2, 0 for x**2 at 2; the toy
    # MAML objective's value 5 and gradient 4 at (2, 1).
    exp_derivatives = re.search(r"derivatives of exp at 1: (\S+) (\S+) (\S+)", printed).groups()
    assert [float(value) for value in exp_derivatives] == pytest.approx([math.e] * 3, rel=1e-6)
    assert "derivatives of x**2 at 2: 4.0 2.0 0.0\n" in printed
    assert "adapted x: -2.0\n" in printed
    assert "maml_objective(2, 1): 5.0\n" in printed
    assert "its gradient: 4.0\n" in printed
    assert "vmap and the batched call agree: True\n" in printed
    # Every run adapts: held-out error falls after one step, in raw JAX with one task and with
    # four tasks per meta-step, and with metajax.
    for run in ("one task per step", "four tasks per step"):
        before, after = re.search(
            rf"{run}: held-out query MSE (\S+) before adaptation, (\S+) after", printed
        ).groups()
        assert float(after) < 0.8 * float(before), (run, before, after)
    errors = [float(value) for value in re.findall(r"query MSE after \d steps?: (\S+)", printed)]
    assert len(errors) == 4 and errors[1] < 0.8 * errors[0]


def test_without_the_quick_switch_the_tutorial_keeps_the_original_step_counts():
    source = (DOCS / "tutorial.md").read_text()
    assert "FIT_STEPS = 100  # the original's step counts\n" in source
    assert "META_STEPS = 500 if QUICK else 20_000\n" in source


# Runs the guide's code cells in one namespace, in a process of its own: the guide registers a
# task family and an algorithm, which must not join the registry of the other tests.
RUN_GUIDE = r"""
import contextlib, io, json, sys
import jax, jupytext
from flax import nnx

namespace = {}
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    for cell in jupytext.read(sys.argv[1]).cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, sys.argv[1], "exec"), namespace)
# nnx.update put the meta-learned parameters into the Flax module.
flax_params = jax.tree.leaves(nnx.state(namespace["flax_model"], nnx.Param))
learned = jax.tree.leaves(namespace["flax_meta_params"])
json.dump(
    {
        "results": namespace["results"],
        "printed": printed.getvalue(),
        "steps": namespace["STEPS"],
        "flax_updated": all(bool((a == b).all()) for a, b in zip(flax_params, learned)),
        "shots": [result["shots"] for result in namespace["report"]["results"]],
    },
    sys.stdout,
)
"""


@pytest.mark.slow  # quicker: test_maml.py, test_flax.py, test_extension.py, test_training_run.py
def test_every_snippet_of_the_guide_runs_and_every_model_adapts(quick):
    done = subprocess.run(
        [sys.executable, "-c", RUN_GUIDE, str(DOCS / "guide.md")],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    results, printed, steps = outcome["results"], outcome["printed"], outcome["steps"]
    assert set(results) == {"dict", "equinox", "flax", "quadratics", "blobs", "resume", "family"}
    assert results.pop("resume") == [steps // 2, steps]
    assert "the same bits as the run that never stopped: True" in printed
    # The classifier with batch normalisation adapts: held-out accuracy rises after one step.
    before, after = results.pop("blobs")
    assert after > before + 0.2, (before, after)
    for name, (before, after) in results.items():
        assert after < 0.8 * before, (name, before, after)
    assert "Flax NNX: held-out query MSE" in printed and "Equinox: held-out query MSE" in printed
    assert outcome["flax_updated"]
    # The guide's own family and algorithm, through the library and the command line.
    assert "clipped MAML (norm 0.5): held-out query MSE with K=10" in printed
    assert "metajax train quadratics exited with 0" in printed
    assert outcome["shots"] == [5, 20]
