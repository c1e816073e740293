"""Rematerialised inner loops: the same meta-gradients, in a fraction of the memory."""

import jax
import jax.numpy as jnp
import numpy as np

import metajax
from metajax import SinusoidDistribution, maml
from metajax.runs.setup import build


def linear_loss(params, batch):
    x, y = batch
    hidden = jnp.tanh(x @ params["w1"])
    return jnp.mean((hidden @ params["w2"] - y) ** 2)


def test_remat_gives_the_same_meta_gradient():
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(0), 2)
        params = {
            "w1": jax.random.normal(keys[0], (1, 8), jnp.float64),
            "w2": jax.random.normal(keys[1], (8, 1), jnp.float64) / 3,
        }
        tasks = SinusoidDistribution().sample_tasks(jax.random.key(1), 3, 5, 5)
        tasks = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), tasks)
        # 9 and 16 fill their segments (3 of 3 steps, 4 of 4); 7 and 10 overrun them (3 of 3, 3
        # of 4) and discard the extra steps.
        for inner_steps in (0, 1, 7, 9, 10, 16):
            for first_order in (False, True):
                settings = {
                    "inner_lr": 0.05,
                    "inner_steps": inner_steps,
                    "first_order": first_order,
                }
                plain = maml(linear_loss, **settings).meta_grad(params, tasks)
                remat = maml(linear_loss, remat=True, **settings).meta_grad(params, tasks)
                jax.tree.map(
                    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), plain, remat
                )


def test_anil_and_meta_sgd_remat_give_the_same_meta_gradients():
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(0), 2)
        params = {
            "w1": jax.random.normal(keys[0], (1, 8), jnp.float64),
            "head": jax.random.normal(keys[1], (8, 1), jnp.float64) / 3,
        }

        def loss(params, batch):
            x, y = batch
            return jnp.mean((jnp.tanh(x @ params["w1"]) @ params["head"] - y) ** 2)

        tasks = SinusoidDistribution().sample_tasks(jax.random.key(1), 3, 5, 5)
        tasks = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), tasks)
        for inner_steps in (1, 7, 9):
            for factory, settings in (
                (metajax.anil, {"inner_lr": 0.05}),
                (metajax.meta_sgd, {"initial_lr": 0.05}),
            ):
                plain = factory(loss, inner_steps=inner_steps, **settings)
                remat = factory(loss, inner_steps=inner_steps, remat=True, **settings)
                meta_params = plain.init(params)
                jax.tree.map(
                    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12),
                    plain.meta_grad(meta_params, tasks),
                    remat.meta_grad(meta_params, tasks),
                )


def test_remat_needs_far_less_memory_at_a_hundred_inner_steps():
    # XLA's own account of the compiled meta-gradient's temporary buffers, the MAML paper's
    # sinusoid MLP and tasks: 31.8 MiB without, 4.1 MiB with, when written.
    config = metajax.presets("sinusoid")["finn2017"].replace(inner_steps=100)
    sizes = []
    for remat in (False, True):
        setup = build(config.replace(remat=remat))
        tasks = setup.sample_tasks(jax.random.key(0))
        compiled = jax.jit(setup.learner.meta_grad).lower(setup.params, tasks).compile()
        sizes.append(compiled.memory_analysis().temp_size_in_bytes)
    assert sizes[0] > 5 * sizes[1], sizes


def test_remat_is_a_maml_setting_on_the_command_line(tmp_path, run_metajax):
    out = tmp_path / "run"
    result = run_metajax(
        "train", "sinusoid", "--remat", "--inner-steps", "5", "--meta-steps", "200",
        "--out", str(out), "--no-progress", "--no-plots",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert metajax.load_config(out / "config.json").algorithm == metajax.MAML(
        inner_lr=0.1, inner_steps=5, remat=True, test_steps=10
    )
