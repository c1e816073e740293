"""The evaluation harness: confidence intervals, held-out tasks, eval.json, the CLI."""

import dataclasses
import json
import math
import re

import jax
import numpy as np
import pytest
from PIL import Image

import metajax
from metajax import OptionError, adaptation_curve, mean_and_ci95
from metajax.config import registry
from metajax.config.streams import TEST_STREAM, VALIDATION_STREAM
from metajax.evaluation.curves import evaluation_tasks
from metajax.evaluation.harness import evaluate, evaluate_run
from metajax.evaluation.reports import format_table
from metajax.evaluation.settings import STEP_SIZE_GRID, EvalSettings, EvaluationError
from metajax.runs import run_dir
from metajax.runs.setup import build

TUTORIAL = metajax.presets("sinusoid")["tutorial"]


def test_confidence_interval_matches_a_hand_computation():
    # Mean 2.5; population standard deviation sqrt(1.25); 1.96 * sqrt(1.25) / sqrt(4).
    mean, half_width = mean_and_ci95([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert half_width == pytest.approx(1.96 * math.sqrt(1.25) / 2, rel=1e-12)
    means, half_widths = mean_and_ci95([[1.0, 10.0], [3.0, 10.0]], axis=0)
    np.testing.assert_allclose(means, [2.0, 10.0])
    np.testing.assert_allclose(half_widths, [1.96 * 1.0 / math.sqrt(2), 0.0])
    with pytest.raises(ValueError, match="a confidence interval needs at least 2 values, got 1"):
        mean_and_ci95([1.0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for algorithm in ("maml", "pretrain"):
        config = TUTORIAL.with_algorithm(algorithm).replace(
            meta_steps=300, steps_per_call=100, log_every=100
        )
        metajax.train(config, root / algorithm, progress=False, plots=False)
    return root / "maml", root / "pretrain"


SMALL = EvalSettings(num_tasks=100, shots=(10, 20), adapt_steps=3, validation_tasks=50)


def test_eval_json_has_the_documented_fields_and_the_plot_is_drawn(runs):
    maml_run, pretrain_run = runs
    report = evaluate(maml_run, SMALL, baseline=pretrain_run)
    assert json.loads((maml_run / "eval.json").read_text()) == report
    with Image.open(maml_run / "eval.png") as image:
        assert image.size == (900, 576)
    assert report["settings"] == {
        "num_tasks": 100,
        "shots": [10, 20],
        "adapt_steps": 3,
        "inner_lr": None,
        "tune_inner_lr": None,
        "query_shots": None,
        "eval_seed": 0,
        "validation_tasks": 50,
        "test_data": None,
        "test_overlap": None,
        "adapt_steps_from": "option",
    }
    assert set(report) == {
        "settings",
        "run",
        "family",
        "algorithm",
        "label",
        "note",
        "results",
        "seconds",
        "baseline",
    }
    assert set(report["baseline"]) == set(report) - {"settings", "baseline"}
    for run, algorithm, label, path in (
        (report, "maml", "MAML", maml_run),
        (report["baseline"], "pretrain", "pretrained", pretrain_run),
    ):
        assert (run["algorithm"], run["label"], run["run"]) == (algorithm, label, str(path))
        assert run["family"] == "sinusoid" and run["seconds"] > 0 and run["note"] == ""
        assert [result["shots"] for result in run["results"]] == [10, 20]
        assert [result["query_shots"] for result in run["results"]] == [100, 100]
        for result in run["results"]:
            for field in ("mse_mean", "mse_ci95", "mse_median", "non_finite"):
                assert len(result[field]) == 4, field
            assert result["non_finite"] == [0, 0, 0, 0]
            assert result["mse_median"][1] < result["mse_median"][0]
    # MAML adapts with the run's step size; the pretrained run's is tuned on validation tasks.
    for result in report["results"]:
        assert (result["inner_lr"], result["inner_lr_from"]) == (0.1, "run")
        assert "validation" not in result
    for result in report["baseline"]["results"]:
        assert result["inner_lr_from"] == "validation"
        assert result["validation"]["grid"] == list(STEP_SIZE_GRID)
        assert len(result["validation"]["mse"]) == len(STEP_SIZE_GRID)
        assert result["inner_lr"] in STEP_SIZE_GRID
        # The chosen step size beats the largest and the smallest of the grid on the test tasks.
        for other in (STEP_SIZE_GRID[0], STEP_SIZE_GRID[-1]):
            if other != result["inner_lr"]:
                settings = dataclasses.replace(SMALL, shots=(result["shots"],), inner_lr=other)
                (fixed,) = evaluate(pretrain_run, settings, write=False)["results"]
                assert result["mse_mean"][3] < fixed["mse_mean"][3]


def test_a_short_run_is_better_after_adaptation_than_before(runs):
    report = evaluate(runs[0], SMALL, write=False)
    for result in report["results"]:
        mean, ci95 = np.array(result["mse_mean"]), np.array(result["mse_ci95"])
        # Separated by more than both confidence intervals together.
        assert mean[1] + ci95[1] < mean[0] - ci95[0], result
    # More support points adapt better.
    assert report["results"][1]["mse_mean"][3] < report["results"][0]["mse_mean"][3]


def test_same_evaluation_seed_same_numbers_bit_for_bit(runs):
    run = metajax.load(runs[0])
    assert run.summary == json.loads((runs[0] / "summary.json").read_text())
    first = evaluate_run(run, SMALL)
    assert evaluate_run(run, SMALL) == first
    other_seed = evaluate_run(run, dataclasses.replace(SMALL, eval_seed=1))
    for ours, theirs in zip(first, other_seed, strict=True):
        assert ours["shots"] == theirs["shots"] and ours["mse_mean"] != theirs["mse_mean"]


def test_results_are_the_adaptation_curves_of_the_evaluation_tasks(runs):
    run = metajax.load(runs[0])
    settings = EvalSettings(num_tasks=50, shots=(4, 8), adapt_steps=2, query_shots="shots")
    results = evaluate_run(run, settings)

    def mse(params, batch):
        return run.loss_fn(params, batch)[0]

    for k, result in zip((4, 8), results, strict=True):
        tasks = evaluation_tasks(run.config.task, settings, k)
        assert tasks.support[0].shape == (50, k, 1) and tasks.query[0].shape == (50, k, 1)
        curve = np.asarray(adaptation_curve(run.learner, mse, run.meta_params, tasks, 2))
        assert curve.shape == (50, 3)
        np.testing.assert_allclose(result["mse_mean"], curve.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(result["mse_median"], np.median(curve, axis=0), rtol=1e-5)
        assert result["non_finite"] == [0, 0, 0] and result["query_shots"] == k


def test_the_tasks_of_one_k_do_not_depend_on_the_other_values_of_k(runs):
    run = metajax.load(runs[0])
    alone = evaluate_run(run, EvalSettings(num_tasks=50, shots=(5,), adapt_steps=1))
    (_, together) = evaluate_run(run, EvalSettings(num_tasks=50, shots=(20, 5), adapt_steps=1))
    assert alone[0] == together
    # Every K sees the same sinusoids and query points.
    settings = EvalSettings(num_tasks=50)
    five, twenty = (evaluation_tasks(run.config.task, settings, k) for k in (5, 20))
    np.testing.assert_array_equal(five.query[1], twenty.query[1])
    assert five.query[0].shape == (50, 100, 1)


def test_evaluation_tasks_are_not_training_tasks(runs):
    # A task is identified by its support inputs: any three of them coincide by chance with
    # probability about (1e-7)^3, while tasks from the same key would share all of them.
    config = metajax.load(runs[0]).config
    setup = build(config)
    training = jax.vmap(setup.sample_tasks)(
        jax.vmap(jax.random.fold_in, in_axes=(None, 0))(setup.train_key, np.arange(300))
    )

    def fingerprints(x):
        return {tuple(row) for row in np.asarray(x)[..., :3, 0].reshape(-1, 3).tolist()}

    train = fingerprints(training.support[0])
    assert len(train) == 300 * 4
    settings = EvalSettings()
    test, validation = (
        fingerprints(evaluation_tasks(config.task, settings, 20, stream).support[0])
        for stream in (TEST_STREAM, VALIDATION_STREAM)
    )
    assert len(test) == 600 and len(validation) == 200
    assert not (test & train) and not (validation & train) and not (test & validation)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(shots=(5, 0)),
            r"`shots` must be a list of at least 1 integers in \[1, 2147483647\], got \(5, 0\)",
        ),
        (dict(shots=()), r"`shots` must be a list of at least 1 integers in \[1, 2147483647\]"),
        (dict(num_tasks=1), r"`num_tasks` must be an integer in \[2, 2147483647\], got 1"),
        (
            dict(num_tasks=99999999999),
            r"`num_tasks` must be an integer in \[2, 2147483647\], got 99999999999",
        ),
        (dict(adapt_steps=-1), r"`adapt_steps` must be an integer in \[0, 2147483647\], got -1"),
        (
            dict(adapt_steps=99999999999),
            r"`adapt_steps` must be an integer in \[0, 2147483647\], got 99999999999",
        ),
        (
            dict(eval_seed=10**20),
            r"`eval_seed` must be an integer in \[0, 4294967295\], got 100000000000000000000",
        ),
        (
            dict(query_shots="all"),
            r"`query_shots` must be an integer in \[1, 2147483647\] or 'shots', got 'all'",
        ),
        (dict(inner_lr=-0.1), r"`inner_lr` must be a finite number > 0, got -0.1"),
        (dict(inner_lr=0.1, tune_inner_lr=True), r"`inner_lr` must be left unset when tuning"),
        (dict(shots=(5, 5)), r"`shots` must be distinct values, got \(5, 5\)"),
        (
            dict(tune_inner_lr=True, adapt_steps=0),
            r"`adapt_steps` must be at least 1 when tuning the step size, got 0",
        ),
    ],
)
def test_bad_settings_are_rejected(kwargs, message):
    with pytest.raises(OptionError, match=message):
        EvalSettings(**kwargs)


def test_missing_or_foreign_runs_give_clear_errors(tmp_path, runs):
    with pytest.raises(run_dir.RunDirError, match=r"run directory '.*nowhere' does not exist"):
        evaluate(tmp_path / "nowhere", SMALL)
    foreign = tmp_path / "cifar"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"family": "cifar", "task": {"ways": 5}}))
    with pytest.raises(
        run_dir.RunDirError,
        match=rf"not a usable config: `family` must be one of "
        rf"{re.escape(str(sorted(registry.families())))}, got 'cifar'",
    ):
        evaluate(foreign, SMALL)
    with pytest.raises(run_dir.RunDirError, match=r"does not exist"):
        evaluate(runs[0], SMALL, baseline=tmp_path / "nowhere", write=False)


