"""MAML's numbers: the tutorial's checks, closed forms, finite differences, equivalences."""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metajax
from metajax import Task, maml


def test_tutorial_derivatives_of_exp_and_square():
    f = jnp.exp
    g = jnp.square
    first, second, third = jax.grad(f), jax.grad(jax.grad(f)), jax.grad(jax.grad(jax.grad(f)))
    np.testing.assert_allclose([first(1.0), second(1.0), third(1.0)], [math.e] * 3, rtol=1e-6)
    first, second, third = jax.grad(g), jax.grad(jax.grad(g)), jax.grad(jax.grad(jax.grad(g)))
    assert [float(first(2.0)), float(second(2.0)), float(third(2.0))] == [4.0, 2.0, 0.0]


def tutorial_toy_learner(first_order=False):
    """The tutorial's toy: g(x, y) = x**2 + y, one inner step of size 1 on the same y."""
    return maml(lambda x, y: jnp.square(x) + y, inner_lr=1.0, first_order=first_order)


def test_tutorial_toy_maml_objective():
    learner = tutorial_toy_learner()
    task = Task(support=1.0, query=1.0)
    # x0 - grad g(x0) = 2 - 4 = -2, and g(-2, 1) = 5.
    assert float(learner.adapt(2.0, task.support)) == -2.0
    assert float(learner.task_loss(2.0, task)) == 5.0
    # maml_objective(x) = (x - 2x)**2 + 1 = x**2 + 1, so its gradient at 2 is 4.
    assert float(jax.grad(learner.task_loss)(2.0, task)) == 4.0
    # First order treats the inner gradient as a constant: d/dx g(x - c) = 2 * (-2) = -4.
    assert float(jax.grad(tutorial_toy_learner(first_order=True).task_loss)(2.0, task)) == -4.0


def quadratic(theta, a):
    return 0.5 * (theta - a) ** 2


