"""Optax optimizers in the inner loop: optax.sgd is the built-in step bit for bit, momentum
against its closed form, Adam against finite differences."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax
from metajax import OptionError, SinusoidDistribution, Task, maml
from metajax.algorithms.maml import INNER_OPTIMIZERS

EPS = 1e-6


def mlp_loss_and_params(dtype=jnp.float32):
    model = metajax.mlp(jax.random.key(0), (1, 16, 16, 1))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    params = jax.tree.map(lambda leaf: leaf.astype(dtype), params)

    def loss(params, batch):
        return metajax.mse_loss(eqx.combine(params, static), batch)

    return loss, params


def sinusoid_tasks(dtype=jnp.float32, num_tasks=4):
    tasks = SinusoidDistribution((0.1, 5.0)).sample_tasks(jax.random.key(1), num_tasks, 10, 10)
    return jax.tree.map(lambda leaf: leaf.astype(dtype), tasks)


def assert_same_bits(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("remat", [False, True])
def test_optax_sgd_equals_the_built_in_inner_loop_bit_for_bit(first_order, remat):
    loss, params = mlp_loss_and_params()
    tasks = sinusoid_tasks()
    settings = dict(inner_lr=0.01, inner_steps=3, first_order=first_order, remat=remat)
    built_in = jax.jit(maml(loss, **settings).meta_grad)(params, tasks)
    with_optax = jax.jit(maml(loss, inner_optimizer=optax.sgd, **settings).meta_grad)(params, tasks)
    assert_same_bits(built_in, with_optax)
    adapted = jax.jit(maml(loss, **settings).adapt)(params, tasks.support)
    adapted_optax = jax.jit(maml(loss, inner_optimizer=optax.sgd, **settings).adapt)(
        params, tasks.support
    )
    assert_same_bits(adapted, adapted_optax)


def test_momentum_meta_gradient_equals_its_closed_form():
    # On 0.5 (theta - a)^2 with momentum mu: v1 = g0, theta1 = theta0 - lr v1,
    # v2 = mu v1 + g1, theta2 = theta1 - lr v2; so d theta2 / d theta0 =
    # (1 - lr) - lr (mu + 1 - lr), and the query loss 0.5 (theta2 - b)^2 has gradient
    # (theta2 - b) times that.
    def loss(theta, target):
        return 0.5 * (theta - target) ** 2

    lr, mu, theta0, a, b = 0.3, 0.9, 1.5, -0.5, 2.0
    with jax.enable_x64(True):
        learner = maml(
            loss,
            inner_lr=lr,
            inner_steps=2,
            inner_optimizer=functools.partial(optax.sgd, momentum=mu),
        )
        task = Task(support=jnp.float64(a), query=jnp.float64(b))
        theta1 = theta0 - lr * (theta0 - a)
        theta2 = theta1 - lr * (mu * (theta0 - a) + theta1 - a)
        assert float(learner.adapt(jnp.float64(theta0), task.support)) == pytest.approx(
            theta2, rel=1e-14
        )
        expected = (theta2 - b) * ((1 - lr) - lr * (mu + 1 - lr))
        tasks = jax.tree.map(lambda leaf: leaf[None], task)
        _, grad = learner.meta_grad(jnp.float64(theta0), tasks)
        assert float(grad) == pytest.approx(expected, rel=1e-12)


def test_adam_meta_gradient_equals_finite_differences():
    with jax.enable_x64(True):
        loss, params = mlp_loss_and_params(jnp.float64)
        tasks = sinusoid_tasks(jnp.float64)
        # optax.adam's default eps_root=0 makes the meta-gradient NaN where an inner gradient
        # is exactly zero (a dead ReLU unit): the derivative of sqrt at 0.
        plain = maml(loss, inner_lr=0.01, inner_steps=3, inner_optimizer=optax.adam)
        assert not all(
            jnp.isfinite(g).all()
            for g in jax.tree.leaves(jax.jit(plain.meta_grad)(params, tasks)[1])
        )
        adam = INNER_OPTIMIZERS["adam"]  # the command line's: eps_root=1e-12
        learner = maml(loss, inner_lr=0.01, inner_steps=3, inner_optimizer=adam)
        _, grads = jax.jit(learner.meta_grad)(params, tasks)
        meta_loss = jax.jit(learner.meta_loss)
        # Along random directions: (L(p + e d) - L(p - e d)) / 2e = <grad, d>.
        for seed in range(3):
            keys = jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params)))
            direction = jax.tree.unflatten(
                jax.tree.structure(params),
                [
                    jax.random.normal(k, leaf.shape, jnp.float64)
                    for k, leaf in zip(keys, jax.tree.leaves(params), strict=True)
                ],
            )
            moved = [
                jax.tree.map(lambda p, d, s=step: p + s * d, params, direction)
                for step in (EPS, -EPS)
            ]
            up, down = (float(meta_loss(m, tasks)) for m in moved)
            numeric = (up - down) / (2 * EPS)
            analytic = sum(
                float(jnp.vdot(g, d))
                for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction), strict=True)
            )
            assert analytic == pytest.approx(numeric, rel=1e-6)
        # Adam is not gradient descent: its first step moves every weight by about lr.
        first_step = learner.adapt(params, jax.tree.map(lambda x: x[0], tasks.support), 1)
        moves = jnp.abs(first_step.weights[0] - params.weights[0])
        np.testing.assert_allclose(moves[moves > 0], 0.01, rtol=1e-3)


def test_an_inner_optimizer_that_is_not_a_factory_is_refused():
    loss, _ = mlp_loss_and_params()
    with pytest.raises(OptionError, match="`inner_optimizer` must be a function of the step"):
        maml(loss, inner_lr=0.01, inner_optimizer=optax.sgd(0.01))
    with pytest.raises(OptionError, match="it returned str"):
        maml(loss, inner_lr=0.01, inner_optimizer=lambda lr: "sgd")


def test_the_command_line_trains_with_adam_in_the_inner_loop(tmp_path):
    config = metajax.presets("sinusoid")["tutorial"].replace(
        inner_optimizer="adam", meta_steps=200, inner_steps=2
    )
    assert config.algorithm.adaptation_text() == "adam, inner lr 0.1"
    summary = metajax.train(config, tmp_path / "run", progress=False, plots=False)
    assert np.isfinite(summary["final_meta_loss"])
    with pytest.raises(OptionError, match="`inner_optimizer` must be one of"):
        config.replace(inner_optimizer="rmsprop")