def test_settings_are_stored_as_plain_python_values():
    settings = EvalSettings(num_tasks=np.int64(10), query_shots=np.int64(5), tune_inner_lr=np.True_)
    assert json.dumps(settings.to_json())
    assert type(settings.query_shots) is int and type(settings.tune_inner_lr) is bool


def test_a_pretrained_run_adapting_zero_steps_needs_no_step_size(runs):
    run = metajax.load(runs[1])
    (result,) = evaluate_run(run, EvalSettings(num_tasks=10, shots=(5,), adapt_steps=0))
    assert result["inner_lr_from"] == "run" and "validation" not in result


def test_tuning_that_diverges_everywhere_is_an_error(runs):
    run = metajax.load(runs[1])
    steep = run._replace(meta_params=jax.tree.map(lambda leaf: leaf * 1e3, run.meta_params))
    with pytest.raises(
        EvaluationError, match=r"every step size in \[0.001, .*\] diverges on the 5-shot"
    ):
        evaluate_run(steep, EvalSettings(num_tasks=10, shots=(5,), validation_tasks=10))


def test_a_baseline_trained_on_other_tasks_is_refused(runs, tmp_path):
    other = metajax.presets("sinusoid")["finn2017"].replace(meta_steps=10, steps_per_call=10)
    metajax.train(other, tmp_path / "finn", progress=False, plots=False)
    eval_json = runs[0] / "eval.json"
    before = eval_json.read_bytes() if eval_json.exists() else None
    with pytest.raises(EvaluationError, match=r"the baseline '.*finn' was trained on other tasks"):
        evaluate(runs[0], SMALL, baseline=tmp_path / "finn")
    assert (eval_json.read_bytes() if eval_json.exists() else None) == before


