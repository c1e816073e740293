"""iMAML: the implicit meta-gradient against the closed form of the proximal solution, its
memory against the number of inner steps, and a run."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metajax
from metajax import OptionError, SinusoidDistribution, Task, imaml

# A quadratic support loss 0.5 (phi - a)' A (phi - a) and query loss 0.5 |phi - b|^2.
A = np.array([[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 0.6]])


def quadratic_loss_of(hessian):
    """The support loss 0.5 (phi - a)' hessian (phi - a), the query loss 0.5 |phi - b|^2."""

    def loss(phi, batch):
        is_query, target = batch
        residual = phi - target
        return jnp.where(is_query, 0.5 * residual @ residual, 0.5 * residual @ hessian @ residual)

    return loss


quadratic_loss = quadratic_loss_of(A)


def quadratic_task(a, b):
    return Task(support=(jnp.bool_(False), jnp.asarray(a)), query=(jnp.bool_(True), jnp.asarray(b)))


def two_quadratic_tasks():
    return jax.tree.map(
        lambda *leaves: jnp.stack(leaves),
        quadratic_task([1.0, -2.0, 0.5], [0.3, 0.7, -1.0]),
        quadratic_task([0.0, 0.4, 2.0], [-1.0, 0.2, 0.9]),
    )


def proximal_closed_form(hessian, lam, theta, tasks):
    """Each task's phi* = (H + lam I)^-1 (H a + lam theta), and the mean query loss at phi* and
    its meta-gradient lam (H + lam I)^-1 (phi* - b) over the tasks."""
    m = hessian + lam * np.eye(len(theta))
    phis, loss, grad = [], 0.0, np.zeros(len(theta))
    for a, b in zip(tasks.support[1], tasks.query[1], strict=True):
        phi = np.linalg.solve(m, hessian @ a + lam * theta)
        phis.append(phi)
        loss += 0.5 * np.sum((phi - b) ** 2)
        grad += lam * np.linalg.solve(m, phi - b)
    return phis, loss / len(phis), grad / len(phis)


def test_the_implicit_gradient_equals_the_closed_form_of_the_proximal_solution():
    # phi* = argmin 0.5 (phi - a)' A (phi - a) + lam/2 |phi - theta|^2 = (A + lam I)^-1 (A a +
    # lam theta), so d phi*/d theta = lam (A + lam I)^-1 and the meta-gradient of the query loss
    # is lam (A + lam I)^-1 (phi* - b).
    lam = 1.5
    with jax.enable_x64(True):
        tasks = two_quadratic_tasks()
        theta = jnp.array([0.2, 0.1, -0.4])
        # Gradient descent with step 0.2 contracts by at most 0.7 a step: 300 steps converge.
        learner = imaml(quadratic_loss, inner_lr=0.2, inner_steps=300, prox_lambda=lam, cg_steps=3)
        loss, grad = learner.meta_grad(theta, tasks)
        phis, expected_loss, expected_grad = proximal_closed_form(A, lam, theta, tasks)
        for a, phi in zip(tasks.support[1], phis, strict=True):
            np.testing.assert_allclose(learner.adapt(theta, (False, a)), phi, rtol=1e-12)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-10)
        # One conjugate-gradient iteration is not enough for three dimensions.
        _, rough = imaml(
            quadratic_loss, inner_lr=0.2, inner_steps=300, prox_lambda=lam, cg_steps=1
        ).meta_grad(theta, tasks)
        assert np.max(np.abs(rough - expected_grad)) > 1e-3


def test_lbfgs_reaches_the_proximal_minimum_where_gradient_descent_diverges():
    # Curvature up to 110: gradient descent of step 0.2 is stable only below 2 / (110 + lam).
    sharp, lam = 50 * A, 1.5
    sharp_loss = quadratic_loss_of(sharp)
    with jax.enable_x64(True):
        tasks = two_quadratic_tasks()
        theta = jnp.array([0.2, 0.1, -0.4])
        settings = dict(inner_lr=0.2, inner_steps=20, prox_lambda=lam, cg_steps=3)
        descent = imaml(sharp_loss, **settings)
        diverged = descent.adapt(theta, (False, tasks.support[1][0]))
        assert np.linalg.norm(diverged) > 1e20, diverged  # each step multiplies by up to 21
        learner = imaml(sharp_loss, **settings, inner_solver="lbfgs")
        loss, grad = learner.meta_grad(theta, tasks)
        phis, expected_loss, expected_grad = proximal_closed_form(sharp, lam, theta, tasks)
        for a, phi in zip(tasks.support[1], phis, strict=True):
            np.testing.assert_allclose(learner.adapt(theta, (False, a)), phi, rtol=1e-10)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-10)
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-8)


def test_the_official_codes_variant_damps_the_system_and_pulls_back_once():
    # aravindr93/imaml_dev: K plain steps phi_K = a + (I - lr A)^K (theta - a), then one step on
    # the proximal term, phi = phi_K - lr lam (phi_K - theta); the meta-gradient solves
    # ((1 + D) I + A / (lam + E)) x = phi - b. Adaptation at test time is the plain steps alone.
    lr, steps, lam, damping, lam_damping = 0.1, 16, 2.0, 1.0, 10.0
    with jax.enable_x64(True):
        a, b = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.7, -1.0])
        tasks = jax.tree.map(lambda leaf: leaf[None], quadratic_task(a, b))
        theta = jnp.array([0.2, 0.1, -0.4])
        learner = imaml(
            quadratic_loss, inner_lr=lr, inner_steps=steps, prox_lambda=lam, cg_steps=3,
            cg_damping=damping, lambda_damping=lam_damping, proximal_inner_loop=False,
        )  # fmt: skip
        plain = a + np.linalg.matrix_power(np.eye(3) - lr * A, steps) @ (theta - a)
        np.testing.assert_allclose(learner.adapt(theta, (False, a)), plain, rtol=1e-12)
        phi = plain - lr * lam * (plain - theta)
        loss, grad = learner.meta_grad(theta, tasks)
        np.testing.assert_allclose(loss, 0.5 * np.sum((phi - b) ** 2), rtol=1e-12)
        system = (1 + damping) * np.eye(3) + A / (lam + lam_damping)
        np.testing.assert_allclose(grad, np.linalg.solve(system, phi - b), rtol=1e-10)


