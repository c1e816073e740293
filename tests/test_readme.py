"""The README stays true: its test command is CI's, and its Python example runs as printed."""

import re
from pathlib import Path

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
    claimed = re.search(r"print\(curve.mean\(axis=0\)\)  # \[(.*?)\]", example).group(1)
    np.testing.assert_allclose(printed, np.array(claimed.split(), dtype=float), rtol=0.01)
