"""Small float64 problems and finite differences that the algorithms' tests share, and the
comparison of two runs that should agree."""

import jax
import jax.numpy as jnp
import numpy as np

import metajax
from metajax import SinusoidDistribution
from metajax.runs import metrics, run_dir


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


def assert_runs_agree(reference, other, tolerance=1e-5):
    """The finished runs in the directories ``reference`` and ``other`` hold the same
    meta-parameters and log the same meta-losses at the same steps, to ``tolerance``; returns
    those steps."""
    params = [metajax.load(run).meta_params for run in (reference, other)]
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance), *params
    )
    records = [metrics.read(run / run_dir.METRICS) for run in (reference, other)]
    steps = [[record["step"] for record in run] for run in records]
    assert steps[1] == steps[0]
    losses = [[record["meta_loss"] for record in run] for run in records]
    np.testing.assert_allclose(losses[1], losses[0], rtol=tolerance)
    return steps[0]
