"""The fused meta-training loop."""

import equinox as eqx
import jax
import numpy as np
import optax
import pytest

from metajax import init_train_state, meta_train, train_steps
from metajax.experiments.sinusoid import SinusoidConfig, build
from metajax.experiments.sinusoid_eval import EvalSettings, evaluate_model


@pytest.fixture(scope="module")
def setup():
    config = SinusoidConfig(steps=300)
    return config, build(config)


def start(setup):
    config, pieces = setup
    params, _ = eqx.partition(pieces.model, eqx.is_inexact_array)
    optimizer = optax.adam(config.meta_lr)
    return optimizer, init_train_state(pieces.learner, optimizer, params, pieces.train_key)


def train(setup, num_steps, steps_per_call, state=None, **kwargs):
    optimizer, initial = start(setup)
    return meta_train(
        setup[1].learner,
        optimizer,
        setup[1].sample_tasks,
        initial if state is None else state,
        num_steps=num_steps,
        steps_per_call=steps_per_call,
        progress=False,
        **kwargs,
    )


def test_a_short_run_lowers_the_post_adaptation_loss_on_held_out_tasks(setup):
    config, pieces = setup
    result = train(setup, num_steps=300, steps_per_call=100)
    assert result.losses.shape == (300,)
    assert int(result.state.step) == 300
    trained = eqx.combine(result.state.meta_params, pieces.static)

    settings = EvalSettings(num_tasks=200, shots=(20,), num_steps=1)
    (before,) = evaluate_model(config, pieces.model, settings)
    (after,) = evaluate_model(config, trained, settings)
    before, after = before["mse_mean"], after["mse_mean"]
    # Before adaptation, after one inner step. At initialisation the held-out loss after one
    # step is about 0.09; 300 meta-steps bring it to about 0.02.
    assert after[1] < 0.5 * before[1], (before, after)
    # The trained model adapts: one step on the support set lowers the query loss.
    assert after[1] < 0.8 * after[0], after
    # The meta-loss falls during training.
    assert result.losses[-50:].mean() < 0.5 * result.losses[:50].mean()


def test_grouping_of_steps_into_calls_does_not_change_the_result_by_a_bit(setup):
    together = train(setup, num_steps=120, steps_per_call=120)
    chunked = train(setup, num_steps=120, steps_per_call=50)  # 50 + 50 + 20
    first = train(setup, num_steps=70, steps_per_call=70)
    resumed = train(setup, num_steps=50, steps_per_call=50, state=first.state)
    # Meta-step i trains on the tasks of fold_in(key, i), whatever call it runs in.
    for other in (chunked, resumed):
        jax.tree.map(
            np.testing.assert_array_equal, together.state.meta_params, other.state.meta_params
        )
    np.testing.assert_array_equal(together.losses, chunked.losses)
    np.testing.assert_array_equal(together.losses[70:], resumed.losses)


def test_on_chunk_sees_every_step_once(setup):
    seen = []
    result = train(
        setup,
        num_steps=130,
        steps_per_call=50,
        on_chunk=lambda steps, losses: seen.append((steps, losses)),
    )
    assert [steps for steps, _ in seen] == [50, 100, 130]
    np.testing.assert_array_equal(np.concatenate([losses for _, losses in seen]), result.losses)
    # Resumed from a state that has taken steps, the counts continue from its step.
    seen.clear()
    train(
        setup,
        num_steps=20,
        steps_per_call=20,
        state=result.state,
        on_chunk=lambda *a: seen.append(a),
    )
    assert seen[0][0] == 150


def test_the_compiled_step_function_does_not_recompile_for_a_new_state(setup):
    pieces = setup[1]
    optimizer, state = start(setup)
    run = jax.jit(train_steps, static_argnums=(0, 1, 2, 4))
    args = (pieces.learner, optimizer, pieces.sample_tasks)
    state, _ = run(*args, state, 10)
    state, _ = run(*args, state, 10)
    assert run._cache_size() == 1
    assert int(state.step) == 20


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_steps=0, steps_per_call=10), r"`num_steps` must be an integer >= 1, got 0"),
        (dict(num_steps=10, steps_per_call=0), r"`steps_per_call` must be an integer >= 1, got 0"),
        (dict(num_steps=2.5, steps_per_call=1), r"`num_steps` must be an integer >= 1, got 2.5"),
    ],
)
def test_bad_step_counts_are_rejected(setup, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(setup, **kwargs)
