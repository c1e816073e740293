"""The fused meta-training loop."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fakes import line_config
from hypothesis import given, settings
from hypothesis import strategies as st

import metajax
from metajax import Task, init_train_state, maml, meta_train, train_steps
from metajax.core import memory
from metajax.core.training_loop import NonFiniteError, _chunk_sizes, _distinct_chunk_sizes
from metajax.evaluation.harness import EvalSettings, evaluate_run
from metajax.runs.setup import build


@pytest.fixture(scope="module")
def setup():
    """The test-only family lines: its loss has an aux metric, hit_rate."""
    return build(line_config())


def train(setup, meta_steps, steps_per_call, state=None, **kwargs):
    return meta_train(
        setup.learner,
        setup.optimizer,
        setup.sample_tasks,
        setup.initial_state if state is None else state,
        meta_steps=meta_steps,
        steps_per_call=steps_per_call,
        progress=False,
        **kwargs,
    )


def test_a_short_run_lowers_the_post_adaptation_loss_on_held_out_tasks(tmp_path):
    config = metajax.presets("sinusoid")["tutorial"].replace(meta_steps=300)
    setup = build(config)
    result = train(setup, meta_steps=300, steps_per_call=100)
    assert result.losses.shape == (300,) and result.aux == {}
    assert int(result.state.step) == 300
    untrained = metajax.LoadedRun(
        tmp_path, config, setup.params, setup.static, setup.learner, setup.loss_fn
    )
    trained = untrained._replace(meta_params=result.state.meta_params)

    settings = EvalSettings(num_tasks=200, shots=(20,), adapt_steps=1)
    (before,) = evaluate_run(untrained, settings)
    (after,) = evaluate_run(trained, settings)
    before, after = before["mse_mean"], after["mse_mean"]
    # Before adaptation, after one inner step. At initialisation the held-out loss after one
    # step is about 0.09; 300 meta-steps bring it to about 0.02.
    assert after[1] < 0.5 * before[1], (before, after)
    # The trained model adapts: one step on the support set lowers the query loss.
    assert after[1] < 0.8 * after[0], after
    # The meta-loss falls during training.
    assert result.losses[-50:].mean() < 0.5 * result.losses[:50].mean()


def test_grouping_of_steps_into_calls_and_draws_does_not_change_the_result_by_a_bit(setup):
    together = train(setup, meta_steps=120, steps_per_call=120)
    chunked = train(setup, meta_steps=120, steps_per_call=50)  # 50 + 50 + 20
    first = train(setup, meta_steps=70, steps_per_call=70)
    resumed = train(setup, meta_steps=50, steps_per_call=50, state=first.state)
    # Task batches drawn inside the loop, one step's at a time or 7 at a time (17 draws and a
    # rest of 1), for bounded memory.
    drawn_singly = train(setup, meta_steps=120, steps_per_call=120, steps_per_draw=1)
    drawn_by_7 = train(setup, meta_steps=120, steps_per_call=120, steps_per_draw=7)
    # Meta-step i trains on the tasks of fold_in(key, i), whatever call it runs in.
    for other in (chunked, resumed, drawn_singly, drawn_by_7):
        jax.tree.map(
            np.testing.assert_array_equal, together.state.meta_params, other.state.meta_params
        )
    for other in (chunked, drawn_singly, drawn_by_7):
        np.testing.assert_array_equal(together.losses, other.losses)
        np.testing.assert_array_equal(together.aux["hit_rate"], other.aux["hit_rate"])
    np.testing.assert_array_equal(together.losses[70:], resumed.losses)
    # The aux metric is the mean over each step's tasks of the loss's aux output.
    assert together.aux["hit_rate"].shape == (120,)
    assert np.all((together.aux["hit_rate"] >= 0) & (together.aux["hit_rate"] <= 1))


def test_drawing_inside_the_loop_bounds_the_memory_of_the_task_batches():
    # 200 steps of 64 tasks of 256 + 256 points (x and y): 200 * 64 * 512 * 2 * 4 bytes = 105 MB
    # of task batches when a call draws them all at once; one step's at a time, 0.5 MB.
    setup = build(line_config(shots=256, query_shots=256).replace(meta_batch_size=64))
    jitted = jax.jit(train_steps, static_argnums=(0, 1, 2, 4, 5))
    args = (setup.learner, setup.optimizer, setup.sample_tasks, setup.initial_state, 200)
    peak = {draw: memory.needed_bytes(jitted.lower(*args, draw).compile()) for draw in (None, 1)}
    assert peak[None] > 80e6 and peak[1] < 10e6, peak


def record_chunks(seen):
    return lambda state, losses, aux: seen.append((int(state.step), losses))


def test_on_chunk_sees_every_step_once(setup):
    seen = []
    result = train(setup, meta_steps=130, steps_per_call=50, on_chunk=record_chunks(seen))
    assert [steps for steps, _ in seen] == [50, 100, 130]
    np.testing.assert_array_equal(np.concatenate([losses for _, losses in seen]), result.losses)
    # Resumed from a state that has taken steps, the counts continue from its step.
    seen.clear()
    train(setup, meta_steps=20, steps_per_call=20, state=result.state, on_chunk=record_chunks(seen))
    assert seen[0][0] == 150


def test_calls_also_end_at_every_multiple_of_checkpoint_every(setup):
    together = train(setup, meta_steps=130, steps_per_call=130)
    seen = []
    chunked = train(
        setup, meta_steps=130, steps_per_call=50, checkpoint_every=30, on_chunk=record_chunks(seen)
    )
    assert [steps for steps, _ in seen] == [30, 60, 90, 120, 130]
    jax.tree.map(
        np.testing.assert_array_equal, together.state.meta_params, chunked.state.meta_params
    )
    # From step 20, calls end at the next multiples of 30, whatever the start: 20 + 10 = 30.
    first = train(setup, meta_steps=20, steps_per_call=20)
    seen.clear()
    resumed = train(
        setup,
        meta_steps=110,
        steps_per_call=25,
        checkpoint_every=30,
        state=first.state,
        on_chunk=record_chunks(seen),
    )
    assert [steps for steps, _ in seen] == [30, 55, 60, 85, 90, 115, 120, 130]
    jax.tree.map(
        np.testing.assert_array_equal, together.state.meta_params, resumed.state.meta_params
    )
    np.testing.assert_array_equal(together.losses[20:], resumed.losses)


def test_the_compiled_step_function_does_not_recompile_for_a_new_state(setup, count_compilations):
    run = jax.jit(train_steps, static_argnums=(0, 1, 2, 4))
    args = (setup.learner, setup.optimizer, setup.sample_tasks)
    state = setup.initial_state
    assert count_compilations(lambda: run(*args, state, 10)) <= 1  # 0: from the disk cache
    state, _ = run(*args, state, 10)
    assert count_compilations(lambda: run(*args, state, 10)) == 0
    assert int(run(*args, state, 10)[0].step) == 20


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(meta_steps=0, steps_per_call=10), r"`meta_steps` must be an integer >= 1, got 0"),
        (dict(meta_steps=10, steps_per_call=0), r"`steps_per_call` must be an integer >= 1, got 0"),
        (dict(meta_steps=2.5, steps_per_call=1), r"`meta_steps` must be an integer >= 1, got 2.5"),
        (
            dict(meta_steps=10, steps_per_call=5, checkpoint_every=0),
            r"`checkpoint_every` must be an integer >= 1, got 0",
        ),
        (
            dict(meta_steps=10, steps_per_call=5, steps_per_draw=-1),
            r"`steps_per_draw` must be an integer >= 1, got -1",
        ),
    ],
)
def test_bad_step_counts_are_rejected(setup, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(setup, **kwargs)


def test_an_absurd_inner_step_size_stops_training_at_the_first_step(setup):
    learner = maml(setup.loss_fn, inner_lr=1e30, has_aux=True)
    state = init_train_state(learner, setup.optimizer, setup.params, setup.train_key)
    seen = []
    with pytest.raises(NonFiniteError) as caught:
        meta_train(
            learner,
            setup.optimizer,
            setup.sample_tasks,
            state,
            meta_steps=100,
            steps_per_call=50,
            progress=False,
            on_chunk=record_chunks(seen),
        )
    error = caught.value
    assert (error.step, error.quantities) == (1, "meta-loss and meta-gradient")
    assert not np.isfinite(error.meta_loss)
    assert str(error).startswith("the meta-loss and meta-gradient became non-finite at meta-step 1")
    assert int(error.state.step) == 0 and seen == []


def toy_tasks(key):
    """One task of empty data: the toy losses below depend on the parameters alone."""
    del key
    return Task(support=jnp.zeros((1, 1)), query=jnp.zeros((1, 1)))


def run_toy(loss_fn, learning_rate, meta_steps, steps_per_call):
    """Plain multi-task training (0 inner steps) of one scalar w = 0 with SGD."""
    learner = maml(loss_fn, inner_lr=0.1, inner_steps=0)
    optimizer = optax.sgd(learning_rate)
    state = init_train_state(learner, optimizer, {"w": jnp.float32(0.0)}, jax.random.key(0))
    seen = []
    with pytest.raises(NonFiniteError) as caught:
        meta_train(
            learner,
            optimizer,
            toy_tasks,
            state,
            meta_steps=meta_steps,
            steps_per_call=steps_per_call,
            progress=False,
            on_chunk=record_chunks(seen),
        )
    return caught.value, seen


def test_a_non_finite_gradient_with_a_finite_loss_is_found_at_its_step():
    # The loss is -w, always finite; its gradient is -1 while w < 4.5 and NaN from then on
    # (0 * the infinite slope of sqrt at 0). SGD with step size 1 takes w to 0, 1, 2, ..., so
    # meta-step 6, at w = 5, has the first NaN gradient, and the NaN parameters after it make
    # the loss of step 7 NaN. The check after the call (steps 5 to 8) sees the loss, and the
    # replay with gradient checks names step 6.
    def loss_fn(params, batch):
        w = params["w"]
        return -w + 0.0 * jnp.sqrt(jnp.maximum(4.5 - w, 0.0))

    error, seen = run_toy(loss_fn, learning_rate=1.0, meta_steps=12, steps_per_call=4)
    assert (error.step, error.quantities, error.meta_loss) == (6, "meta-gradient", -5.0)
    assert [steps for steps, _ in seen] == [4]
    assert int(error.state.step) == 4 and float(error.state.meta_params["w"]) == 4.0


def test_an_update_that_overflows_is_found_though_losses_and_gradients_are_finite():
    # The loss -w has gradient -1; SGD with step size 1e38 takes w to 1e38, 2e38, 3e38 and then
    # past float32's largest number (3.4e38) at meta-step 4, the last of the first call.
    error, seen = run_toy(lambda params, batch: -params["w"], 1e38, meta_steps=8, steps_per_call=4)
    assert (error.step, error.quantities) == (4, "meta-parameters")
    assert seen == [] and int(error.state.step) == 0


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 60),
    st.integers(1, 60),
    st.integers(1, 12),
    st.one_of(st.none(), st.integers(1, 25)),
)
def test_the_calls_are_the_steps_cut_at_every_checkpoint_and_every_steps_per_call(
    first_step, meta_steps, steps_per_call, checkpoint_every
):
    sizes = list(_chunk_sizes(first_step, meta_steps, steps_per_call, checkpoint_every))
    assert sum(sizes) == meta_steps and all(1 <= size <= steps_per_call for size in sizes)
    ends = set(itertools.accumulate(sizes, initial=first_step))
    if checkpoint_every is not None:  # every multiple of checkpoint_every is a call's end
        multiples = range(first_step + 1, first_step + meta_steps + 1)
        assert {s for s in multiples if s % checkpoint_every == 0} <= ends
    assert _distinct_chunk_sizes(first_step, meta_steps, steps_per_call, checkpoint_every) == set(
        sizes
    )


def test_a_run_of_two_billion_one_step_calls_is_planned_without_listing_them():
    sizes = _chunk_sizes(0, 2**31 - 1, 1000, 1)
    assert list(itertools.islice(sizes, 3)) == [1, 1, 1]
    assert _distinct_chunk_sizes(0, 2**31 - 1, 1000, 1) == {1}
    # 7 to 5000: 4 calls of 1000 and one of 993; whole periods; 2147480000 to 2**31 - 1: 647.
    assert _distinct_chunk_sizes(7, 2**31 - 8, 1000, 5000) == {1000, 993, 647}


@pytest.mark.parametrize("algorithm", ["maml", "maml++"])
def test_any_optax_outer_optimizer_and_the_meta_step_reach_each_step(algorithm):
    # meta_train equals a Python loop of meta_grad and the optimizer's update, for an outer
    # optimizer other than Adam, and hands a schedule-driven learner (MAML++, first order for
    # 3 meta-steps) the index of each meta-step.
    with jax.enable_x64(True):
        params = {"w": jnp.array([[0.3]]), "b": jnp.array([0.1])}

        def loss_fn(params, batch):
            x, y = batch
            return jnp.mean((jnp.tanh(x @ params["w"] + params["b"]) - y) ** 2)

        if algorithm == "maml":
            learner = maml(loss_fn, inner_lr=0.1, inner_steps=2)
        else:
            learner = metajax.maml_plus_plus(
                loss_fn, initial_lr=0.1, inner_steps=2, first_order_steps=3, per_step=None
            )
        distribution = metajax.SinusoidDistribution()

        def sample_tasks(key):
            tasks = distribution.sample_tasks(key, 4, 5, 5)
            return jax.tree.map(lambda leaf: leaf.astype(jnp.float64), tasks)

        optimizer = optax.sgd(0.05, momentum=0.9)
        key = jax.random.key(3)
        state = init_train_state(learner, optimizer, params, key)
        result = meta_train(
            learner, optimizer, sample_tasks, state, meta_steps=6, steps_per_call=4,
            progress=False,
        )  # fmt: skip

        meta_params, opt_state = learner.init(params), optimizer.init(learner.init(params))
        for step in range(6):
            tasks = sample_tasks(jax.random.fold_in(key, step))
            schedule = (jnp.int32(step),) if learner.uses_meta_step else ()
            _, grads = learner.meta_grad(meta_params, tasks, *schedule)
            updates, opt_state = optimizer.update(grads, opt_state, meta_params)
            meta_params = optax.apply_updates(meta_params, updates)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10),
            result.state.meta_params,
            meta_params,
        )
        if algorithm == "maml++":  # and the schedule mattered: all second order differs
            all_second = metajax.maml_plus_plus(
                loss_fn, initial_lr=0.1, inner_steps=2, per_step=None
            )
            other = meta_train(
                all_second, optimizer, sample_tasks,
                init_train_state(all_second, optimizer, params, key), meta_steps=6,
                progress=False,
            )  # fmt: skip
            assert not np.allclose(
                other.state.meta_params["params"]["w"], meta_params["params"]["w"], rtol=1e-6
            )
