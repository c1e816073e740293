"""ANIL: only the chosen parameters adapt, and the meta-gradient is MAML's on the head alone."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metajax
from metajax import OptionError, SinusoidDistribution, anil, maml, mlp
from metajax.algorithms.anil import adapted_mask


def network_loss(params, batch):
    x, y = batch
    hidden = jnp.tanh(x @ params["body"]["w"] + params["body"]["b"])
    return jnp.mean((hidden @ params["head"]["w"] + params["head"]["b"] - y) ** 2)


def float64_setup():
    keys = jax.random.split(jax.random.key(3), 2)
    params = {
        "body": {"w": jax.random.normal(keys[0], (1, 6)), "b": jnp.zeros(6)},
        "head": {"w": jax.random.normal(keys[1], (6, 1)) / 3, "b": jnp.zeros(1)},
    }
    tasks = SinusoidDistribution().sample_tasks(jax.random.key(4), 4, 5, 7)
    as64 = lambda tree: jax.tree.map(lambda leaf: leaf.astype(jnp.float64), tree)  # noqa: E731
    return as64(params), as64(tasks)


def test_the_inner_loop_leaves_the_body_untouched():
    with jax.enable_x64(True):
        params, tasks = float64_setup()
        support = jax.tree.map(lambda leaf: leaf[0], tasks.support)
        adapted = anil(network_loss, inner_lr=0.1, inner_steps=3).adapt(params, support)
        jax.tree.map(np.testing.assert_array_equal, adapted["body"], params["body"])
        assert not np.allclose(adapted["head"]["w"], params["head"]["w"])

        # The head takes MAML's steps with the body held fixed.
        def head_loss(head, batch):
            return network_loss({"body": params["body"], "head": head}, batch)

        expected = maml(head_loss, inner_lr=0.1, inner_steps=3).adapt(params["head"], support)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14), adapted["head"], expected
        )


def two_head_steps(params, tasks, first_order):
    """ANIL's meta-loss by hand: two steps of 0.2 on the head alone, the body a constant of the
    inner loop but a variable of the outer one."""

    def task_loss(support, query):
        head = params["head"]
        for _ in range(2):
            step = jax.grad(lambda h: network_loss({"body": params["body"], "head": h}, support))(
                head
            )
            if first_order:
                step = jax.lax.stop_gradient(step)
            head = jax.tree.map(lambda p, g: p - 0.2 * g, head, step)
        return network_loss({"body": params["body"], "head": head}, query)

    return jnp.mean(jax.vmap(task_loss)(tasks.support, tasks.query))


def test_the_meta_gradient_is_maml_s_with_only_the_head_adapting():
    with jax.enable_x64(True):
        params, tasks = float64_setup()
        for first_order in (False, True):
            learner = anil(network_loss, inner_lr=0.2, inner_steps=2, first_order=first_order)
            loss, grads = learner.meta_grad(params, tasks)

            expected, expected_grads = jax.value_and_grad(two_head_steps)(
                params, tasks, first_order
            )
            np.testing.assert_allclose(loss, expected, rtol=1e-13)
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10), grads, expected_grads
            )
        # Picking every parameter would be MAML under another name: refused, as a likely slip.
        everything = anil(network_loss, inner_lr=0.2, inner_steps=2, adapted=lambda path: True)
        with pytest.raises(OptionError, match="not every parameter"):
            everything.meta_grad(params, tasks)


def test_the_default_picks_a_head_or_the_last_layer():
    mask = adapted_mask({"body": {"w": 1.0}, "head": {"w": 2.0, "b": 3.0}}, "head")
    assert mask == {"body": {"w": False}, "head": {"w": True, "b": True}}
    model = mlp(jax.random.key(0), (1, 4, 4, 1))
    mask = adapted_mask(model, "head")
    assert mask.weights == (False, False, True) and mask.biases == (False, False, True)
    conv = metajax.conv4(jax.random.key(0), 5, image_size=8, filters=4)
    params = jax.tree.leaves_with_path(adapted_mask(conv, "head"))
    picked = [jax.tree_util.keystr(path) for path, flag in params if flag]
    assert picked == [".head_weight", ".head_bias"]
    # A pattern of one's own: the last two layers of the MLP.
    mask = adapted_mask(model, r"\[[12]\]")
    assert mask.weights == (False, True, True)


def test_a_pattern_that_picks_no_parameter_is_refused_before_the_run_writes(tmp_path, run_metajax):
    out = tmp_path / "run"
    result = run_metajax(
        "train", "sinusoid", "--algorithm", "anil", "--adapted", "decoder",
        "--meta-steps", "10", "--out", str(out),
    )  # fmt: skip
    message = (
        "metajax: error: `adapted` must be a pattern that picks some of the parameters "
        "(.weights[0], .weights[1], .weights[2], .biases[0], .biases[1], .biases[2]), not no "
        "parameter, got 'decoder'\n"
    )
    assert (result.returncode, result.stderr) == (1, message)
    assert not out.exists()
    with pytest.raises(OptionError, match=re.escape("`adapted` must be a regular expression")):
        anil(network_loss, inner_lr=0.1, adapted="head[")


def test_an_anil_run_on_sinusoids_adapts(tmp_path):
    config = (
        metajax.presets("sinusoid")["finn2017"]
        .with_algorithm("anil")
        .replace(meta_steps=3000, inner_lr=0.01)
    )
    out = tmp_path / "anil"
    metajax.train(config, out, progress=False, plots=False)
    run = metajax.load(out)
    assert run.config.algorithm == metajax.ANIL(inner_lr=0.01, inner_steps=1, test_steps=10)
    report = metajax.evaluate(
        out, metajax.EvalSettings(num_tasks=100, shots=(10,), adapt_steps=10), write=False
    )
    mse = report["results"][0]["mse_mean"]
    assert mse[10] < 0.5 * mse[0], mse
