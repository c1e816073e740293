"""MAML++: loss weights as MAML++'s code computes them, per-step step sizes and batch-norm
copies against hand-written inner loops and finite differences, the first-order schedule."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from numeric import central_differences, float64_tasks, linear_loss

import metajax
from metajax import OptionError, Task, maml, maml_plus_plus
from metajax.algorithms.multi_step_loss import step_loss_weights
from metajax.core.meta_steps import outer_optimizer


def reference_weights(inner_steps, anneal_steps, meta_step):
    """MAML++'s get_per_step_loss_importance_vector, with meta-steps for epochs."""
    weights = np.ones(inner_steps) / inner_steps
    decay = 1.0 / inner_steps / anneal_steps
    floor = 0.03 / inner_steps
    for i in range(inner_steps - 1):
        weights[i] = max(weights[i] - meta_step * decay, floor)
    weights[-1] = min(
        weights[-1] + meta_step * (inner_steps - 1) * decay, 1.0 - (inner_steps - 1) * floor
    )
    return weights


def test_loss_weights_anneal_as_in_maml_plus_plus_code():
    for meta_step in (0, 1, 250, 499, 700, 999):
        weights = np.asarray(step_loss_weights(jnp.int32(meta_step), 5, 1000))
        np.testing.assert_allclose(weights, reference_weights(5, 1000, meta_step), rtol=1e-6)
        assert weights.sum() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(step_loss_weights(jnp.int32(0), 4, 100), [0.25] * 4)
    # Past the annealing, and without it, the last step's loss alone.
    for weights in (step_loss_weights(jnp.int32(1000), 5, 1000), step_loss_weights(0, 5, 0)):
        np.testing.assert_array_equal(weights, [0, 0, 0, 0, 1])


LINEAR = {"w": jnp.array([[0.4]]), "b": jnp.array([0.2])}


def by_hand(params, support, step_sizes):
    """The inner loop written out: params after each step, step i with step_sizes[i]."""
    trajectory = [params]
    for lrs in step_sizes:
        grads = jax.grad(linear_loss)(trajectory[-1], support)
        trajectory.append(jax.tree.map(lambda p, lr, g: p - lr * g, trajectory[-1], lrs, grads))
    return trajectory


def test_each_step_takes_its_own_learned_step_sizes():
    with jax.enable_x64(True):
        tasks = float64_tasks()
        learner = maml_plus_plus(linear_loss, initial_lr=0.05, inner_steps=3, per_step=None)
        meta_params = learner.init(jax.tree.map(lambda x: x.astype(jnp.float64), LINEAR))
        assert jax.tree.map(jnp.shape, meta_params["inner_lrs"]) == {"w": (3,), "b": (3,)}
        meta_params["inner_lrs"] = {
            "w": jnp.array([0.05, 0.11, 0.02]),
            "b": jnp.array([0.3, 0.07, 0.15]),
        }
        support = jax.tree.map(lambda leaf: leaf[0], tasks.support)
        step_sizes = [
            jax.tree.map(lambda lrs, i=i: lrs[i], meta_params["inner_lrs"]) for i in range(3)
        ]
        expected = by_hand(meta_params["params"], support, step_sizes)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13),
            learner.adapt(meta_params, support),
            expected[-1],
        )
        # More steps than trained reuse the last step's sizes.
        longer = by_hand(meta_params["params"], support, [*step_sizes, step_sizes[-1]])
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13),
            learner.adapt(meta_params, support, 4),
            longer[-1],
        )
        # The meta-gradient, step sizes included, equals central differences.
        _, grads = learner.meta_grad(meta_params, tasks, jnp.int32(0))
        numeric = central_differences(learner.meta_loss, meta_params, tasks)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), grads, numeric)