def test_cli_prints_a_table_and_writes_the_report(runs, run_metajax, tmp_path):
    maml_run, pretrain_run = runs
    out = tmp_path / "report"
    before = {path.name: path.read_bytes() for path in maml_run.iterdir() if path.is_file()}
    result = run_metajax(
        "eval",
        str(maml_run),
        "--baseline",
        str(pretrain_run),
        "--num-tasks",
        "50",
        "--shots",
        "5",
        "--adapt-steps",
        "5",
        "--validation-tasks",
        "20",
        "--query-shots",
        "shots",
        "--out",
        str(out),
        "--no-plots",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (f"MAML ({maml_run}): MSE over 50 held-out tasks, mean +- 95% CI [median]")
    assert lines[1].split() == ["K", "step", "size", "0", "steps", "1", "step", "5", "steps"]
    report = json.loads((out / "eval.json").read_text())
    assert sorted(path.name for path in out.iterdir()) == ["eval.json"]  # --no-plots
    (maml_5,) = report["results"]
    row = lines[2].split()
    # K, step size, then mean +- ci95 [median] for each step.
    assert row[:2] == ["5", "0.1"] and row[3] == "+-"
    assert float(row[2]) == pytest.approx(maml_5["mse_mean"][0], abs=1e-4)
    assert float(row[4]) == pytest.approx(maml_5["mse_ci95"][0], abs=1e-4)
    assert float(row[5].strip("[]")) == pytest.approx(maml_5["mse_median"][0], abs=1e-4)
    assert "pretrained (" in result.stdout and "* chosen on validation tasks" in result.stdout
    assert lines[-1] == f"metajax: wrote {out}/eval.json"
    assert report["settings"]["query_shots"] == "shots"
    # Another process, the same numbers: bit for bit on CPUs. (On a GPU, seen on an H200,
    # XLA may pick kernels per process that sum in another order.)
    settings = EvalSettings(
        num_tasks=50, shots=(5,), adapt_steps=5, validation_tasks=20, query_shots="shots"
    )
    again = evaluate(maml_run, settings, baseline=pretrain_run, write=False)
    for run, other in ((report, again), (report["baseline"], again["baseline"])):
        if jax.default_backend() == "cpu":
            assert run["results"] == other["results"]
        else:
            for ours, theirs in zip(run["results"], other["results"], strict=True):
                assert ours["inner_lr"] == theirs["inner_lr"]
                np.testing.assert_allclose(ours["mse_mean"], theirs["mse_mean"], rtol=1e-4)
    # With --out, the run directory is left alone.
    assert {path.name: path.read_bytes() for path in maml_run.iterdir() if path.is_file()} == (
        before
    )


def test_cli_help_shows_each_familys_defaults(run_metajax):
    result = run_metajax("eval", "--help")
    text = " ".join(result.stdout.split())
    assert (
        "(default: the task family's: 1 5 for images, 1 5 for omniglot, 5 10 20 for sinusoid, "
        "2 8 for lines)"
    ) in text
    assert (
        "(default: the task family's: 15 for images, 15 for omniglot, 100 for sinusoid, 20 for "
        "lines)"
    ) in text


def test_the_table_names_a_step_size_only_where_steps_are_taken():
    def report(adapt_steps):
        curve = [0.5, 0.75][: adapt_steps + 1]
        result = {"shots": 1, "inner_lr": 0.4, "inner_lr_from": "run", "non_finite": [0, 0]}
        result |= {f"accuracy_{s}": curve for s in ("mean", "ci95", "median")}
        run = {"label": "ProtoNet", "run": "runs/p", "results": [result]}
        settings = {"num_tasks": 600, "adapt_steps": adapt_steps, "adapt_steps_from": "run"}
        return format_table(run, registry.families()["omniglot"], settings).splitlines()

    assert report(0)[2] == "   1          -   0.5000 +- 0.5000 [0.5000]"
    assert report(1)[2] == (
        "   1        0.4   0.5000 +- 0.5000 [0.5000]   0.7500 +- 0.7500 [0.7500]"
    )
