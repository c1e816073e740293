"""The built-in MLP: the tutorial's architecture and initialisation, and the MSE loss."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax

from metajax import MLP, mlp, mse_loss


def test_tutorial_architecture():
    model = mlp(jax.random.key(0))
    assert [w.shape for w in model.weights] == [(1, 40), (40, 40), (40, 1)]
    assert [b.shape for b in model.biases] == [(40,), (40,), (1,)]
    params, static = eqx.partition(model, eqx.is_inexact_array)
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == 40 + 40 + 1600 + 40 + 40 + 1
    # The activation is static: every leaf is a trainable array.
    assert jax.tree.leaves(static) == []


def test_forward_pass_is_dense_relu_dense_relu_dense():
    model = mlp(jax.random.key(1))
    x = jnp.linspace(-5, 5, 7)[:, None]
    (w0, w1, w2), (b0, b1, b2) = model.weights, model.biases
    expected = np.maximum(np.maximum(x @ w0 + b0, 0) @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(model)(x), expected, rtol=1e-5, atol=1e-6)


def test_initialisation_has_stax_statistics():
    # stax.Dense: truncated-normal Glorot weights (variance 2 / (fan_in + fan_out)), biases
    # normal with standard deviation 0.01. Compare the standard deviations over many draws.
    keys = jax.random.split(jax.random.key(2), 200)
    models = [mlp(key) for key in keys[:100]]
    init, _ = stax.Dense(40)
    stax_weights = np.stack([init(key, (-1, 40))[1][0] for key in keys[100:]])
    ours = np.stack([np.asarray(model.weights[1]) for model in models])
    expected_std = math.sqrt(2 / (40 + 40))
    assert abs(ours.std() - expected_std) < 0.01 * expected_std
    assert abs(stax_weights.std() - expected_std) < 0.01 * expected_std
    # Truncated at two standard deviations of the underlying normal, whose standard deviation is
    # expected_std / 0.87962566 (the correction for truncation that jax and stax apply).
    bound = 2 * expected_std / 0.87962566
    assert np.abs(ours).max() <= bound and np.abs(stax_weights).max() <= bound
    assert np.abs(ours).max() > 0.95 * bound
    biases = np.stack([np.asarray(model.biases[1]) for model in models])
    assert abs(biases.std() - 0.01) < 0.0005


def test_custom_sizes_and_activation():
    model = mlp(jax.random.key(3), sizes=(3, 5, 2), activation=jnp.tanh)
    assert isinstance(model, MLP)
    assert model(jnp.ones((4, 3))).shape == (4, 2)
    with pytest.raises(
        ValueError, match=r"`sizes` must be a list of at least 2 integers >= 1, got \(3,\)"
    ):
        mlp(jax.random.key(3), sizes=(3,))
    with pytest.raises(ValueError, match=r"got \(1, 0, 1\)"):
        mlp(jax.random.key(3), sizes=(1, 0, 1))


def test_mse_loss():
    def model(x):
        return 2.0 * x

    x = jnp.array([[1.0], [2.0], [3.0]])
    y = jnp.array([[2.0], [5.0], [3.0]])
    # Errors 0, -1, 3: mean of squares 10 / 3.
    np.testing.assert_allclose(mse_loss(model, (x, y)), 10 / 3, rtol=1e-6)
