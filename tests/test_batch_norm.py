"""The loss contract with batch normalisation and metrics: ``loss_fn(params, batch) -> (loss,
aux)`` with ``has_aux=True``.

The model below normalises its hidden layer with the statistics of the batch it is given, as
the original MAML does in both loops; the loss returns the accuracy from the same forward pass.
An algorithm hands ``loss_fn`` one task's support or query set at a time, so each task's
statistics are its own: nothing leaks from one task to another in a vmapped task batch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

import metajax
from metajax import Task, maml

WAYS, FEATURES, HIDDEN = 2, 3, 8


def init(key):
    first, second = jax.random.split(key)
    return {
        "w1": jax.random.normal(first, (FEATURES, HIDDEN)),
        "scale": jnp.ones(HIDDEN),  # batch norm's learned scale and shift
        "shift": jnp.zeros(HIDDEN),
        "w2": jax.random.normal(second, (HIDDEN, WAYS)) / np.sqrt(HIDDEN),
        "b2": jnp.zeros(WAYS),
    }


def loss_fn(params, batch):
    """Cross-entropy of a one-hidden-layer classifier with batch normalisation, and accuracy."""
    x, labels = batch
    hidden = x @ params["w1"]
    mean, var = hidden.mean(axis=0), hidden.var(axis=0)  # this batch's statistics
    hidden = (hidden - mean) / jnp.sqrt(var + 1e-5) * params["scale"] + params["shift"]
    logits = jax.nn.relu(hidden) @ params["w2"] + params["b2"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == labels)}


def sample_tasks(key, num_tasks=4, shots=5):
    """Two-way tasks: two Gaussian blobs whose centres each task draws."""
    centre_key, support_key, query_key = jax.random.split(key, 3)
    centres = jax.random.normal(centre_key, (num_tasks, WAYS, FEATURES)) * 2.0
    labels = jnp.tile(jnp.repeat(jnp.arange(WAYS), shots), (num_tasks, 1))

    def points(key):
        noise = jax.random.normal(key, (num_tasks, WAYS * shots, FEATURES))
        return jnp.take_along_axis(centres, labels[..., None], axis=1) + noise, labels

    return Task(points(support_key), points(query_key))


def one(tasks, i):
    return jax.tree.map(lambda leaf: leaf[i], tasks)


def test_each_task_is_normalised_with_its_own_statistics_and_nothing_leaks():
    with jax.enable_x64(True):
        params = init(jax.random.key(0))
        tasks = sample_tasks(jax.random.key(1), num_tasks=3)
        learner = maml(loss_fn, inner_lr=0.5, inner_steps=2, has_aux=True)
        task_losses = jax.jit(jax.vmap(learner.task_loss, in_axes=(None, 0)))
        per_task = task_losses(params, tasks)
        # Task 2's inputs scaled and shifted far away: tasks 0 and 1 do not move by a bit.
        (x, y), query = tasks
        moved = Task((x.at[2].set(x[2] * 100.0 + 50.0), y), query)
        moved_per_task = task_losses(params, moved)
        for values, moved_values in zip(
            jax.tree.leaves(per_task), jax.tree.leaves(moved_per_task), strict=True
        ):
            np.testing.assert_array_equal(values[:2], moved_values[:2])
        assert per_task[0][2] != moved_per_task[0][2]  # task 2's own loss did move
        # The vmapped meta-gradient is the mean of the tasks' gradients, one at a time.
        (loss, aux), grads = jax.jit(learner.meta_grad)(params, tasks)
        task_grad = jax.jit(jax.grad(lambda p, t: learner.task_loss(p, t)[0]))
        one_by_one = [task_grad(params, one(tasks, i)) for i in range(3)]
        mean = jax.tree.map(lambda *g: sum(g) / 3, *one_by_one)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), grads, mean)
        np.testing.assert_allclose(loss, per_task[0].mean(), rtol=1e-12)
        np.testing.assert_allclose(aux["accuracy"], per_task[1]["accuracy"].mean(), rtol=1e-12)


def test_the_statistics_are_the_batchs_own():
    # Batch normalisation removes the batch's mean: shifting every input of a batch by the same
    # vector changes nothing. With fixed statistics, the shift would change the logits.
    with jax.enable_x64(True):
        params = init(jax.random.key(2))
        support = one(sample_tasks(jax.random.key(3)), 0).support
        x, labels = support
        shifted = (x + jnp.array([3.0, -1.0, 7.0]), labels)
        loss, aux = loss_fn(params, support)
        np.testing.assert_allclose(loss_fn(params, shifted)[0], loss, rtol=1e-9)
        # The accuracy comes from the same forward pass as the loss.
        hidden = x @ params["w1"]
        hidden = (hidden - hidden.mean(0)) / jnp.sqrt(hidden.var(0) + 1e-5)
        logits = jax.nn.relu(hidden * params["scale"] + params["shift"]) @ params["w2"]
        expected = jnp.mean(jnp.argmax(logits + params["b2"], axis=-1) == labels)
        assert float(aux["accuracy"]) == float(expected)


def test_meta_training_reports_the_aux_metrics_and_learns_to_adapt():
    learner = maml(loss_fn, inner_lr=0.5, inner_steps=1, has_aux=True)
    optimizer = optax.adam(1e-2)
    state = metajax.init_train_state(learner, optimizer, init(jax.random.key(4)), jax.random.key(5))
    result = metajax.meta_train(
        learner, optimizer, sample_tasks, state, meta_steps=300, steps_per_call=100, progress=False
    )
    assert set(result.aux) == {"accuracy"} and result.aux["accuracy"].shape == (300,)
    # Query accuracy after one step, over the first and the last 50 meta-steps.
    first, last = result.aux["accuracy"][:50].mean(), result.aux["accuracy"][-50:].mean()
    assert last > first and last > 0.85, (first, last)
    # And on held-out tasks, before and after adaptation, from one call.
    curves = metajax.adaptation_curve(
        learner,
        lambda params, batch: loss_fn(params, batch)[1]["accuracy"],
        result.state.meta_params,
        sample_tasks(jax.random.key(6), num_tasks=200),
        1,
    )
    before, after = np.asarray(curves).mean(axis=0)
    assert after > before + 0.1, (before, after)