@pytest.mark.parametrize("alpha", [0.1, 0.5, 1.5])
def test_one_step_meta_gradient_matches_closed_form(alpha):
    theta = jnp.array([-1.3, 0.0, 0.7, 2.5])
    a_s = jnp.array([0.4, -2.0, 1.0, 3.0])
    a_q = jnp.array([1.1, 0.5, -0.3, 2.0])
    adapted = theta - alpha * (theta - a_s)
    for first_order, factor in ((False, 1 - alpha), (True, 1.0)):
        learner = maml(quadratic, inner_lr=alpha, first_order=first_order)
        grads = jax.vmap(jax.grad(learner.task_loss))(theta, Task(a_s, a_q))
        np.testing.assert_allclose(grads, factor * (adapted - a_q), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("inner_steps", [0, 1, 3, 5])
def test_multi_step_meta_gradient_matches_closed_form(inner_steps):
    # n steps on 0.5 (theta - a)^2 give a + (1 - alpha)^n (theta - a); the chain rule multiplies
    # the query gradient by (1 - alpha)^n.
    alpha, theta, a_s, a_q = 0.3, 1.7, -0.4, 0.9
    learner = maml(quadratic, inner_lr=alpha, inner_steps=inner_steps)
    adapted = a_s + (1 - alpha) ** inner_steps * (theta - a_s)
    task = Task(a_s, a_q)
    np.testing.assert_allclose(learner.adapt(theta, a_s), adapted, rtol=1e-6)
    np.testing.assert_allclose(
        jax.grad(learner.task_loss)(theta, task),
        (1 - alpha) ** inner_steps * (adapted - a_q),
        rtol=1e-5,
    )
    # First order keeps only the query gradient at the adapted point.
    first_order = maml(quadratic, inner_lr=alpha, inner_steps=inner_steps, first_order=True)
    np.testing.assert_allclose(
        jax.grad(first_order.task_loss)(theta, task), adapted - a_q, rtol=1e-5
    )


def init_dict_mlp(key, sizes=(1, 8, 8, 1)):
    params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        key, w_key, b_key = jax.random.split(key, 3)
        params[f"w{i}"] = jax.random.normal(w_key, (fan_in, fan_out)) / np.sqrt(fan_in)
        params[f"b{i}"] = 0.1 * jax.random.normal(b_key, (fan_out,))
    return params


def dict_mlp_loss(params, batch):
    x, y = batch
    num_layers = len(params) // 2
    for i in range(num_layers):
        x = x @ params[f"w{i}"] + params[f"b{i}"]
        if i < num_layers - 1:
            x = jnp.tanh(x)
    return jnp.mean((x - y) ** 2)


def random_tasks(key, num_tasks, num_support=5, num_query=7):
    family = metajax.SinusoidDistribution()
    return family.sample_tasks(key, num_tasks, num_support, num_query)


def test_second_order_meta_gradient_matches_finite_differences_in_float64():
    with jax.enable_x64(True):
        params = init_dict_mlp(jax.random.key(0))
        tasks = random_tasks(jax.random.key(1), num_tasks=3)
        assert params["w0"].dtype == jnp.float64 and tasks.support[0].dtype == jnp.float64
        learner = maml(dict_mlp_loss, inner_lr=0.05, inner_steps=2)
        _, grads = jax.jit(learner.meta_grad)(params, tasks)

        flat, unravel = jax.flatten_util.ravel_pytree(params)
        meta_loss = jax.jit(lambda flat: learner.meta_loss(unravel(flat), tasks))
        eps = 1e-5
        basis = np.eye(flat.size)
        numeric = np.array(
            [(meta_loss(flat + eps * e) - meta_loss(flat - eps * e)) / (2 * eps) for e in basis]
        )
        analytic = np.asarray(jax.flatten_util.ravel_pytree(grads)[0])
        error = np.linalg.norm(analytic - numeric) / np.linalg.norm(numeric)
        assert error < 1e-6, error
        # The second-order terms matter here: first order is measurably different.
        first_order = maml(dict_mlp_loss, inner_lr=0.05, inner_steps=2, first_order=True)
        fo = jax.flatten_util.ravel_pytree(jax.jit(first_order.meta_grad)(params, tasks)[1])[0]
        assert np.linalg.norm(np.asarray(fo) - numeric) / np.linalg.norm(numeric) > 1e-3


def test_vmap_over_tasks_equals_a_python_loop():
    # float64, so that only the order of the sums can differ, on any backend.
    with jax.enable_x64(True):
        params = init_dict_mlp(jax.random.key(2))
        tasks = random_tasks(jax.random.key(3), num_tasks=4)
        learner = maml(dict_mlp_loss, inner_lr=0.1, inner_steps=2)
        loss, grads = jax.jit(learner.meta_grad)(params, tasks)

        task_value_and_grad = jax.jit(jax.value_and_grad(learner.task_loss))
        single_tasks = [jax.tree.map(lambda leaf, i=i: leaf[i], tasks) for i in range(4)]
        per_task = [task_value_and_grad(params, task) for task in single_tasks]
        np.testing.assert_allclose(loss, np.mean([value for value, _ in per_task]), rtol=1e-12)
        mean_grads = jax.tree.map(lambda *g: sum(g) / 4, *[g for _, g in per_task])
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14), grads, mean_grads
        )


def test_zero_inner_steps_is_plain_multi_task_training():
    # float64, so that only the order of the sums can differ, on any backend.
    with jax.enable_x64(True):
        params = init_dict_mlp(jax.random.key(4))
        tasks = random_tasks(jax.random.key(5), num_tasks=4)
        learner = maml(dict_mlp_loss, inner_lr=0.1, inner_steps=0)

        def multi_task_loss(params):
            return jnp.mean(jax.vmap(dict_mlp_loss, in_axes=(None, 0))(params, tasks.query))

        loss, grads = learner.meta_grad(params, tasks)
        expected_loss, expected_grads = jax.value_and_grad(multi_task_loss)(params)
        np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14),
            grads,
            expected_grads,
        )
        jax.tree.map(np.testing.assert_array_equal, learner.adapt(params, tasks.support), params)


def test_jit_matches_eager_and_trajectory_matches_adapt():
    params = init_dict_mlp(jax.random.key(6))
    tasks = random_tasks(jax.random.key(7), num_tasks=2)
    learner = maml(dict_mlp_loss, inner_lr=0.1, inner_steps=3)
    eager = learner.meta_grad(params, tasks)
    jitted = jax.jit(learner.meta_grad)(params, tasks)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), eager, jitted)

    support = jax.tree.map(lambda leaf: leaf[0], tasks.support)
    trajectory = learner.adapt_trajectory(params, support)
    assert trajectory["w1"].shape == (4, 8, 8)
    for step in range(4):
        adapted = learner.adapt(params, support, inner_steps=step)
        after_step = jax.tree.map(lambda leaf, step=step: leaf[step], trajectory)
        jax.tree.map(lambda t, a: np.testing.assert_allclose(t, a, rtol=1e-6), after_step, adapted)


