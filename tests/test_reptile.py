"""Reptile: its update against the closed form, its one-step limit, and a run of it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax
from metajax import OptionError, SinusoidDistribution, Task, maml, reptile
from metajax.algorithms.reptile import minibatch_indices


def quadratic(theta, target):
    return 0.5 * jnp.sum((theta - target) ** 2)


def test_the_update_direction_is_theta_minus_phi_in_closed_form():
    # k steps of size a on 0.5 |theta - t|^2 give phi = t + (1 - a)^k (theta - t).
    with jax.enable_x64(True):
        theta = jnp.array([0.5, -1.0, 2.0])
        targets = jnp.array([[1.0, 0.0, 3.0], [-2.0, 4.0, 0.5], [0.3, 0.3, -0.7]])
        queries = jnp.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [-1.0, 0.0, 5.0]])
        tasks = Task(support=targets, query=queries)
        for inner_lr, inner_steps in ((0.1, 1), (0.3, 4), (0.05, 25)):
            shrink = (1 - inner_lr) ** inner_steps
            phis = targets + shrink * (theta - targets)
            learner = reptile(quadratic, inner_lr=inner_lr, inner_steps=inner_steps)
            loss, direction = learner.meta_grad(theta, tasks)
            np.testing.assert_allclose(direction, (theta - phis).mean(0), rtol=1e-12)
            # The loss reported is the query loss after adaptation, as MAML's meta-loss.
            expected = np.mean([quadratic(p, q) for p, q in zip(phis, queries, strict=True)])
            np.testing.assert_allclose(loss, expected, rtol=1e-12)
            np.testing.assert_allclose(learner.meta_loss(theta, tasks), expected, rtol=1e-12)


def test_the_papers_inner_adam_with_beta1_zero_is_adam_written_out():
    # supervised_reptile/models.py:10: Adam with beta1 0, so m = g and the step is
    # lr g / (sqrt(v_hat) + eps), with v the running mean of g^2 and v_hat its bias correction.
    lr, steps, b2, eps = 0.3, 4, 0.999, 1e-8
    with jax.enable_x64(True):
        theta = np.array([0.5, -1.0, 2.0])
        targets = np.array([[1.0, 0.0, 3.0], [-2.0, 4.0, 0.5]])
        tasks = Task(support=jnp.asarray(targets), query=jnp.asarray(targets))
        expected = []
        for target in targets:
            phi, v = theta.copy(), np.zeros(3)
            for t in range(1, steps + 1):
                g = phi - target
                v = b2 * v + (1 - b2) * g**2
                phi = phi - lr * g / (np.sqrt(v / (1 - b2**t)) + eps)
            expected.append(theta - phi)
        config = metajax.Reptile(inner_lr=lr, inner_steps=steps, inner_optimizer="adam")
        _, direction = config.make(quadratic).meta_grad(jnp.asarray(theta), tasks)
        np.testing.assert_allclose(direction, np.mean(expected, 0), rtol=1e-12)


def written_out_adam(phi, target, v, t, lr, steps, b2=0.999, eps=1e-8):
    """``steps`` steps of Adam with beta1 0 on ``quadratic`` from the second moment ``v`` and the
    step count ``t``: the parameters, ``v``, the last gradient (beta1 0's first moment), ``t``."""
    phi = phi.copy()
    for _ in range(steps):
        t += 1
        g = phi - target
        v = b2 * v + (1 - b2) * g**2
        phi = phi - lr * g / (np.sqrt(v / (1 - b2**t)) + eps)
    return phi, v, g, t


def test_a_carried_inner_adam_goes_on_from_batch_to_batch_written_out():
    # supervised_reptile/reptile.py:24-26 keeps Adam's moments from task to task; metajax
    # carries on from a batch the mean of its tasks' final moments, and their step count.
    lr, steps, epsilon = 0.3, 3, 0.5
    with jax.enable_x64(True):
        theta = np.array([0.5, -1.0, 2.0])
        targets = np.array([[1.0, 0.0, 3.0], [-2.0, 4.0, 0.5]])
        tasks = Task(support=jnp.asarray(targets), query=jnp.asarray(targets))
        v, t = np.zeros(3), 0
        for _ in range(2):
            ends = [written_out_adam(theta, target, v, t, lr, steps) for target in targets]
            theta = theta + epsilon * np.mean([phi - theta for phi, *_ in ends], 0)
            v, g, t = (
                np.mean([end[1] for end in ends], 0),
                np.mean([end[2] for end in ends], 0),
                ends[0][3],
            )
        config = metajax.Reptile(
            inner_lr=lr, inner_steps=steps, inner_optimizer="adam", carry_inner_state=True
        )
        learner = config.make(quadratic)
        state = metajax.init_train_state(
            learner, optax.sgd(epsilon), jnp.array([0.5, -1.0, 2.0]), jax.random.key(0)
        )
        state, _ = metajax.train_steps(learner, optax.sgd(epsilon), lambda key: tasks, state, 2)
        adam, _ = state.meta_params["inner_state"]
        np.testing.assert_allclose(state.meta_params["params"], theta, rtol=1e-12)
        np.testing.assert_allclose(adam.nu, v, rtol=1e-12)
        np.testing.assert_allclose(adam.mu, g, rtol=1e-12)
        assert adam.count == 2 * steps and adam.count.dtype == jnp.int32
        # Test-time adaptation starts from the carried state; learner.model_params is theta.
        support = jnp.array([0.3, 0.3, -0.7])
        expected = written_out_adam(theta, np.asarray(support), v, t, lr, 7)[0]
        np.testing.assert_allclose(
            learner.adapt(state.meta_params, support, 7), expected, rtol=1e-12
        )
        trajectory = learner.adapt_trajectory(state.meta_params, support, 7)
        np.testing.assert_array_equal(trajectory[-1], learner.adapt(state.meta_params, support, 7))
        np.testing.assert_array_equal(trajectory[0], learner.model_params(state.meta_params))
        # An outer Adam sees the parameters alone: it keeps no moments of the inner state.
        outer = metajax.init_train_state(learner, optax.adam(1e-3), jnp.zeros(3), jax.random.key(0))
        assert sum(leaf.size for leaf in jax.tree.leaves(outer.opt_state)) == 1 + 2 * 3


def test_inner_mini_batches_step_on_the_support_examples_in_turn_written_out():
    # supervised_reptile/reptile.py:65-66 (--inner-batch): each inner step of meta-training on
    # the next mini-batch; here a support set of two classes of three, laid out class by class,
    # so that the strided order gives each batch of two one example of each class.
    def loss(params, batch):
        x, y = batch
        return jnp.mean((x @ params - y) ** 2)

    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6))
        theta = rng.normal(size=3)
        tasks = Task(support=(jnp.asarray(x), jnp.asarray(y)), query=(jnp.asarray(x), y))
        lr, steps, order = 0.1, 4, [[0, 3], [1, 4], [2, 5], [0, 3]]
        np.testing.assert_array_equal(minibatch_indices(6, 2, 4), order)
        expected = []
        for task_x, task_y in zip(x, y, strict=True):
            phi = theta.copy()
            for batch in order:
                residual = task_x[batch] @ phi - task_y[batch]
                phi = phi - lr * 2 * task_x[batch].T @ residual / len(batch)
            expected.append(theta - phi)
        learner = reptile(loss, inner_lr=lr, inner_steps=steps, inner_batch_size=2)
        _, direction = learner.meta_grad(jnp.asarray(theta), tasks)
        np.testing.assert_allclose(direction, np.mean(expected, 0), rtol=1e-12)
        # Test-time adaptation, and a batch as large as the support set, take all of it.
        whole = reptile(loss, inner_lr=lr, inner_steps=steps)
        support = (jnp.asarray(x[0]), jnp.asarray(y[0]))
        np.testing.assert_array_equal(
            learner.adapt(jnp.asarray(theta), support), whole.adapt(jnp.asarray(theta), support)
        )
        at_size = reptile(loss, inner_lr=lr, inner_steps=steps, inner_batch_size=6)
        np.testing.assert_array_equal(
            at_size.meta_grad(jnp.asarray(theta), tasks)[1],
            whole.meta_grad(jnp.asarray(theta), tasks)[1],
        )


