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

    # `--config` reruns the saved config: the same run, bit for bit. Run options may come
    # before TASK or after it, and --config needs none.
    again = tmp_path / "again"
    assert (
        main(
            [
                "train",
                "--no-progress",
                "--config",
                str(out / "config.json"),
                "--out",
                str(again),
                "--no-plots",
            ]
        )
        == 0
    )
    assert (again / "params.eqx").read_bytes() == (out / "params.eqx").read_bytes()
    assert (again / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()


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
        "--checkpoint-every",
        "50",
        "--keep-checkpoints",
        "2",
    )
    assert config.to_dict() | {"metajax_version": None} == {
        "task": "sinusoid",
        "config_format": 1,
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
        "checkpoint_every": 50,
        "keep_checkpoints": 2,
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
        (["--steps", "-5"], "argument --steps: must be an integer in [1, 2147483647], got -5"),
        (["--k-shot", "0"], "argument --k-shot: must be an integer in [1, 2147483647], got 0"),
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
    assert (
        "already holds an unfinished run (config.json); continue it with --resume, choose another "
        "directory, or pass --overwrite to replace it"
    ) in result.stderr
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


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "metajax train: error: choose a task (sinusoid), --config FILE or --resume RUN_DIR"),
        (
            ["--resume", "run", "--out", "elsewhere"],
            "argument --resume: continues a run with its saved config and directory; drop --out",
        ),
        (
            ["--resume", "run", "sinusoid"],
            "argument --resume: continues a run with its saved config and directory; drop TASK "
            "sinusoid",
        ),
        (
            ["--config", "c.json", "sinusoid", "--steps", "5"],
            "argument --config: the config file holds every setting; drop TASK sinusoid and its "
            "options",
        ),
        (["--resume", "run", "--config", "c.json"], "not allowed with argument"),
        (["--resume", ""], "argument --resume: must name a run directory, got ''"),
        (
            ["sinusoid", "--out", "a", "--name", "b"],
            "argument --name: not allowed with argument --out",
        ),
        (
            ["sinusoid", "--checkpoint-every", "0"],
            "argument --checkpoint-every: must be an integer in [1, 2147483647], got 0",
        ),
        (
            ["sinusoid", "--keep-checkpoints", "-1"],
            "argument --keep-checkpoints: must be an integer in [1, 2147483647], got -1",
        ),
    ],
)
def test_train_refuses_conflicting_sources_with_a_usage_error(args, message, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", *args])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def write_config(path, **changes):
    config = json.loads((path).read_text()) if path.exists() else {}
    path.write_text(json.dumps({**config, **changes}))
    return path


@pytest.mark.parametrize(
    "contents, message",
    [
        (None, "metajax: error: config file '{path}' does not exist"),
        ("{not json", "metajax: error: '{path}' is not valid JSON"),
        (
            '{"k_shot": 5, "learning_rate": 1}',
            "metajax: error: '{path}' is not a usable config: unknown config keys: learning_rate",
        ),
        (
            '{"k_shot": 0}',
            "metajax: error: '{path}' is not a usable config: `k_shot` must be an integer in "
            "[1, 2147483647], got 0",
        ),
        (
            '{"task": "omniglot"}',
            "metajax: error: '{path}' is not a usable config: this is a config for task "
            "'omniglot', not 'sinusoid'",
        ),
        (
            '{"config_format": true}',
            "metajax: error: '{path}' is not a usable config: it was written by metajax ? in "
            "config format True; this metajax",
        ),
        (
            '{"inner_lr": 1' + "0" * 400 + "}",
            "metajax: error: '{path}' is not a usable config: `inner_lr` must be a finite number "
            "> 0, got 1000",
        ),
        (
            '{"config_format": 7, "metajax_version": "3.0"}',
            "metajax: error: '{path}' is not a usable config: it was written by metajax 3.0 in "
            "config format 7; this metajax",
        ),
    ],
)
def test_a_bad_config_file_is_named(tmp_path, contents, message, capsys):
    path = tmp_path / "config.json"
    if contents is not None:
        path.write_text(contents)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert message.format(path=path) in err
    assert not (tmp_path / "run").exists()


def test_a_non_finite_meta_loss_exits_with_status_1_and_names_the_step(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "sinusoid", "--inner-lr", "1e30", "--steps", "200", "--out", str(out)]
    assert main([*args, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "metajax: error: meta-training stopped: the meta-loss and meta-gradient became "
        "non-finite at meta-step 1 (meta-loss nan); the last good checkpoint is "
        f"'{out}/checkpoints/step_000000000' (meta-step 0)."
    )
    # The run has no parameters to plot or evaluate; saying so beats a missing-file error.
    assert main(["plot", str(out)]) == 1
    assert (
        f"'{out}/params.eqx' is missing: the run in '{out}' has not finished; continue it with: "
        f"metajax train --resume {out}"
    ) in capsys.readouterr().err


def test_resume_of_a_missing_or_foreign_run_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 1
    assert f"run directory '{tmp_path / 'nowhere'}' does not exist" in capsys.readouterr().err
    write_config(tmp_path / "config.json", task="omniglot")
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert (
        f"metajax: error: '{tmp_path}/config.json' is a config for task 'omniglot', which "
        "metajax lacks"
    ) in capsys.readouterr().err
    (tmp_path / "config.json").unlink()
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert f"'{tmp_path}/config.json' is missing" in capsys.readouterr().err


def test_paths_that_are_not_what_they_should_be_are_named(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["train", "--resume", str(tmp_path / "afile")]) == 1
    assert f"metajax: error: '{tmp_path}/afile' is a file, not a run directory" in (
        capsys.readouterr().err
    )
    assert main(["train", "--config", str(tmp_path)]) == 1
    assert (
        f"metajax: error: '{tmp_path}' is a directory; give a config file such as "
        f"'{tmp_path}/config.json'"
    ) in capsys.readouterr().err
    args = ["train", "sinusoid", "--steps", "5", "--out", str(tmp_path / "afile")]
    assert main(args) == 1
    assert f"run directory '{tmp_path}/afile' is a file; choose a directory" in (
        capsys.readouterr().err
    )


def test_resuming_a_finished_run_says_so_and_succeeds(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "sinusoid", "--steps", "20", "--steps-per-call", "10", "--out", str(out)]
    assert main([*args, "--no-plots", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0
    assert capsys.readouterr().out == (
        f"metajax: the run in {out} has already finished; nothing to resume\n"
    )
