"""A task family and an algorithm from outside metajax, through the whole command line.

The family ``lines`` and the algorithm ``learned-lr`` are defined in fakes.py only; the
``metajax`` command finds them as a plugin (an entry point of an installed distribution), with
no edit to any metajax module. test_interruption.py stops and resumes their runs with real
signals; here they are trained, evaluated and plotted, and the registry's rules are checked.
"""

import dataclasses
import json
import subprocess
import sys
from typing import ClassVar

import fakes
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import metajax
from metajax import options
from metajax.config import registry
from metajax.evaluation.harness import evaluate_run


@pytest.fixture(scope="module")
def run(tmp_path_factory, child_env):
    out = tmp_path_factory.mktemp("extension") / "run"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "metajax", "train", "lines", "--algorithm", "learned-lr"),
            *("--preset", "steep", "--initial-lr", "0.02", "--width", "12", "--no-progress"),
            *("--out", str(out)),
        ],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return out, result


def test_training_a_plugin_family_writes_a_complete_run(run):
    out, result = run
    assert result.stdout.startswith("metajax: final meta-loss ")
    config = json.loads((out / "config.json").read_text())
    assert (config["family"], config["preset"], config["algorithm"]) == (
        "lines",
        "steep",
        "learned-lr",
    )
    assert config["task"] == {"slope_range": [2.0, 3.0], "shots": 5, "query_shots": 5, "width": 12}
    # The preset's MAML inner_steps (2) carries over to learned-lr, which has the same setting.
    assert config["hparams"] == {"initial_lr": 0.02, "inner_steps": 2}
    assert config["training"]["meta_steps"] == 100
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [30, 60, 90, 100]
    assert all(set(r) == {"step", "meta_loss", "hit_rate"} for r in records)
    for name in ("adaptation.png", "meta_loss.png"):
        with Image.open(out / name) as image:
            assert image.size == (900, 540)
    # The learned step size is saved with the run and loaded with it.
    loaded = metajax.load(out)
    assert float(loaded.meta_params["log_lr"]) != pytest.approx(-3.912, abs=1e-3)  # log 0.02


def test_evaluating_a_plugin_family_uses_its_metrics(run, run_metajax, tmp_path):
    out, _ = run
    result = run_metajax("eval", str(out), "--num-tasks", "40", "--adapt-steps", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The family's primary metric (hit rate, higher is better) and its default K of 2 and 8;
    # learned-lr has no inner_lr, so no step size column value.
    assert lines[0] == (
        f"learned step size ({out}): hit rate over 40 held-out tasks, mean +- 95% CI [median]"
    )
    assert [line.split()[:2] for line in lines[2:4]] == [["2", "-"], ["8", "-"]]
    report = json.loads((out / "eval.json").read_text())
    assert report["family"] == "lines" and report["algorithm"] == "learned-lr"
    (two, eight) = report["results"]
    assert (two["shots"], two["query_shots"], eight["shots"]) == (2, 20, 8)
    assert "inner_lr" not in two
    for result in (two, eight):
        for metric in ("mse", "hit_rate"):
            for statistic in ("mean", "ci95", "median"):
                assert len(result[f"{metric}_{statistic}"]) == 4
        assert all(0 <= value <= 1 for value in result["hit_rate_mean"])
    assert (out / "eval.png").exists()
    # An algorithm without a step size cannot have one set.
    result = run_metajax("eval", str(out), "--inner-lr", "0.1", "--num-tasks", "10")
    assert result.returncode == 1
    assert (
        "metajax: error: algorithm 'learned-lr' has no inner_lr to set or tune; evaluate it "
        "with its own adaptation"
    ) in result.stderr


def test_plotting_a_plugin_family_draws_its_figure(run, run_metajax):
    out, _ = run
    (out / "adaptation.png").unlink()
    result = run_metajax("plot", str(out), "--adapt-steps", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"metajax: wrote {out}/adaptation.png",
        f"metajax: wrote {out}/meta_loss.png",
    ]
    with Image.open(out / "adaptation.png") as image:
        assert image.size == (900, 540)


def test_a_plugin_that_fails_to_load_is_named(tmp_path, child_env):
    broken = tmp_path / "broken-1.0.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 1.0\n")
    (broken / "entry_points.txt").write_text("[metajax.plugins]\nbroken = no_such_module\n")
    env = {**child_env, "PYTHONPATH": f"{tmp_path}:{child_env['PYTHONPATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "metajax", "train", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert (
        "the metajax plugin 'broken' (no_such_module) failed to load: No module named "
        "'no_such_module'"
    ) in result.stderr


@dataclasses.dataclass(frozen=True)
class Clashing(metajax.Algorithm):
    name: ClassVar[str] = "clashing"
    description: ClassVar[str] = "declares a training setting"
    seed: int = options.integer(0, "a seed of its own")

    def make(self, loss_fn, *, has_aux=False, head=None):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class OtherKind(metajax.Algorithm):
    name: ClassVar[str] = "other-kind"
    description: ClassVar[str] = "declares inner_lr as an integer"
    inner_lr: int = options.integer(1, "not a step size")

    def make(self, loss_fn, *, has_aux=False, head=None):
        raise NotImplementedError


