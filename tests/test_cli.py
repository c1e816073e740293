"""The ``metajax`` command line."""

import json

import pytest
from PIL import Image

from metajax.cli import build_parser, main, sinusoid_config


def test_train_writes_a_run_directory_with_both_figures(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(
        [
            "train",
            "sinusoid",
            "--steps",
            "200",
            "--steps-per-call",
            "100",
            "--log-every",
            "50",
            "--k-shot",
            "10",
            "--inner-steps",
            "2",
            "--seed",
            "3",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert status == 0
    for name in ("config.json", "metrics.jsonl", "params.eqx", "summary.json"):
        assert (out / name).stat().st_size > 0
    for name in ("adaptation.png", "meta_loss.png"):
        with Image.open(out / name) as image:
            image.load()
            assert image.format == "PNG" and image.size == (900, 540)
    config = json.loads((out / "config.json").read_text())
    assert (config["steps"], config["k_shot"], config["inner_steps"], config["seed"]) == (
        200,
        10,
        2,
        3,
    )
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


def parse_config(*args):
    return sinusoid_config(build_parser().parse_args(["train", "sinusoid", *args]))


def test_every_option_reaches_the_config():
    config = parse_config(
        "--preset",
        "finn2017",
        "--algorithm",
        "maml",
        "--first-order",
        "--amplitude-range",
        "1",
        "2",
        "--phase-range",
        "0",
        "1",
        "--x-range",
        "-3",
        "3",
        "--meta-batch-size",
        "8",
        "--k-shot",
        "5",
        "--k-query",
        "15",
        "--inner-lr",
        "0.05",
        "--inner-steps",
        "3",
        "--meta-lr",
        "0.002",
        "--steps",
        "123",
        "--seed",
        "9",
        "--hidden-sizes",
        "16",
        "8",
        "--log-every",
        "7",
        "--steps-per-call",
        "11",
    )
    assert config.to_dict() | {"metajax_version": None} == {
        "task": "sinusoid",
        "metajax_version": None,
        "algorithm": "maml",
        "preset": "finn2017",
        "amplitude_range": [1.0, 2.0],
        "phase_range": [0.0, 1.0],
        "x_range": [-3.0, 3.0],
        "meta_batch_size": 8,
        "k_shot": 5,
        "k_query": 15,
        "inner_lr": 0.05,
        "inner_steps": 3,
        "meta_lr": 0.002,
        "steps": 123,
        "first_order": True,
        "hidden_sizes": [16, 8],
        "seed": 9,
        "log_every": 7,
        "steps_per_call": 11,
    }
    # Options not given come from the preset.
    assert parse_config("--preset", "finn2017").meta_batch_size == 25
    assert parse_config().meta_batch_size == 4
    assert parse_config("--algorithm", "pretrain").algorithm == "pretrain"


def test_help_documents_every_option(run_metajax):
    result = run_metajax("train", "sinusoid", "--help")
    assert result.returncode == 0
    for flag in (
        "--meta-batch-size",
        "--k-shot",
        "--k-query",
        "--inner-lr",
        "--inner-steps",
        "--steps",
        "--first-order",
        "--preset",
        "--seed",
        "--out",
        "--meta-lr",
        "--amplitude-range",
        "--overwrite",
    ):
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
def test_bad_arguments_exit_non_zero_with_a_message_and_no_traceback(
    tmp_path, args, message, run_metajax
):
    result = run_metajax("train", "sinusoid", *args, "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert message in result.stderr
    assert "usage: metajax train sinusoid" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "../escape"], "argument --name: must be a plain name without '/'"),
        (["--name", ".."], "argument --name: must be a plain name without '/', got '..'"),
        (["--out", ""], "argument --out: must name a directory, got ''"),
    ],
)
def test_run_directory_names_are_checked(args, message, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "sinusoid", *args])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unwritable_run_directory_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    status = main(["train", "sinusoid", "--steps", "5", "--out", str(tmp_path / "afile" / "run")])
    assert status == 1
    assert "metajax: error: [Errno 20] Not a directory" in capsys.readouterr().err


def test_an_existing_run_is_refused_without_overwrite(tmp_path, run_metajax):
    (tmp_path / "config.json").write_text("{}")
    result = run_metajax("train", "sinusoid", "--steps", "10", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "already holds a run (config.json)" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "config.json").read_text() == "{}"


def test_plot_of_a_missing_run_is_a_clear_error(tmp_path, run_metajax):
    result = run_metajax("plot", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_plot_checks_its_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["plot", str(tmp_path), "--adapt-steps", "0"])
    assert exit.value.code == 2
    assert "argument --adapt-steps: must be an integer >= 1, got 0" in capsys.readouterr().err
