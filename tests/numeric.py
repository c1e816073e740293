"""Small float64 problems and finite differences that the algorithms' tests share."""

import jax
import jax.numpy as jnp
import numpy as np

from metajax import SinusoidDistribution


def linear_loss(params, batch):
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def float64_tasks(num_tasks=3, shots=5):
    tasks = SinusoidDistribution().sample_tasks(jax.random.key(1), num_tasks, shots, 7)
    return jax.tree.map(lambda leaf: leaf.astype(jnp.float64), tasks)


def central_differences(f, tree, *args, eps=1e-6):
    """The gradient of the scalar ``f(tree, *args)`` in ``tree``, entry by entry."""
    leaves, structure = jax.tree.flatten(tree)
    gradient = []
    for i, leaf in enumerate(leaves):
        entries = np.zeros(leaf.shape)
        for index in np.ndindex(leaf.shape):
            moved = [list(leaves), list(leaves)]
            moved[0][i] = leaf.at[index].add(eps)
            moved[1][i] = leaf.at[index].add(-eps)
            up, down = (float(f(jax.tree.unflatten(structure, m), *args)) for m in moved)
            entries[index] = (up - down) / (2 * eps)
        gradient.append(entries)
    return jax.tree.unflatten(structure, gradient)
