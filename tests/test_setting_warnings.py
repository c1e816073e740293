"""Warnings of settings known to make a run fail: each rule fires where it should and stays
silent where it should, and the curvature it measures is the Hessian's largest eigenvalue."""

import warnings

import equinox as eqx
import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import metajax
from metajax import SettingWarning
from metajax.config.family import family_loss
from metajax.config.streams import INIT_STREAM, stream_key
from metajax.runs.setup import support_curvature, warn_of_settings

SINUSOID = metajax.presets("sinusoid")["finn2017"]


def warned(config):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_of_settings(config)
    assert all(issubclass(w.category, SettingWarning) for w in caught)
    return [str(w.message) for w in caught]


def test_the_curvature_is_the_largest_eigenvalue_of_the_dense_hessian():
    family = SINUSOID.task
    key = stream_key(SINUSOID.training.seed, INIT_STREAM)
    params, static = eqx.partition(family.build_model(key), eqx.is_inexact_array)
    task = jax.tree.map(lambda leaf: leaf[0], family.task_sampler(1)(key))
    flat, unravel = ravel_pytree(params)
    hessian = jax.hessian(lambda f: family_loss(family, static)(unravel(f), task.support)[0])(flat)
    eigenvalues = np.linalg.eigvalsh(np.asarray(hessian, dtype=np.float64))
    np.testing.assert_allclose(support_curvature(SINUSOID), np.abs(eigenvalues).max(), rtol=1e-4)


def test_reptile_with_one_inner_step_is_warned_of():
    reptile = SINUSOID.with_algorithm("reptile")
    assert warned(reptile.replace(inner_steps=1)) == [
        "Reptile with `inner_steps` 1 moves the meta-parameters along the support loss's "
        "gradient: plain multi-task training, which does not learn to adapt (Nichol et al., "
        "2018, section 5); set `inner_steps` to 5 or more, as the paper does"
    ]
    assert warned(reptile.replace(inner_steps=5)) == []


def test_imaml_above_its_inner_loops_stability_bound_is_warned_of():
    # The curvature at the finn2017 preset's start is 18.5: with lambda 1 the inner loop is
    # stable below 2 / 19.5 = 0.10.
    curvature = support_curvature(SINUSOID)
    imaml = SINUSOID.with_algorithm("imaml").replace(prox_lambda=1.0, inner_steps=10)
    bound = 2 / (curvature + 1)
    assert warned(imaml.replace(inner_lr=0.4)) == [
        "iMAML's inner loop cannot converge at `inner_lr` 0.4: the support loss plus the proximal "
        f"term curves by up to {curvature + 1:.3g} on the first training task, so gradient "
        f"descent is stable only below {bound:.3g}, and the implicit meta-gradient is that of a "
        "minimum the inner loop never reaches; lower `inner_lr`, solve it by L-BFGS "
        "(`inner_solver` lbfgs), or damp the system as the paper's code does: `cg_damping` 1 "
        "and `lambda_damping` 10 (as omniglot's paper-*-imaml presets do)"
    ]
    assert warned(imaml.replace(inner_lr=0.9 * bound)) == []
    # L-BFGS's line search has no step size to exceed (inner_lr is then unused).
    assert warned(imaml.replace(inner_lr=0.4, inner_solver="lbfgs")) == []
    # A damped system is an approximation by design; the paper's code takes 0.1 with it.
    assert warned(imaml.replace(inner_lr=0.4, cg_damping=1.0, lambda_damping=10.0)) == []


def test_meta_sgd_tested_with_more_steps_than_it_learned_is_warned_of():
    # The sinusoid presets test with 10 steps, which Meta-SGD keeps from them.
    meta_sgd = SINUSOID.with_algorithm("meta-sgd").replace(inner_steps=1)
    assert warned(meta_sgd) == [
        "tested with 10 steps (`test_steps`), the step sizes were learned for 1 inner step; more "
        "steps repeat them and may diverge"
    ]
    assert warned(meta_sgd.replace(test_steps=1)) == []
    assert warned(meta_sgd.replace(test_steps=None)) == []


def test_the_command_line_shows_the_warning_as_its_own_line(tmp_path, run_metajax):
    result = run_metajax(
        "train", "sinusoid", "--algorithm", "reptile", "--inner-steps", "1", "--meta-steps",
        "20", "--steps-per-call", "10", "--log-every", "10", "--checkpoint-every", "20",
        "--no-plots", "--no-progress", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        "metajax: warning: Reptile with --inner-steps 1 moves the meta-parameters"
    ), result.stderr
    assert (tmp_path / "run" / "summary.json").exists()


@pytest.mark.parametrize("family", ["sinusoid", "images", "omniglot"])
def test_no_preset_is_warned_of(family):
    for name, config in metajax.presets(family).items():
        assert warned(config) == [], name