def test_with_every_option_off_it_is_maml():
    with jax.enable_x64(True):
        tasks = float64_tasks()
        params = jax.tree.map(lambda x: x.astype(jnp.float64), LINEAR)
        plain = maml_plus_plus(
            linear_loss, initial_lr=0.05, inner_steps=2, learn_step_sizes=False, per_step=None
        )
        meta_params = plain.init(params)
        assert set(meta_params) == {"params", "per_step"}
        loss, grads = plain.meta_grad(meta_params, tasks, jnp.int32(0))
        maml_loss, maml_grads = maml(linear_loss, inner_lr=0.05, inner_steps=2).meta_grad(
            params, tasks
        )
        np.testing.assert_allclose(loss, maml_loss, rtol=1e-14)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), grads["params"], maml_grads
        )


def test_the_multi_step_loss_weights_the_query_loss_after_every_step():
    with jax.enable_x64(True):
        tasks = float64_tasks()
        params = jax.tree.map(lambda x: x.astype(jnp.float64), LINEAR)
        learner = maml_plus_plus(
            linear_loss, initial_lr=0.05, inner_steps=3, learn_step_sizes=False,
            anneal_steps=100, per_step=None,
        )  # fmt: skip
        meta_params = learner.init(params)

        def objective(params, weights):
            def one_task(task):
                trajectory = by_hand(
                    params, task.support, [jax.tree.map(lambda _: 0.05, params)] * 3
                )
                return sum(
                    w * linear_loss(p, task.query)
                    for w, p in zip(weights, trajectory[1:], strict=True)
                )

            return jnp.mean(jax.vmap(one_task)(tasks))

        for meta_step in (0, 40, 100):
            weights = reference_weights(3, 100, meta_step) if meta_step < 100 else [0, 0, 1]
            loss, grads = learner.meta_grad(meta_params, tasks, jnp.int32(meta_step))
            expected_loss, expected = jax.value_and_grad(objective)(params, weights)
            np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), grads["params"], expected
            )
        # meta_loss is the objective the schedule ends with: the last step's query loss.
        np.testing.assert_allclose(
            learner.meta_loss(meta_params, tasks), objective(params, [0, 0, 1]), rtol=1e-12
        )


def test_first_order_for_the_first_meta_steps_then_second_order():
    with jax.enable_x64(True):
        tasks = float64_tasks()
        params = jax.tree.map(lambda x: x.astype(jnp.float64), LINEAR)
        learner = maml_plus_plus(
            linear_loss, initial_lr=0.05, inner_steps=2, learn_step_sizes=False,
            first_order_steps=10, per_step=None,
        )  # fmt: skip
        meta_params = learner.init(params)
        for meta_step, first_order in ((0, True), (9, True), (10, False), (500, False)):
            _, grads = learner.meta_grad(meta_params, tasks, jnp.int32(meta_step))
            reference = maml(linear_loss, inner_lr=0.05, inner_steps=2, first_order=first_order)
            _, expected = reference.meta_grad(params, tasks)
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), grads["params"], expected
            )
        # The two orders do differ here, so the schedule is what the test sees.
        first = maml(linear_loss, inner_lr=0.05, inner_steps=2, first_order=True).meta_grad(
            params, tasks
        )[1]
        second = maml(linear_loss, inner_lr=0.05, inner_steps=2).meta_grad(params, tasks)[1]
        assert not np.allclose(first["w"], second["w"], rtol=1e-3)


def scaled_loss(params, batch):
    """A linear model whose output is multiplied by a batch-norm-like ``scale``."""
    x, y = batch
    return jnp.mean((params["scale"] * (x @ params["w"] + params["b"]) - y) ** 2)


