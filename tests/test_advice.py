"""Advice that works: each error or warning that suggests a flag or a command is made to
appear, and the command is run again as it suggests; the CLI accepts it there and the error
or warning is gone."""

import shlex

import pytest
from bad_input import deny_new_files, status_of
from images import write_image_folders

from metajax.cli import main
from metajax.runs import training

QUICK = ["--meta-steps", "10", "--steps-per-call", "10", "--log-every", "10", "--no-progress"]


class Started(Exception):
    """Raised where a run would start its meta-steps: every check before them has passed."""


@pytest.fixture
def checks_only(monkeypatch):
    """Stops a run where its meta-steps would start, after every check of its settings, data
    and directory (training itself is another test's subject)."""

    def start(*args, **kwargs):
        raise Started

    monkeypatch.setattr(training, "_train", start)


def passes_its_checks(command: list[str]) -> bool:
    try:
        main(command)
    except Started:
        return True
    return False


def stderr_of(command: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    status = status_of(command)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return status, err


WARNINGS = [
    (
        ["--algorithm", "reptile", "--inner-steps", "1"],
        "; set --inner-steps to 5 or more, as the paper does",
        ["--inner-steps", "5"],
    ),
    (
        # finn2017's support loss curves by 18.5 at the start: stable below 2 / 19.5 with lambda 1
        ["--algorithm", "imaml", "--prox-lambda", "1", "--inner-steps", "10", "--inner-lr", "0.4"],
        "; lower --inner-lr, solve it by L-BFGS (--inner-solver lbfgs), or damp the system as "
        "the paper's code does: --cg-damping 1 and --lambda-damping 10 (as omniglot's "
        "paper-*-imaml presets do)",
        ["--cg-damping", "1", "--lambda-damping", "10"],
    ),
    (
        ["--algorithm", "meta-sgd", "--inner-steps", "1"],
        "metajax: warning: tested with 10 steps (--test-steps), the step sizes were learned for",
        ["--test-steps", "1"],
    ),
]


@pytest.mark.parametrize("args, advice, taken", WARNINGS, ids=[a[1] for a, _, _ in WARNINGS])
def test_a_warning_names_flags_that_silence_it(args, advice, taken, tmp_path, capsys, checks_only):
    command = ["train", "sinusoid", "--preset", "finn2017", *QUICK, *args]
    capsys.readouterr()
    assert passes_its_checks([*command, "--out", str(tmp_path / "warned")])
    assert advice in capsys.readouterr().err
    assert passes_its_checks([*command, *taken, "--out", str(tmp_path / "taken")])
    assert "warning" not in capsys.readouterr().err


def image_command(root, *args):
    settings = ["--image-size", "16", "--filters", "8", "--meta-batch-size", "2"]
    return ["train", "images", "--data", str(root), *settings, *QUICK, *args]


IMAGE_SETS = [
    (
        ["--ways", "3", "--validation-count", "5", "--test-count", "3"],
        "; lower --ways or give more classes",
        ["--validation-count", "3"],
    ),
    (
        ["--ways", "3", "--validation-count", "3", "--test-count", "7"],
        "too few to hold out 10 for validation and testing and train on the rest; lower "
        "--validation-count or --test-count",
        ["--test-count", "3"],
    ),
    (["--ways", "4"], "; lower --ways or give more classes", ["--ways", "3"]),
    (
        ["--shots", "1", "--query-shots", "6"],
        "; lower --shots or --query-shots, or remove the class",
        ["--query-shots", "5"],
    ),
    (
        ["--validation-count", "0"],
        "; or ask for no validation tasks (metajax train: --validation-tasks 0; ",
        ["--validation-tasks", "0"],
    ),
]


@pytest.mark.parametrize(
    "args, advice, taken", IMAGE_SETS, ids=[" ".join(a) for a, _, _ in IMAGE_SETS]
)
def test_data_errors_name_flags_that_fix_them(args, advice, taken, tmp_path, capsys, checks_only):
    # 9 classes of 6 images; by default 3 of them for validation and 3 for testing, 3-way.
    root = write_image_folders(tmp_path / "set", {f"c{i}": 6 for i in range(9)}, size=16)
    defaults = ["--ways", "3", "--shots", "1", "--query-shots", "2", "--validation-tasks", "2"]
    counts = ["--validation-count", "3", "--test-count", "3"]
    command = image_command(root, *defaults, *counts, *args)
    status, err = stderr_of([*command, "--out", str(tmp_path / "refused")], capsys)
    assert status == 1 and err.startswith("metajax: error: ") and advice in err, err
    assert passes_its_checks([*command, *taken, "--out", str(tmp_path / "run")])


@pytest.fixture
def finished_run(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "sinusoid", *QUICK, "--no-plots", "--out", str(out)]) == 0
    return out


def test_a_run_directory_in_use_names_the_flags_that_proceed(finished_run, capsys):
    command = ["train", "sinusoid", *QUICK, "--no-plots", "--out", str(finished_run)]
    status, err = stderr_of(command, capsys)
    assert status == 1 and "choose another directory, or pass --overwrite to replace" in err
    assert main([*command, "--overwrite"]) == 0
    # An unfinished run: without its summary, the run resumes from its newest checkpoint.
    (finished_run / "summary.json").unlink()
    (finished_run / "params.eqx").unlink()
    status, err = stderr_of(command, capsys)
    assert status == 1 and "continue it with --resume, choose another directory, or pass" in err
    status, err = stderr_of(["eval", str(finished_run)], capsys)
    suggested = err.split("continue it with: ")[1].strip()
    assert status == 1 and suggested == f"metajax train --resume {finished_run}", err
    assert main(shlex.split(suggested)[1:]) == 0
    assert main(["eval", str(finished_run), "--num-tasks", "4", "--no-plots"]) == 0


def test_what_a_config_file_or_a_resumed_run_decides_is_named_to_drop(finished_run, capsys):
    config = str(finished_run / "config.json")
    status, err = stderr_of(["train", "--config", config, "sinusoid"], capsys)
    assert status == 2 and "drop FAMILY sinusoid and its options" in err
    out = str(finished_run.parent / "again")
    assert main(["train", "--config", config, "--no-progress", "--no-plots", "--out", out]) == 0
    status, err = stderr_of(["train", "--resume", out, "--overwrite"], capsys)
    assert status == 2 and "continues a run with its saved config and directory; drop " in err
    assert main(["train", "--resume", out]) == 0  # finished: nothing to resume


def test_a_renamed_flag_is_named_by_its_new_name(tmp_path, capsys):
    command = ["train", "sinusoid", "--no-progress", "--no-plots", "--out", str(tmp_path / "r")]
    status, err = stderr_of([*command, "--steps", "10"], capsys)
    assert status == 2 and "unrecognized arguments: --steps 10 (--steps is now --meta-steps)" in err
    assert main([*command, "--meta-steps", "10", "--steps-per-call", "10"]) == 0


def test_a_run_folder_that_cannot_be_written_suggests_out(finished_run, capsys, monkeypatch):
    deny_new_files(monkeypatch, finished_run)
    command = ["eval", str(finished_run), "--num-tasks", "4", "--no-plots"]
    status, err = stderr_of(command, capsys)
    assert status == 1 and err == (
        f"metajax: error: '{finished_run}' cannot be written: Permission denied; write the "
        "evaluation elsewhere with --out DIR\n"
    )
    out = finished_run.parent / "evaluation"
    assert main([*command, "--out", str(out)]) == 0
    assert (out / "eval.json").is_file()