def test_equinox_module_through_partition():
    with jax.enable_x64(True):
        model = eqx.nn.MLP(1, 1, 16, 2, activation=jnp.tanh, key=jax.random.key(8))
        params, static = eqx.partition(model, eqx.is_inexact_array)

        def loss_fn(params, batch):
            return metajax.mse_loss(eqx.combine(params, static), batch)

        tasks = random_tasks(jax.random.key(9), num_tasks=3)
        learner = maml(loss_fn, inner_lr=0.05, inner_steps=1)
        loss, grads = eqx.filter_jit(learner.meta_grad)(params, tasks)
        meta_loss = eqx.filter_jit(learner.meta_loss)
        np.testing.assert_allclose(loss, meta_loss(params, tasks), rtol=1e-12)
        # The gradient has the module's structure and matches a directional finite difference.
        assert jax.tree.structure(grads) == jax.tree.structure(params)
        direction = jax.tree.map(
            lambda leaf: jnp.cos(jnp.arange(leaf.size)).reshape(leaf.shape), params
        )

        def shifted(sign):
            return jax.tree.map(lambda p, d: p + sign * 1e-5 * d, params, direction)

        numeric = (meta_loss(shifted(1), tasks) - meta_loss(shifted(-1), tasks)) / 2e-5
        analytic = sum(
            jnp.vdot(g, d)
            for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction), strict=True)
        )
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
        # One adaptation step on the support set lowers the support loss.
        support = jax.tree.map(lambda leaf: leaf[0], tasks.support)
        assert loss_fn(learner.adapt(params, support), support) < loss_fn(params, support)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(inner_lr=0.0), r"`inner_lr` must be a finite number > 0, got 0.0"),
        (dict(inner_lr=-0.1), r"`inner_lr` must be a finite number > 0, got -0.1"),
        (dict(inner_lr=float("nan")), r"`inner_lr` must be a finite number > 0, got nan"),
        (dict(inner_lr=0.1, inner_steps=-1), r"`inner_steps` must be an integer >= 0, got -1"),
        (dict(inner_lr=0.1, inner_steps=1.5), r"`inner_steps` must be an integer >= 0, got 1.5"),
        (dict(inner_lr=0.1, has_aux=1), r"`has_aux` must be true or false, got 1"),
        (dict(inner_lr="0.1"), r"`inner_lr` must be a finite number > 0, got '0.1'"),
        (dict(inner_lr=0.1, first_order="no"), r"`first_order` must be true or false, got 'no'"),
    ],
)
def test_bad_hyper_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        maml(quadratic, **kwargs)


def test_bad_inner_steps_override_is_rejected():
    learner = maml(quadratic, inner_lr=0.1)
    with pytest.raises(ValueError, match=r"`inner_steps` must be an integer >= 0, got -2"):
        learner.adapt(1.0, 0.0, inner_steps=-2)


def test_step_sizes_can_be_swept_with_vmap():
    task = Task(support=0.4, query=1.1)
    step_sizes = jnp.array([0.1, 0.5, 1.5])
    swept = jax.vmap(lambda lr: jax.grad(maml(quadratic, inner_lr=lr).task_loss)(1.7, task))(
        step_sizes
    )
    one_by_one = [
        jax.grad(maml(quadratic, inner_lr=float(lr)).task_loss)(1.7, task) for lr in step_sizes
    ]
    np.testing.assert_allclose(swept, one_by_one, rtol=1e-6)
    with pytest.raises(ValueError, match=r"`inner_lr` must be a finite number > 0, got -0.5"):
        maml(quadratic, inner_lr=jnp.float32(-0.5))
    with pytest.raises(ValueError, match=r"`inner_lr` must be a number > 0 or a scalar floating"):
        maml(quadratic, inner_lr=step_sizes)


def dict_mlp_loss_and_accuracy(params, batch):
    """The same loss, and a second metric from the same forward pass."""
    x, y = batch
    loss = dict_mlp_loss(params, batch)
    return loss, {"within_0.5": jnp.mean(jnp.abs(x - y) < 0.5) + 0 * loss}


