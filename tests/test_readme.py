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


def test_python_example_runs_and_prints_what_the_readme_says(capsys):
    (example,) = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    exec(compile(example, "README.md", "exec"), {})
    printed = np.array(capsys.readouterr().out.strip().strip("[]").split(), dtype=float)
    claimed = re.search(r"print\(curve.mean\(axis=0\)\)  # on a CPU: \[(.*?)\]", example)
    claimed = np.array(claimed.group(1).split(), dtype=float)
    if jax.default_backend() == "cpu":
        np.testing.assert_allclose(printed, claimed, rtol=0.01)
    else:  # Other backends round differently, and 5000 meta-steps amplify that.
        np.testing.assert_allclose(printed, claimed, rtol=0.5)
    assert np.all(np.diff(printed) < 0)
