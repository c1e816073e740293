"""Meta-SGD: gradients against finite differences and MAML, and learned step sizes in a run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numeric import central_differences, float64_tasks, linear_loss

import metajax
from metajax import OptionError, SinusoidDistribution, maml, meta_sgd


def test_the_meta_gradient_equals_finite_differences_step_sizes_included():
    with jax.enable_x64(True):
        tasks = float64_tasks()
        params = {"w": jnp.array([[0.4]]), "b": jnp.array([0.2])}
        # Step sizes that differ per parameter, so that each one's gradient is its own.
        inner_lrs = {"w": jnp.array([[0.07]]), "b": jnp.array([0.13])}
        meta_params = {"params": params, "inner_lrs": inner_lrs}
        for inner_steps, first_order in ((1, False), (3, False), (1, True)):
            learner = meta_sgd(
                linear_loss, initial_lr=0.1, inner_steps=inner_steps, first_order=first_order
            )
            _, grads = learner.meta_grad(meta_params, tasks)
            numeric = central_differences(learner.meta_loss, meta_params, tasks)
            # First order is exact for the step sizes after one step, not for the parameters.
            checked = ("inner_lrs",) if first_order else ("inner_lrs", "params")
            for part in checked:
                jax.tree.map(
                    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                    grads[part],
                    numeric[part],
                )
            if first_order:
                assert not np.allclose(grads["params"]["w"], numeric["params"]["w"], rtol=1e-3)


def test_equal_step_sizes_make_meta_sgd_maml():
    with jax.enable_x64(True):
        tasks = float64_tasks()
        params = {"w": jnp.array([[0.4]]), "b": jnp.array([0.2])}
        learner = meta_sgd(linear_loss, initial_lr=0.05, inner_steps=2)
        meta_params = learner.init(params)
        loss, grads = learner.meta_grad(meta_params, tasks)
        maml_loss, maml_grads = maml(linear_loss, inner_lr=0.05, inner_steps=2).meta_grad(
            params, tasks
        )
        np.testing.assert_allclose(loss, maml_loss, rtol=1e-14)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), grads["params"], maml_grads
        )
        # The step sizes' gradient is the sum of its parameters' ones: MAML's d/d(inner_lr).
        d_lr = jax.grad(
            lambda lr: maml(linear_loss, inner_lr=lr, inner_steps=2).meta_loss(params, tasks)
        )(jnp.float64(0.05))
        total = sum(leaf.sum() for leaf in jax.tree.leaves(grads["inner_lrs"]))
        np.testing.assert_allclose(total, d_lr, rtol=1e-12)


def test_bad_settings_are_refused():
    with pytest.raises(OptionError, match="initial_lr"):
        meta_sgd(linear_loss, initial_lr=0.0)
    with pytest.raises(OptionError, match="inner_steps"):
        metajax.MetaSGD(inner_steps=-1)


def test_a_run_learns_its_step_sizes_and_adapts_with_them(tmp_path, run_metajax):
    out = tmp_path / "meta-sgd"
    result = run_metajax(
        "train", "sinusoid", "--preset", "finn2017", "--algorithm", "meta-sgd",
        "--meta-steps", "3000", "--out", str(out), "--no-progress", "--no-plots",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = metajax.load(out)
    assert run.config.algorithm == metajax.MetaSGD(initial_lr=0.01, inner_steps=1, test_steps=10)
    inner_lrs = np.concatenate([np.ravel(x) for x in jax.tree.leaves(run.meta_params["inner_lrs"])])
    # Learned: the step sizes left their common start and differ from parameter to parameter.
    assert np.ptp(inner_lrs) > 1e-3 and not np.allclose(inner_lrs, 0.01, atol=1e-3)
    # Adaptation uses them: one step is params - inner_lrs * grad.
    task = SinusoidDistribution().sample_tasks(jax.random.key(5), 1, 5, 5)
    support = jax.tree.map(lambda leaf: leaf[0], task.support)
    adapted = run.adapt(support)
    grads = jax.grad(lambda p: run.loss_fn(p, support)[0])(run.params)
    expected = jax.tree.map(
        lambda p, lr, g: p - lr * g, run.params, run.meta_params["inner_lrs"], grads
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), adapted,
                 expected)  # fmt: skip
    # And evaluation too: its 1-step MSE is the loss after that step, well below the unadapted.
    report = metajax.evaluate(
        out, metajax.EvalSettings(num_tasks=100, shots=(5,), adapt_steps=1), write=False
    )
    (result,) = report["results"]
    mse = result["mse_mean"]
    assert mse[1] < 0.5 * mse[0], mse
    # Evaluated with more steps than its step sizes were learned for, it says so.
    assert report["note"] == ""
    longer = run_metajax("eval", str(out), "--num-tasks", "20", "--adapt-steps", "3")
    assert longer.returncode == 0, longer.stderr
    assert (
        "     note: the step sizes were learned for 1 inner step; more steps repeat them and "
        "may diverge" in longer.stdout
    )