def test_inner_mini_batches_need_the_examples_on_a_shared_first_axis():
    tasks = Task(support=(jnp.zeros((2, 4)), jnp.zeros((2, 3))), query=jnp.zeros((2, 4)))
    learner = reptile(lambda p, b: jnp.sum(p * b[0]), inner_lr=0.1, inner_batch_size=2)
    message = (
        "`inner_batch_size` must be None for a support set whose leaves do not all hold their "
        "examples along a shared first axis (this one's shapes: [(4,), (3,)]), got 2"
    )
    with pytest.raises(OptionError) as error:
        learner.meta_grad(jnp.zeros(4), tasks)
    assert str(error.value) == message
    with pytest.raises(OptionError, match="inner_batch_size"):
        metajax.Reptile(inner_batch_size=0)


def test_one_inner_step_is_the_step_size_times_the_support_gradient():
    def linear_loss(params, batch):
        x, y = batch
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    with jax.enable_x64(True):
        params = {"w": jnp.array([[0.3]]), "b": jnp.array([-0.2])}
        tasks = SinusoidDistribution().sample_tasks(jax.random.key(0), 5, 10, 10)
        tasks = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), tasks)
        _, direction = reptile(linear_loss, inner_lr=0.02, inner_steps=1).meta_grad(params, tasks)

        def mean_support_loss(params):
            return jnp.mean(jax.vmap(linear_loss, (None, 0))(params, tasks.support))

        gradient = jax.grad(mean_support_loss)(params)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, 0.02 * b, rtol=1e-12), direction, gradient
        )


