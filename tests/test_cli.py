"""The ``metajax`` command line."""

import argparse
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

import metajax
from metajax.cli import console, main
from metajax.cli.flags import train_config
from metajax.cli.parser import build_parser
from metajax.config import registry
from metajax.options import declared

# The registered names, metajax's own and the tests' (fakes.py), as messages list them.
FAMILIES, ALGORITHMS = sorted(registry.families()), sorted(registry.algorithms())


def test_train_writes_a_run_directory_with_both_figures(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(
        [
            "train",
            "sinusoid",
            "--meta-steps",
            "200",
            "--steps-per-call",
            "100",
            "--log-every",
            "50",
            "--shots",
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
    assert (config["family"], config["preset"], config["algorithm"]) == (
        "sinusoid",
        "tutorial",
        "maml",
    )
    assert config["training"]["meta_steps"] == 200 and config["training"]["seed"] == 3
    assert (config["task"]["shots"], config["hparams"]["inner_steps"]) == (10, 2)
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
    return train_config(build_parser().parse_args(["train", "sinusoid", *args]))


def test_every_option_reaches_the_config():
    config = parse_config(
        "--preset",
        "finn2017",
        "--algorithm",
        "maml",
        "--first-order",
        "--remat",
        "--inner-optimizer",
        "momentum",
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
        "--micro-batches",
        "2",
        "--shots",
        "5",
        "--query-shots",
        "15",
        "--inner-lr",
        "0.05",
        "--inner-steps",
        "3",
        "--test-steps",
        "4",
        "--meta-optimizer",
        "sgd",
        "--meta-lr",
        "0.002",
        "--meta-lr-schedule",
        "linear",
        "--meta-lr-end",
        "0.0002",
        "--adam-eps",
        "1e-6",
        "--meta-steps",
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
        "--validation-tasks",
        "30",
    )
    assert config.to_dict() | {"metajax_version": None} == {
        "config_format": 2,
        "metajax_version": None,
        "family": "sinusoid",
        "preset": "finn2017",
        "task": {
            "amplitude_range": [1.0, 2.0],
            "phase_range": [0.0, 1.0],
            "x_range": [-3.0, 3.0],
            "shots": 5,
            "query_shots": 15,
            "hidden_sizes": [16, 8],
        },
        "algorithm": "maml",
        "hparams": {
            "inner_lr": 0.05,
            "inner_steps": 3,
            "test_steps": 4,
            "first_order": True,
            "remat": True,
            "inner_optimizer": "momentum",
        },
        "training": {
            "meta_steps": 123,
            "meta_batch_size": 8,
            "micro_batches": 2,
            "meta_optimizer": "sgd",
            "meta_lr": 0.002,
            "meta_lr_schedule": "linear",
            "meta_lr_end": 0.0002,
            "meta_lr_halve_every": None,
            "adam_eps": 1e-6,
            "seed": 9,
            "log_every": 7,
            "steps_per_call": 11,
            "checkpoint_every": 50,
            "keep_checkpoints": 2,
            "validation_tasks": 30,
        },
    }
    halving = parse_config("--meta-lr-schedule", "halving", "--meta-lr-halve-every", "7")
    assert (halving.training.meta_lr_schedule, halving.training.meta_lr_halve_every) == (
        "halving",
        7,
    )
    # Options not given come from the preset.
    assert parse_config("--preset", "finn2017").training.meta_batch_size == 25
    assert parse_config() == metajax.presets("sinusoid")["tutorial"]
    # Another algorithm keeps the preset's values of the settings they share.
    pretrain = parse_config("--preset", "finn2017", "--algorithm", "pretrain")
    assert pretrain.algorithm == metajax.Pretrain(inner_lr=0.01, inner_steps=1)
    assert parse_config("--first-order", "--no-first-order").algorithm.first_order is False


def test_help_documents_every_option(run_metajax):
    result = run_metajax("train", "sinusoid", "--help")
    assert result.returncode == 0
    for flag in (
        "--meta-batch-size",
        "--shots",
        "--query-shots",
        "--inner-lr",
        "--inner-steps",
        "--meta-steps",
        "--first-order",
        "--preset",
        "--seed",
        "--out",
        "--meta-lr",
        "--meta-optimizer {adam,sgd}",
        "--meta-lr-schedule {constant,cosine,linear,halving}",
        "--meta-lr-halve-every N",
        "--meta-lr-end LR",
        "--adam-eps EPS",
        "--amplitude-range",
        "--overwrite",
        "--tensorboard",
    ):
        assert flag in result.stdout
    text = " ".join(result.stdout.split())
    assert (
        "meta-steps (outer-loop updates) (default: 20000 with tutorial, 70000 with finn2017, "
        "70000 with finn2017-code, 70000 with finn2017-maml++, 70000 with finn2017-imaml)" in text
    )
    # A flag two algorithms declare shows each one's help, and whose it is.
    assert (
        "maml: first-order MAML: no gradients through the inner-loop gradients; anil: no "
        "gradients through the inner-loop gradients; meta-sgd: no gradients through the "
        "inner-loop gradients (the step sizes still learn); protomaml: no gradients through "
        "the inner-loop gradients (the prototypes keep theirs) (default: off; maml, anil, "
        "meta-sgd, protomaml only)" in text
    )
    # Every registered family is a command of its own, with its own settings.
    result = run_metajax("train", "--help")
    text = " ".join(result.stdout.split())
    usage = f"usage: metajax train {{{'|'.join(registry.families())}}} [OPTIONS]"
    assert result.returncode == 0 and usage in text
    assert "sinusoid Sinusoid regression (Finn et al., 2017) lines Line regression" in text
    result = run_metajax("train", "lines", "--help")
    assert "--slope-range LOW HIGH" in result.stdout and "--amplitude-range" not in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--meta-steps", "-5"],
            "argument --meta-steps: must be an integer in [1, 2147483647], got -5",
        ),
        (["--shots", "0"], "argument --shots: must be an integer in [1, 2147483647], got 0"),
        (["--preset", "imagenet"], "argument --preset: invalid choice: 'imagenet'"),
        (["--inner-lr", "abc"], "argument --inner-lr: invalid float value: 'abc'"),
        (["--inner-lr", "-1"], "argument --inner-lr: must be a finite number > 0, got -1.0"),
        (
            ["--meta-lr-end", "1e-5"],
            "argument --meta-lr-end: must be left unset unless the meta step size follows a "
            "schedule to an end (meta_lr_schedule cosine or linear), got 1e-05",
        ),
        (["--amplitude-range", "2", "1"], "argument --amplitude-range: must be a pair"),
        (
            ["--algorithm", "pretrain", "--first-order"],
            "argument --first-order: is not a setting of task family 'sinusoid', algorithm "
            "'pretrain' or the training settings",
        ),
        (
            ["--seed", "4294967296"],
            "argument --seed: must be an integer in [0, 4294967295], got 4294967296",
        ),
        (
            ["--hidden-sizes", "40", "99999999999"],
            "argument --hidden-sizes: must be a list of at least 1 integers in [1, 2147483647]",
        ),
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


def test_an_existing_run_is_refused_without_overwrite(tmp_path, run_metajax):
    (tmp_path / "config.json").write_text("{}")
    result = run_metajax("train", "sinusoid", "--meta-steps", "10", "--out", str(tmp_path))
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
    assert "argument --adapt-steps: must be an integer in [1, 50], got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plot", str(tmp_path), "--adapt-steps", "99999999999"])
    assert "argument --adapt-steps: must be an integer in [1, 50], got 99999999999" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            [],
            f"metajax train: error: choose a task family ({', '.join(registry.families())}), "
            "--config FILE or --resume RUN_DIR",
        ),
        (
            ["--resume", "run", "--out", "elsewhere"],
            "argument --resume: continues a run with its saved config and directory; drop --out",
        ),
        (
            ["--resume", "run", "sinusoid"],
            "argument --resume: continues a run with its saved config and directory; drop FAMILY "
            "sinusoid",
        ),
        (
            ["--config", "c.json", "sinusoid", "--meta-steps", "5"],
            "argument --config: the config file holds every setting; drop FAMILY sinusoid and "
            "its options",
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
            '{"family": "sinusoid", "learning_rate": 1}',
            "metajax: error: '{path}' is not a usable config: unknown config keys: learning_rate",
        ),
        (
            '{"family": "sinusoid", "task": {"shots": 5, "k_query": 1}}',
            "metajax: error: '{path}' is not a usable config: unknown config keys in task: k_query",
        ),
        (
            '{"family": "sinusoid", "task": {"shots": 0}}',
            "metajax: error: '{path}' is not a usable config: `shots` must be an integer in "
            "[1, 2147483647], got 0",
        ),
        (
            '{"family": "cifar"}',
            "metajax: error: '{path}' is not a usable config: `family` must be one of "
            f"{FAMILIES}, got 'cifar'",
        ),
        (
            '{"training": {"seed": 1}}',
            "metajax: error: '{path}' is not a usable config: a config must name its task "
            f'family: "family": one of {FAMILIES}',
        ),
        (
            '{"family": "sinusoid", "preset": "imagenet"}',
            "metajax: error: '{path}' is not a usable config: `preset` must be one of "
            "['finn2017', 'finn2017-code', 'finn2017-imaml', 'finn2017-maml++', 'tutorial'], "
            "got 'imagenet'",
        ),
        (
            '{"family": "sinusoid", "algorithm": "leo"}',
            "metajax: error: '{path}' is not a usable config: `algorithm` must be one of "
            f"{ALGORITHMS}, got 'leo'",
        ),
        (
            '{"config_format": true}',
            "metajax: error: '{path}' is not a usable config: it was written by metajax ? in "
            "config format True; this metajax",
        ),
        (
            '{"family": "sinusoid", "hparams": {"inner_lr": 1' + "0" * 400 + "}}",
            "metajax: error: '{path}' is not a usable config: `inner_lr` must be a finite number "
            "> 0, got 1000",
        ),
        (
            '{"config_format": 7, "metajax_version": "3.0"}',
            "metajax: error: '{path}' is not a usable config: it was written by metajax 3.0 in "
            "config format 7; this metajax",
        ),
        (
            '{"task": "sinusoid", "k_shot": 0}',
            "metajax: error: '{path}' is not a usable config: `shots` must be an integer in "
            "[1, 2147483647], got 0",
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
    args = ["train", "sinusoid", "--inner-lr", "1e30", "--meta-steps", "200", "--out", str(out)]
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
    write_config(tmp_path / "config.json", family="cifar")
    assert main(["train", "--resume", str(tmp_path)]) == 1
    assert (
        f"metajax: error: '{tmp_path}/config.json' is not a usable config: `family` must be one "
        f"of {FAMILIES}, got 'cifar'"
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
    args = ["train", "sinusoid", "--meta-steps", "5", "--out", str(tmp_path / "afile")]
    assert main(args) == 1
    assert f"run directory '{tmp_path}/afile' is a file; choose a directory" in (
        capsys.readouterr().err
    )
    # Checked before the data is read, which may take minutes for a large image set.
    args[-1] = str(tmp_path / "afile" / "run")
    assert main(args) == 1
    assert capsys.readouterr().err == (
        f"metajax: error: '{tmp_path}/afile/run' cannot be created: '{tmp_path}/afile' is a "
        "file, not a folder\n"
    )
    if sys.platform == "linux":  # a folder that takes no new folders, whoever runs the test
        args[-1] = "/proc/run"
        assert main(args) == 1
        assert capsys.readouterr().err.startswith(
            "metajax: error: '/proc/run' cannot be created in '/proc': "
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_run_directory_not_valid_utf8_is_printed_escaped(tmp_path, child_env):
    # A strict UTF-8 console raised UnicodeEncodeError here, once the run had finished.
    out = tmp_path / os.fsdecode(b"r\xff")
    command = ["train", "sinusoid", "--meta-steps", "10", "--steps-per-call", "10"]
    result = subprocess.run(
        [sys.executable, "-m", "metajax", *command, "--no-plots", "--out", str(out)],
        capture_output=True,
        env={**child_env, "PYTHONIOENCODING": "utf-8"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().splitlines()[0] == console.NOTE
    assert result.stdout.decode().endswith(f"; run directory {tmp_path}/r\\xff\n")
    assert (out / "summary.json").is_file()


def test_resuming_a_finished_run_says_so_and_succeeds(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "sinusoid", "--meta-steps", "20", "--steps-per-call", "10", "--out", str(out)]
    assert main([*args, "--no-plots", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0
    assert capsys.readouterr().out == (
        f"metajax: the run in {out} has already finished; nothing to resume\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "sinusoid", "--k-shot", "5", "--steps", "10"],
            "metajax train sinusoid: error: unrecognized arguments: --k-shot 5 --steps 10 "
            "(--k-shot is now --shots; --steps is now --meta-steps)",
        ),
        (
            ["eval", "run", "--steps", "3", "--query-points=k"],
            "metajax eval: error: unrecognized arguments: --steps 3 --query-points=k (--steps is "
            "now --adapt-steps; --query-points is now --query-shots)",
        ),
    ],
)
def test_flags_renamed_since_version_0_1_are_named_with_their_new_names(args, message, capsys):
    with pytest.raises(SystemExit) as exit:
        main(args)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_families_and_algorithms_come_from_the_registry():
    # The families the command offers are the registered ones, the test family included.
    assert {"sinusoid", "lines"} <= set(registry.families())
    assert {"maml", "pretrain", "learned-lr"} <= set(registry.algorithms())


def test_the_names_no_setting_may_take_are_the_command_lines_own_options():
    """The registry refuses settings named like an option of ``metajax train`` (``--out``,
    ``--preset``, ...); its list is exactly the options the parser has that are not settings."""

    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return actions[0].choices

    parser = build_parser()
    train = subcommands(parser)["train"]
    settings = {*declared(metajax.TrainSettings)}
    for family in registry.families().values():
        settings |= set(declared(family))
    for algorithm in registry.algorithms().values():
        settings |= set(declared(algorithm))
    own = {
        action.dest
        for command in (parser, train, *subcommands(train).values())
        for action in command._actions
        if not isinstance(action, argparse._SubParsersAction)
    }
    assert own - settings == registry.COMMAND_LINE_NAMES