def test_on_a_network_the_gradient_is_the_dense_solve_at_the_adapted_parameters():
    # What iMAML computes, (I + H / lambda)^-1 grad L_query(phi), with H the support loss's
    # Hessian at phi, against a dense solve with the full Hessian.
    from jax.flatten_util import ravel_pytree

    lam = 10.0
    with jax.enable_x64(True):
        model = metajax.mlp(jax.random.key(0), (1, 16, 16, 1))
        params, static = eqx.partition(model, eqx.is_inexact_array)
        params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), params)

        def loss(params, batch):
            return metajax.mse_loss(eqx.combine(params, static), batch)

        tasks = SinusoidDistribution().sample_tasks(jax.random.key(1), 1, 10, 10)
        tasks = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), tasks)
        support, query = (jax.tree.map(lambda leaf: leaf[0], part) for part in tasks)
        learner = imaml(loss, inner_lr=0.02, inner_steps=20, prox_lambda=lam, cg_steps=400)
        adapted, unravel = ravel_pytree(jax.jit(learner.adapt)(params, support))
        hessian = jax.jit(jax.hessian(lambda flat: loss(unravel(flat), support)))(adapted)
        query_grad = ravel_pytree(jax.grad(loss)(unravel(adapted), query))[0]
        expected = np.linalg.solve(np.eye(len(adapted)) + hessian / lam, query_grad)
        _, grads = jax.jit(learner.meta_grad)(params, tasks)
        np.testing.assert_allclose(ravel_pytree(grads)[0], expected, rtol=1e-8, atol=1e-12)


def test_memory_does_not_grow_with_inner_steps():
    model = metajax.mlp(jax.random.key(0), (1, 40, 40, 1))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(params, batch):
        return metajax.mse_loss(eqx.combine(params, static), batch)

    tasks = SinusoidDistribution((0.1, 5.0)).sample_tasks(jax.random.key(1), 25, 10, 10)

    def temporary_bytes(learner):
        compiled = jax.jit(learner.meta_grad).lower(params, tasks).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    implicit = [temporary_bytes(imaml(loss, inner_lr=0.01, inner_steps=s)) for s in (10, 100)]
    unrolled = [
        temporary_bytes(metajax.maml(loss, inner_lr=0.01, inner_steps=s)) for s in (10, 100)
    ]
    assert implicit[1] <= 1.1 * implicit[0], implicit
    assert unrolled[1] > 5 * implicit[1], (unrolled, implicit)


def test_bad_settings_are_refused():
    with pytest.raises(OptionError, match="`prox_lambda` must be"):
        imaml(quadratic_loss, inner_lr=0.1, prox_lambda=0.0)
    with pytest.raises(OptionError, match="`cg_steps` must be an integer >= 1, got 0"):
        imaml(quadratic_loss, inner_lr=0.1, cg_steps=0)
    with pytest.raises(
        OptionError, match=r"`inner_solver` must be one of \('gd', 'lbfgs'\), got 'newton'"
    ):
        imaml(quadratic_loss, inner_lr=0.1, inner_solver="newton")


def test_an_imaml_run_learns_to_adapt(tmp_path, run_metajax):
    # On lines, whose small network keeps the proximal inner problem well conditioned. (On the
    # sinusoids, meta-training sharpens the support loss until plain gradient descent no
    # longer reaches the proximal minimum that the implicit gradient assumes, and diverges: see
    # the README.)
    out = tmp_path / "imaml"
    result = run_metajax(
        "train", "lines", "--algorithm", "imaml", "--meta-steps", "1000", "--inner-lr", "0.05",
        "--inner-steps", "10", "--prox-lambda", "1", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = metajax.load(out)
    assert (run.config.algorithm.inner_steps, run.config.algorithm.prox_lambda) == (10, 1.0)
    report = metajax.evaluate(
        out, metajax.EvalSettings(num_tasks=100, shots=(8,), adapt_steps=10), write=False
    )
    mse = report["results"][0]["mse_mean"]
    assert mse[10] < 0.1 * mse[0], mse


def test_an_imaml_run_with_lbfgs_learns_and_adapts_without_a_step_size(tmp_path, run_metajax):
    out = tmp_path / "imaml-lbfgs"
    result = run_metajax(
        "train", "lines", "--algorithm", "imaml", "--inner-solver", "lbfgs", "--meta-steps",
        "300", "--inner-steps", "5", "--prox-lambda", "1", "--out", str(out), "--no-progress",
        "--no-plots",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    algorithm = metajax.load(out).config.algorithm
    assert algorithm.inner_solver == "lbfgs" and not algorithm.adapts_with_inner_lr()
    assert metajax.IMAML().adapts_with_inner_lr()
    report = metajax.evaluate(
        out, metajax.EvalSettings(num_tasks=100, shots=(8,), adapt_steps=5), write=False
    )
    line = report["results"][0]
    assert "inner_lr" not in line  # no step size to report, set or tune
    assert line["mse_mean"][5] < 0.1 * line["mse_mean"][0], line["mse_mean"]
    with pytest.raises(metajax.EvaluationError, match="has no inner_lr to set or tune"):
        metajax.evaluate(out, metajax.EvalSettings(inner_lr=0.1), write=False)