def test_a_loss_with_aux_outputs_gives_the_same_meta_gradient_and_averages_the_aux():
    with jax.enable_x64(True):
        params = init_dict_mlp(jax.random.key(10))
        tasks = random_tasks(jax.random.key(11), num_tasks=3)
        plain = maml(dict_mlp_loss, inner_lr=0.1, inner_steps=2)
        with_aux = maml(dict_mlp_loss_and_accuracy, inner_lr=0.1, inner_steps=2, has_aux=True)
        assert with_aux.has_aux and not plain.has_aux
        loss, grads = plain.meta_grad(params, tasks)
        (aux_loss, aux), aux_grads = with_aux.meta_grad(params, tasks)
        np.testing.assert_allclose(aux_loss, loss, rtol=1e-12)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), aux_grads, grads)
        # The aux value is the mean over tasks of each task's aux on its query set.
        per_task = [
            with_aux.task_loss(params, jax.tree.map(lambda leaf, i=i: leaf[i], tasks))[1]
            for i in range(3)
        ]
        np.testing.assert_allclose(
            aux["within_0.5"], np.mean([a["within_0.5"] for a in per_task]), rtol=1e-12
        )
        # Adaptation takes gradients of the loss alone: the same steps as without aux.
        support = jax.tree.map(lambda leaf: leaf[0], tasks.support)
        jax.tree.map(
            np.testing.assert_array_equal,
            with_aux.adapt(params, support),
            plain.adapt(params, support),
        )


def test_observing_a_trajectory_equals_observing_each_step_of_it():
    params = init_dict_mlp(jax.random.key(12))
    tasks = random_tasks(jax.random.key(13), num_tasks=1)
    support, query = jax.tree.map(lambda leaf: leaf[0], (tasks.support, tasks.query))
    learner = maml(dict_mlp_loss, inner_lr=0.1, inner_steps=3)
    trajectory = learner.adapt_trajectory(params, support)
    observed = learner.adapt_trajectory(params, support, observe=lambda p: dict_mlp_loss(p, query))
    assert observed.shape == (4,)
    expected = [
        dict_mlp_loss(jax.tree.map(lambda leaf, s=s: leaf[s], trajectory), query) for s in range(4)
    ]
    np.testing.assert_allclose(observed, expected, rtol=1e-6)
    # The first entry is the unadapted parameters, the last the adapted ones.
    jax.tree.map(
        np.testing.assert_array_equal, jax.tree.map(lambda leaf: leaf[0], trajectory), params
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
        jax.tree.map(lambda leaf: leaf[-1], trajectory),
        learner.adapt(params, support),
    )


def test_equal_learners_are_one_learner_and_jit_compiles_them_once(count_compilations):
    params = init_dict_mlp(jax.random.key(14))
    tasks = random_tasks(jax.random.key(15), num_tasks=2)
    first = maml(dict_mlp_loss, inner_lr=0.123, inner_steps=2)
    assert maml(dict_mlp_loss, inner_lr=0.123, inner_steps=2) is first
    assert maml(dict_mlp_loss, inner_lr=0.124, inner_steps=2) is not first
    assert count_compilations(jax.jit(first.meta_grad), params, tasks) == 1
    again = maml(dict_mlp_loss, inner_lr=0.123, inner_steps=2)
    assert count_compilations(jax.jit(again.meta_grad), params, tasks) == 0
    # A sweep over step sizes compiles once too, with the step size traced.
    sweep = jax.jit(
        lambda lr: maml(dict_mlp_loss, inner_lr=lr, inner_steps=2).meta_grad(params, tasks)
    )
    assert count_compilations(sweep, jnp.float32(0.1)) == 1
    assert count_compilations(sweep, jnp.float32(0.2)) == 0


def test_a_cached_learner_does_not_let_a_bad_value_equal_to_a_good_one_through():
    assert maml(quadratic, inner_lr=1.0) is maml(quadratic, inner_lr=1.0)
    # True == 1 and 1.0 == True, but neither is a step size or a number of steps.
    with pytest.raises(ValueError, match=r"`inner_lr` must be a finite number > 0, got True"):
        maml(quadratic, inner_lr=True)
    with pytest.raises(ValueError, match=r"`inner_steps` must be an integer >= 0, got True"):
        maml(quadratic, inner_lr=1.0, inner_steps=True)
    with pytest.raises(ValueError, match=r"`has_aux` must be true or false, got 0"):
        maml(quadratic, inner_lr=1.0, has_aux=0)
