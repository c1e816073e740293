"""The README stays true: its test command is CI's, and its Python example runs as printed."""

import re
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command.endswith("python -m pytest")
    assert command in README


def test_python_examples_run_and_print_what_the_readme_says(capsys):
    # The examples build on each other, as a reader runs them: one namespace for all.
    example, *more = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    printed = np.array(capsys.readouterr().out.strip().strip("[]").split(), dtype=float)
    claimed = re.search(r"print\(curve.mean\(axis=0\)\)  # on a CPU: \[(.*?)\]", example)
    claimed = np.array(claimed.group(1).split(), dtype=float)
    if jax.default_backend() == "cpu":
        np.testing.assert_allclose(printed, claimed, rtol=0.01)
    else:  # Other backends round differently, and 5000 meta-steps amplify that.
        np.testing.assert_allclose(printed, claimed, rtol=0.5)
    assert np.all(np.diff(printed) < 0)
    # The inner-optimizer example: learners whose meta-gradients are finite and differ.
    for block in more:
        exec(compile(block, "README.md", "exec"), namespace)
    gradients = [
        namespace[name].meta_grad(namespace["params"], namespace["new_tasks"])[1]
        for name in ("adam_inner", "momentum_inner")
    ]
    for gradient in gradients:
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(gradient))
    assert not np.allclose(*(jax.tree.leaves(g)[0] for g in gradients))