def test_adaptation_is_maml_s_inner_loop_and_sgd_on_the_direction_is_reptile_s_step():
    with jax.enable_x64(True):
        theta = jnp.array([0.5, -1.0])
        tasks = Task(support=jnp.array([[1.0, 0.0], [3.0, 1.0]]), query=jnp.zeros((2, 2)))
        learner = reptile(quadratic, inner_lr=0.2, inner_steps=3)
        support = tasks.support[0]
        np.testing.assert_array_equal(
            learner.adapt(theta, support),
            maml(quadratic, inner_lr=0.2, inner_steps=3).adapt(theta, support),
        )
        epsilon = 0.7
        _, direction = learner.meta_grad(theta, tasks)
        updates, _ = optax.sgd(epsilon).update(direction, optax.sgd(epsilon).init(theta))
        phis = jnp.stack([learner.adapt(theta, s) for s in tasks.support])
        np.testing.assert_allclose(
            optax.apply_updates(theta, updates), theta + epsilon * (phis.mean(0) - theta)
        )


def test_reptile_refuses_no_inner_steps():
    with pytest.raises(OptionError, match="inner_steps"):
        reptile(quadratic, inner_lr=0.1, inner_steps=0)
    with pytest.raises(OptionError, match="inner_steps"):
        metajax.Reptile(inner_steps=0)


def test_a_reptile_run_learns_to_adapt_and_is_evaluated_like_maml(tmp_path, run_metajax):
    out = tmp_path / "reptile"
    result = run_metajax(
        "train", "sinusoid", "--algorithm", "reptile", "--inner-steps", "5", "--inner-lr", "0.02",
        "--meta-steps", "2000", "--meta-lr", "0.01", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = metajax.load_config(out / "config.json")
    assert config.algorithm == metajax.Reptile(inner_lr=0.02, inner_steps=5, test_steps=10)
    # With one inner step Reptile is plain multi-task training: the contrast to beat.
    joint = tmp_path / "joint"
    with pytest.warns(metajax.SettingWarning, match="Reptile with `inner_steps` 1"):
        metajax.train(config.replace(inner_steps=1), joint, progress=False, plots=False)
    settings = metajax.EvalSettings(num_tasks=100, shots=(10,), adapt_steps=5)
    mse, joint_mse = (
        np.array(metajax.evaluate(run, settings, write=False)["results"][0]["mse_mean"])
        for run in (out, joint)
    )
    # Held-out tasks' MSE after 5 steps: under half of that before adapting (0.0106 against
    # 0.0411 when written), and under half of multi-task training's (0.0370).
    assert mse[5] < 0.5 * mse[0] and mse[5] < 0.5 * joint_mse[5], (mse, joint_mse)
