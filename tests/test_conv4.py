"""The Conv4 classifier: shapes, the fast convolution's exactness, and batch normalisation."""

import dataclasses
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import Task, conv2d, conv4, cross_entropy, maml


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", [(3, 28, 28, 1), (2, 7, 7, 5), (2, 5, 9, 3), (1, 2, 2, 4)])
def test_the_sliced_convolution_equals_lax_conv(stride, shape):
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), shape, jnp.float64)
        kernel = jax.random.normal(jax.random.key(1), (3, 3, shape[-1], 6), jnp.float64)
        expected = conv2d(x, kernel, stride, method="lax")
        assert expected.shape == (shape[0], -(-shape[1] // stride), -(-shape[2] // stride), 6)
        np.testing.assert_allclose(
            conv2d(x, kernel, stride, method="slices"), expected, rtol=1e-12, atol=1e-12
        )
    with pytest.raises(ValueError, match="`method` must be 'auto', 'slices' or 'lax', got 'fft'"):
        conv2d(x, kernel, stride, method="fft")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pooling", "size", "channels", "features"),
    [("stride", 28, 1, 64), ("max", 28, 1, 64), ("max", 84, 3, 64 * 5 * 5), ("stride", 84, 3, 64)],
)
def test_conv4_shapes(pooling, size, channels, features):
    model = conv4(jax.random.key(0), 7, image_size=size, channels=channels, pooling=pooling)
    assert [k.shape for k in model.kernels] == [(3, 3, channels, 64)] + [(3, 3, 64, 64)] * 3
    assert model.head_weight.shape == (features, 7) and model.head_bias.shape == (7,)
    x = jax.random.uniform(jax.random.key(1), (10, size, size, channels))
    assert eqx.filter_jit(lambda model, x: model(x))(model, x).shape == (10, 7)


def test_conv4_refuses_bad_sizes():
    with pytest.raises(ValueError, match=re.escape("`image_size` must be at least 16 for max")):
        conv4(jax.random.key(0), 5, image_size=12, pooling="max")
    with pytest.raises(ValueError, match="`pooling` must be 'stride' or 'max', got 'avg'"):
        conv4(jax.random.key(0), 5, pooling="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("`ways` must be an integer >= 1, got 0")):
        conv4(jax.random.key(0), 0)


def tasks(key, num_tasks=3, ways=3, shots=2, size=12):
    keys = jax.random.split(key, 2)
    labels = jnp.tile(jnp.repeat(jnp.arange(ways), shots), (num_tasks, 1))

    def images(k):
        return jax.random.uniform(k, (num_tasks, ways * shots, size, size, 1), jnp.float64)

    return Task((images(keys[0]), labels), (images(keys[1]), labels))


@eqx.filter_jit
def meta_gradient(model, task_batch, inner_steps=2):
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss_fn(p, batch):
        loss, accuracy = cross_entropy(eqx.combine(p, static)(batch[0]), batch[1])
        return loss, {"accuracy": accuracy}

    learner = maml(loss_fn, inner_lr=0.4, inner_steps=inner_steps, has_aux=True)
    return learner.meta_grad(params, task_batch)


@pytest.mark.parametrize(
    "pooling",
    [
        "stride",
        pytest.param(
            "max",
            marks=[
                pytest.mark.slow,  # the check that an XLA bug is still there
                pytest.mark.xfail(
                    strict=True,
                    reason=(
                        "XLA's CPU backend: lax.conv under vmap inside lax.scan (MAML's inner "
                        "loop) with max-pooling and batch norm gives other numbers than the same "
                        "code without the scan, which agree with the sliced convolution"
                    ),
                ),
            ],
        ),
    ],
)
def test_second_order_meta_gradients_are_the_same_with_either_convolution(pooling):
    with jax.enable_x64(True):
        size = 16 if pooling == "max" else 8  # the smallest that four poolings leave pixels of
        model = conv4(jax.random.key(2), 3, image_size=size, filters=8, pooling=pooling)
        model = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_array(a) else a, model)
        task_batch = tasks(jax.random.key(3), num_tasks=2, size=size)
        (loss, aux), grads = meta_gradient(dataclasses.replace(model, conv="slices"), task_batch)
        (lax_loss, lax_aux), lax_grads = meta_gradient(
            dataclasses.replace(model, conv="lax"), task_batch
        )
        np.testing.assert_allclose(loss, lax_loss, rtol=1e-12)
        assert aux["accuracy"] == lax_aux["accuracy"]
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(lax_grads), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        # The second-order terms are there: first-order MAML's gradient differs.
        assert not np.allclose(grads.kernels[0], meta_gradient_first_order(model, task_batch))


@eqx.filter_jit
def meta_gradient_first_order(model, task_batch):
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss_fn(p, batch):
        return cross_entropy(eqx.combine(p, static)(batch[0]), batch[1])[0]

    learner = maml(loss_fn, inner_lr=0.4, inner_steps=2, first_order=True)
    return learner.meta_grad(params, task_batch)[1].kernels[0]


def test_each_task_is_normalised_alone_in_a_vmapped_batch():
    with jax.enable_x64(True):
        model = conv4(jax.random.key(4), 3, image_size=12, filters=8)
        model = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_array(a) else a, model)
        params, static = eqx.partition(model, eqx.is_inexact_array)

        def loss_fn(p, batch):
            return cross_entropy(eqx.combine(p, static)(batch[0]), batch[1])

        learner = maml(loss_fn, inner_lr=0.4, inner_steps=1, has_aux=True)
        task_batch = tasks(jax.random.key(5))
        task_losses = jax.jit(jax.vmap(learner.task_loss, in_axes=(None, 0)))
        per_task = task_losses(params, task_batch)
        (x, y), query = task_batch
        moved = Task((x.at[1].set(x[1] * 50.0 + 3.0), y), query)
        moved_per_task = task_losses(params, moved)
        np.testing.assert_array_equal(
            np.asarray(per_task[0])[[0, 2]], np.asarray(moved_per_task[0])[[0, 2]]
        )
        assert per_task[0][1] != moved_per_task[0][1]
        # A batch's statistics are its own: a constant added to every pixel changes nothing
        # after the first convolution's normalisation (the convolution has no bias).
        images = x[0]
        np.testing.assert_allclose(model(images + 0.0), model(images * 1.0), rtol=0)