def test_per_step_parameters_take_copy_i_at_step_i_and_do_not_adapt():
    with jax.enable_x64(True):
        tasks = float64_tasks()
        params = {"w": jnp.array([[0.4]]), "b": jnp.array([0.2]), "scale": jnp.array([1.0])}
        learner = maml_plus_plus(
            scaled_loss, initial_lr=0.05, inner_steps=2, learn_step_sizes=False
        )
        meta_params = learner.init(params)
        assert meta_params["params"]["scale"] is None
        assert meta_params["per_step"]["scale"].shape == (2, 1)
        copies = jnp.array([[1.0], [0.5]])
        meta_params["per_step"] = {**meta_params["per_step"], "scale": copies}
        support = jax.tree.map(lambda leaf: leaf[0], tasks.support)

        # By hand, as in MAML++'s code: step i's gradient uses scale copy i, and the parameters
        # it produces keep it, for the query loss after step i + 1.
        current = {"w": params["w"], "b": params["b"]}
        for i in range(2):
            scale = meta_params["per_step"]["scale"][i]
            grads = jax.grad(lambda p, s=scale: scaled_loss({**p, "scale": s}, support))(current)
            current = jax.tree.map(lambda p, g: p - 0.05 * g, current, grads)
        adapted = learner.adapt(meta_params, support)
        np.testing.assert_allclose(adapted["w"], current["w"], rtol=1e-13)
        np.testing.assert_array_equal(adapted["scale"], [0.5])
        query = jax.tree.map(lambda leaf: leaf[0], tasks.query)
        np.testing.assert_allclose(
            learner.task_loss(meta_params, jax.tree.map(lambda leaf: leaf[0], tasks)),
            scaled_loss({**current, "scale": copies[1]}, query),
            rtol=1e-13,
        )
        assert learner.model_params(meta_params)["scale"] == 1.0

        # Every copy's meta-gradient, and the rest's, equals central differences.
        _, grads = learner.meta_grad(meta_params, tasks, jnp.int32(0))
        numeric = central_differences(learner.meta_loss, meta_params, tasks)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), grads, numeric)


def test_the_default_pattern_picks_conv4_batch_norm_and_nothing_in_the_mlp():
    conv = eqx.filter(metajax.conv4(jax.random.key(0), ways=5, image_size=28), eqx.is_inexact_array)
    learner = maml_plus_plus(lambda p, b: 0.0, initial_lr=0.1, inner_steps=5)
    copies = learner.init(conv)["per_step"]
    assert [leaf.shape for leaf in jax.tree.leaves(copies)] == [(5, 64)] * 8
    mlp = eqx.filter(metajax.mlp(jax.random.key(0), (1, 40, 40, 1)), eqx.is_inexact_array)
    assert jax.tree.leaves(learner.init(mlp)["per_step"]) == []
    none = maml_plus_plus(lambda p, b: 0.0, initial_lr=0.1, inner_steps=5, per_step="none")
    assert jax.tree.leaves(none.init(conv)["per_step"]) == []


def test_the_step_sizes_move_at_their_own_multiple_of_the_outer_learning_rate():
    with jax.enable_x64(True):
        tasks = float64_tasks()
        params = jax.tree.map(lambda x: x.astype(jnp.float64), LINEAR)

        def first_update(scale, optimizer):
            learner = maml_plus_plus(
                linear_loss, initial_lr=0.05, inner_steps=2, per_step=None,
                step_size_lr_scale=scale,
            )  # fmt: skip
            meta_params = learner.init(params)
            _, grads = learner.meta_grad(meta_params, tasks, jnp.int32(0))
            outer = outer_optimizer(learner, optimizer)
            updates, _ = outer.update(grads, outer.init(meta_params), meta_params)
            return grads, updates

        for optimizer in (optax.sgd(0.1), optax.adam(1e-3)):
            grads, plain = first_update(1.0, optimizer)
            _, scaled = first_update(0.01, optimizer)
            jax.tree.map(np.testing.assert_array_equal, scaled["params"], plain["params"])
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, 0.01 * b, rtol=1e-15),
                scaled["inner_lrs"],
                plain["inner_lrs"],
            )
        # Adam's first update is its learning rate times the gradient's sign.
        jax.tree.map(
            lambda u, g: np.testing.assert_allclose(u, -1e-5 * np.sign(g), rtol=1e-6),
            scaled["inner_lrs"],
            grads["inner_lrs"],
        )
        unscaled = maml_plus_plus(linear_loss, initial_lr=0.05, step_size_lr_scale=1.0)
        assert unscaled.scaled_updates is None  # the optimizer state is the plain one's


