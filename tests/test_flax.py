"""A Flax NNX model meta-learns through ``nnx.split`` and ``nnx.merge``, as the guide shows: its
meta-gradient is that of the same network written as a dict of arrays, and ``nnx.update`` puts
the meta-learned parameters back into the module."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import metajax


class TinyMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(1, 8, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def test_a_flax_model_has_the_meta_gradient_of_the_same_network_as_a_dict():
    with jax.enable_x64(True):
        model = TinyMLP(nnx.Rngs(0))
        graphdef, params = nnx.split(model, nnx.Param)
        params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), params)

        def flax_loss(params, batch):
            x, y = batch
            return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

        as_dict = {
            "w1": params["hidden"]["kernel"][...],
            "b1": params["hidden"]["bias"][...],
            "w2": params["out"]["kernel"][...],
            "b2": params["out"]["bias"][...],
        }

        def dict_loss(p, batch):
            x, y = batch
            return jnp.mean(((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]) - y) ** 2)

        tasks = metajax.SinusoidDistribution().sample_tasks(jax.random.key(1), 4, 5, 5)
        tasks = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), tasks)
        settings = {"inner_lr": 0.05, "inner_steps": 2}
        flax_learner = metajax.maml(flax_loss, **settings)
        dict_learner = metajax.maml(dict_loss, **settings)
        flax_loss_value, flax_grads = jax.jit(flax_learner.meta_grad)(params, tasks)
        dict_loss_value, dict_grads = jax.jit(dict_learner.meta_grad)(as_dict, tasks)
        np.testing.assert_allclose(flax_loss_value, dict_loss_value, rtol=1e-12)
        pairs = {
            "w1": flax_grads["hidden"]["kernel"][...],
            "b1": flax_grads["hidden"]["bias"][...],
            "w2": flax_grads["out"]["kernel"][...],
            "b2": flax_grads["out"]["bias"][...],
        }
        for name, grad in pairs.items():
            np.testing.assert_allclose(grad, dict_grads[name], rtol=1e-10, atol=1e-14)
        assert max(float(jnp.abs(g).max()) for g in dict_grads.values()) > 1e-3

        # One outer step with optax, then the module holds the new parameters.
        optimizer = optax.sgd(0.1)
        updates, _ = optimizer.update(flax_grads, optimizer.init(params))
        new_params = optax.apply_updates(params, updates)
        nnx.update(model, new_params)
        np.testing.assert_array_equal(
            model.out.bias[...], params["out"]["bias"][...] - 0.1 * pairs["b2"]
        )
