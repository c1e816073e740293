"""The ``metajax`` command line."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from metajax.cli import main


def run_metajax(*args):
    """Runs the installed CLI in a fresh process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "metajax", *args], capture_output=True, text=True, timeout=120
    )


def test_train_writes_a_run_directory_with_both_figures(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(
        ["train", "sinusoid", "--steps", "200", "--steps-per-call", "100", "--log-every", "50",
         "--k-shot", "10", "--inner-steps", "2", "--seed", "3", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert status == 0
    for name in ("config.json", "metrics.jsonl", "params.eqx", "summary.json"):
        assert (out / name).stat().st_size > 0
    for name in ("adaptation.png", "meta_loss.png"):
        with Image.open(out / name) as image:
            image.load()
            assert image.format == "PNG" and image.size == (900, 540)
    config = json.loads((out / "config.json").read_text())
    assert (config["steps"], config["k_shot"], config["inner_steps"], config["seed"]) == (
        200, 10, 2, 3
    )  # fmt: skip
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    summary = json.loads((out / "summary.json").read_text())
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith(f"metajax: final meta-loss {summary['final_meta_loss']:.4g} ")
    assert "meta-steps at" in printed and "steps/s" in printed and "wall time" in printed

    # `metajax plot` redraws the figures from the directory alone.
    (out / "adaptation.png").unlink()
    assert main(["plot", str(out), "--adapt-steps", "3"]) == 0
    assert Image.open(out / "adaptation.png").size == (900, 540)
    assert "wrote" in capsys.readouterr().out


def test_help_documents_every_option():
    result = run_metajax("train", "sinusoid", "--help")
    assert result.returncode == 0
    for flag in ("--meta-batch-size", "--k-shot", "--k-query", "--inner-lr", "--inner-steps",
                 "--steps", "--first-order", "--preset", "--seed", "--out", "--meta-lr",
                 "--amplitude-range", "--overwrite"):  # fmt: skip
        assert flag in result.stdout
    assert "20000 with tutorial, 70000 with finn2017" in " ".join(result.stdout.split())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "-5"], "argument --steps: must be an integer >= 1, got -5"),
        (["--k-shot", "0"], "argument --k-shot: must be an integer >= 1, got 0"),
        (["--preset", "imagenet"], "argument --preset: invalid choice: 'imagenet'"),
        (["--inner-lr", "abc"], "argument --inner-lr: invalid float value: 'abc'"),
        (["--inner-lr", "-1"], "argument --inner-lr: must be a finite number > 0, got -1.0"),
        (["--amplitude-range", "2", "1"], "argument --amplitude-range: must be a pair"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_message_and_no_traceback(tmp_path, args, message):
    result = run_metajax("train", "sinusoid", *args, "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert message in result.stderr
    assert "usage: metajax train sinusoid" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_refused_without_overwrite(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    result = run_metajax("train", "sinusoid", "--steps", "10", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "already holds a run (config.json)" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "config.json").read_text() == "{}"


def test_plot_of_a_missing_run_is_a_clear_error(tmp_path):
    result = run_metajax("plot", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