def test_bad_settings_are_refused():
    with pytest.raises(OptionError, match="`inner_steps` must be"):
        maml_plus_plus(linear_loss, initial_lr=0.1, inner_steps=0)
    with pytest.raises(OptionError, match="`step_size_lr_scale` must be"):
        maml_plus_plus(linear_loss, initial_lr=0.1, step_size_lr_scale=0.0)
    with pytest.raises(OptionError, match="`per_step` must be a regular expression"):
        maml_plus_plus(linear_loss, initial_lr=0.1, per_step="(")
    learner = maml_plus_plus(linear_loss, initial_lr=0.1, per_step="w|b")
    with pytest.raises(
        OptionError,
        match=r"`per_step` must be a pattern that leaves some parameters to adapt "
        r"\(\['b'\], \['w'\]\)",
    ):
        learner.init(LINEAR)


def test_a_maml_plus_plus_run_learns_its_step_sizes_and_is_evaluated(tmp_path, run_metajax):
    out = tmp_path / "mamlpp"
    result = run_metajax(
        "train", "sinusoid", "--preset", "finn2017", "--algorithm", "maml++", "--meta-steps",
        "2000", "--inner-steps", "3", "--anneal-steps", "1000", "--first-order-steps", "500",
        "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = metajax.load(out)
    assert run.config.algorithm == metajax.MAMLPlusPlus(
        inner_steps=3, anneal_steps=1000, first_order_steps=500, test_steps=10
    )
    assert run.config.algorithm.adaptation_note(3) == ""
    assert run.config.algorithm.adaptation_note(4) == (
        "the step sizes and per-step parameters were learned for 3 inner steps; later steps "
        "reuse the last step's and may diverge"
    )
    inner_lrs = np.stack([np.ravel(x) for x in jax.tree.leaves(run.meta_params["inner_lrs"])])
    assert inner_lrs.shape == (6, 3) and np.ptp(inner_lrs) > 1e-3
    report = metajax.evaluate(
        out, metajax.EvalSettings(num_tasks=100, shots=(10,), adapt_steps=3), write=False
    )
    mse = report["results"][0]["mse_mean"]
    assert mse[3] < 0.5 * mse[0], mse


def test_on_conv4_each_inner_step_normalises_with_its_own_batch_norm_copy():
    model = metajax.conv4(jax.random.key(0), ways=2, image_size=16, filters=8)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(params, batch):
        images, labels = batch
        logits = eqx.combine(params, static)(images)
        return metajax.cross_entropy(logits, labels)[0]

    keys = jax.random.split(jax.random.key(1), 2)
    images = jax.random.uniform(keys[0], (2, 2, 4, 16, 16, 1))  # [task, support|query, ...]
    labels = jnp.tile(jnp.array([0, 1, 0, 1]), (2, 2, 1))
    tasks = Task(support=(images[:, 0], labels[:, 0]), query=(images[:, 1], labels[:, 1]))
    learner = maml_plus_plus(loss, initial_lr=0.1, inner_steps=2)
    meta_params = learner.init(params)
    _, grads = jax.jit(learner.meta_grad)(meta_params, tasks, jnp.int32(0))
    # Copy 0 serves the first step's support loss, copy 1 the second's and the query loss:
    # each gets a gradient of its own.
    scale_grads = np.asarray(grads["per_step"].scales[0])
    assert scale_grads.shape == (2, 8) and np.isfinite(scale_grads).all()
    assert all(np.abs(scale_grads[i]).max() > 0 for i in range(2))
    assert not np.allclose(scale_grads[0], scale_grads[1])
    # Batch norm's parameters do not adapt: after two steps they are copy 1, as stored.
    adapted = jax.jit(learner.adapt)(meta_params, jax.tree.map(lambda x: x[0], tasks.support))
    np.testing.assert_array_equal(adapted.offsets[1], meta_params["per_step"].offsets[1][1])
    assert not np.allclose(adapted.kernels[0], params.kernels[0])
