"""The pretrained baseline: multi-task regression on all examples, fine-tuned like MAML."""

import jax
import jax.numpy as jnp
import numpy as np

from metajax import SinusoidDistribution, maml, pretrain


def linear_loss(params, batch):
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def test_meta_loss_is_the_loss_on_support_and_query_together_and_adapt_is_sgd():
    with jax.enable_x64(True):
        params = {"w": jnp.array([[0.3]]), "b": jnp.array([-0.2])}
        tasks = SinusoidDistribution().sample_tasks(jax.random.key(0), 3, 4, 6)
        learner = pretrain(linear_loss, inner_lr=0.05, inner_steps=2)

        def all_examples_loss(params):
            per_task = [
                linear_loss(
                    params,
                    tuple(
                        jnp.concatenate([s[i], q[i]])
                        for s, q in zip(tasks.support, tasks.query, strict=True)
                    ),
                )
                for i in range(3)
            ]
            return sum(per_task) / 3

        loss, grads = learner.meta_grad(params, tasks)
        expected, expected_grads = jax.value_and_grad(all_examples_loss)(params)
        np.testing.assert_allclose(loss, expected, rtol=1e-12)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), grads, expected_grads
        )
        # Fine-tuning is exactly MAML's inner loop.
        support = jax.tree.map(lambda leaf: leaf[0], tasks.support)
        fine_tuned = learner.adapt(params, support)
        jax.tree.map(
            np.testing.assert_array_equal,
            fine_tuned,
            maml(linear_loss, inner_lr=0.05, inner_steps=2).adapt(params, support),
        )
        # The meta-gradient does not depend on the inner loop's step size.
        other = pretrain(linear_loss, inner_lr=0.5).meta_grad(params, tasks)
        jax.tree.map(np.testing.assert_array_equal, grads, other[1])