def test_the_registry_refuses_clashes_and_names_taken():
    with pytest.raises(
        ValueError,
        match=r"algorithm 'clashing' declares seed, which the training settings own; rename",
    ):
        metajax.register_algorithm(Clashing)
    with pytest.raises(
        ValueError,
        match=r"algorithm 'other-kind' declares inner_lr as Integer, but algorithm 'maml' "
        r"declares it as Number",
    ):
        metajax.register_algorithm(OtherKind)
    with pytest.raises(ValueError, match=r"a task family named 'sinusoid' is already registered"):
        metajax.register_family(type("Impostor", (metajax.SinusoidConfig,), {}))
    assert "clashing" not in registry.algorithms() and "other-kind" not in registry.algorithms()
    # Registering a family's own class again (a module imported twice) changes nothing.
    assert metajax.register_family(metajax.SinusoidConfig) is metajax.SinusoidConfig
    with pytest.raises(metajax.OptionError, match=r"`algorithm` must be one of \[.*\], got 'x'"):
        registry.algorithm("x")


def test_a_family_that_is_not_registered_cannot_start_a_run(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Unregistered(metajax.SinusoidConfig):
        pass

    config = metajax.presets("sinusoid")["tutorial"]
    config = dataclasses.replace(config, task=Unregistered())
    with pytest.raises(
        ValueError,
        match=r"the task family Unregistered is not registered as 'sinusoid'; decorate it with "
        r"metajax.register_family so that the run can be resumed and loaded",
    ):
        metajax.train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_settings_that_would_clash_or_vanish_are_refused_at_registration():
    @dataclasses.dataclass(frozen=True)
    class SharesAHyperParameter(metajax.SinusoidConfig):
        name: ClassVar[str] = "shares"
        inner_steps: int = options.integer(1, "a name maml has")

    with pytest.raises(
        ValueError,
        match=r"task family 'shares' declares inner_steps, which algorithm 'maml' declares too; "
        r"rename it",
    ):
        metajax.register_family(SharesAHyperParameter)

    @dataclasses.dataclass(frozen=True)
    class TakesAFlag(metajax.SinusoidConfig):
        name: ClassVar[str] = "takes"
        out: int = options.integer(1, "a name the command line has")

    with pytest.raises(ValueError, match=r"declares out, which the command line uses; rename it"):
        metajax.register_family(TakesAFlag)

    @dataclasses.dataclass(frozen=True)
    class Undeclared(metajax.SinusoidConfig):
        name: ClassVar[str] = "undeclared"
        noise: float = 0.05  # would never reach config.json

    with pytest.raises(
        ValueError,
        match=r"task family 'undeclared': declare noise with metajax.options \(integer, number, "
        r"flag, \.\.\.\), so that configs and the command line know them",
    ):
        metajax.register_family(Undeclared)
    assert not {"shares", "takes", "undeclared"} & set(registry.families())


@dataclasses.dataclass(frozen=True)
class PlainStepMAML(metajax.Algorithm):
    """MAML whose step size is declared without traceable: evaluation cannot vmap over it."""

    name: ClassVar[str] = "plain-step-maml"
    description: ClassVar[str] = "MAML with a step size that cannot be traced (tests only)"
    tunes_inner_lr: ClassVar[bool] = True
    inner_lr: float = options.number(0.1, "a step size that must be a number")
    inner_steps: int = options.integer(1, "inner steps", minimum=0)

    def make(self, loss_fn, *, has_aux=False, head=None):
        return metajax.maml(
            loss_fn, inner_lr=self.inner_lr, inner_steps=self.inner_steps, has_aux=has_aux
        )


def test_a_step_size_that_cannot_be_traced_is_evaluated_and_tuned_one_value_at_a_time(tmp_path):
    metajax.register_algorithm(PlainStepMAML)
    config = fakes.line_config(meta_steps=30, steps_per_call=30).with_algorithm("plain-step-maml")
    metajax.train(config, tmp_path / "run", progress=False, plots=False)
    plain = metajax.load(tmp_path / "run")
    # The same run seen as MAML, whose step size is traced and vmapped over.
    traced = plain._replace(config=plain.config.with_algorithm("maml"))
    # One K: each value of the grid compiles a program of its own for the plain step size.
    settings = metajax.EvalSettings(num_tasks=20, shots=(8,), adapt_steps=2, validation_tasks=10)
    ours = evaluate_run(plain, settings)  # tuned on validation tasks
    theirs = evaluate_run(traced, dataclasses.replace(settings, tune_inner_lr=True))
    for a, b in zip(ours, theirs, strict=True):
        assert a["inner_lr"] == b["inner_lr"] and a["inner_lr_from"] == "validation"
        np.testing.assert_allclose(a["mse_mean"], b["mse_mean"], rtol=1e-5)
        np.testing.assert_allclose(a["validation"]["hit_rate"], b["validation"]["hit_rate"])


def test_a_concrete_jax_array_as_a_setting_is_kept_as_a_number(tmp_path):
    config = fakes.line_config(meta_steps=10, steps_per_call=10).replace(inner_lr=jnp.float32(0.25))
    assert type(config.algorithm.inner_lr) is float and config.algorithm.inner_lr == 0.25
    metajax.train(config, tmp_path / "run", progress=False, plots=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["hparams"]["inner_lr"] == 0.25
