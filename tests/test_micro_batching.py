"""Micro-batching: the meta-gradient of a task batch taken in chunks equals the whole batch's,
for every algorithm, a number of chunks that does not divide the batch is refused, and the
automatic number keeps each device's chunk within 128 tasks on a CPU."""

import jax
import numpy as np
import pytest

import metajax
from metajax.core.micro_batching import automatic_micro_batches, micro_batched
from metajax.runs import run_dir
from metajax.runs.setup import build

ALGORITHMS = {
    "maml": ("maml", {}),
    "reptile": ("reptile", {"inner_steps": 2, "inner_batch_size": 4}),
    # The carried inner state is a mean over the batch's tasks, so over chunks too.
    "reptile-carried": (
        "reptile",
        {"inner_steps": 2, "inner_optimizer": "adam", "carry_inner_state": True},
    ),
    "meta-sgd": ("meta-sgd", {}),
    "anil": ("anil", {}),
    "maml++": ("maml++", {"inner_steps": 2, "anneal_steps": 20, "first_order_steps": 5}),
    "imaml": ("imaml", {"inner_steps": 2, "cg_steps": 3}),
    "pretrain": ("pretrain", {}),
}


@pytest.mark.parametrize("case", list(ALGORITHMS))
def test_chunks_give_the_whole_batchs_meta_loss_and_meta_gradient(case):
    name, changes = ALGORITHMS[case]
    config = metajax.presets("sinusoid")["tutorial"].with_algorithm(name)
    setup = build(config.replace(meta_batch_size=12, **changes))
    meta_params = setup.learner.init(setup.params)
    tasks = setup.sample_tasks(jax.random.key(1))
    schedule = (jax.numpy.int32(3),) if setup.learner.uses_meta_step else ()
    whole = jax.jit(setup.learner.meta_grad)(meta_params, tasks, *schedule)
    for chunks in (3, 12):  # chunks of several tasks, and of one
        chunked = jax.jit(micro_batched(setup.learner, chunks).meta_grad)
        in_chunks = chunked(meta_params, tasks, *schedule)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(b, a, rtol=2e-6, atol=1e-7), whole, in_chunks
        )


def test_one_chunk_is_the_learner_itself_and_errors_name_the_setting():
    setup = build(metajax.presets("sinusoid")["tutorial"])
    learner = setup.learner
    assert micro_batched(learner, 1) is learner
    with pytest.raises(metajax.OptionError, match=r"^`micro_batches` must be an integer >= 1"):
        micro_batched(learner, 0)
    tasks = setup.sample_tasks(jax.random.key(0))
    with pytest.raises(
        metajax.OptionError,
        match=r"^`micro_batches` must be a divisor of the meta-batch's 4 tasks, got 3$",
    ):
        micro_batched(learner, 3).meta_grad(learner.init(setup.params), tasks)
    with pytest.raises(
        metajax.OptionError, match=r"^`micro_batches` must be a divisor of meta_batch_size \(25\)"
    ):
        metajax.presets("sinusoid")["finn2017"].replace(micro_batches=4)


def test_a_micro_batched_run_trains_like_the_whole_batch(tmp_path):
    config = metajax.presets("sinusoid")["tutorial"].replace(
        meta_batch_size=8, meta_steps=40, steps_per_call=20, log_every=10
    )
    metajax.train(config, tmp_path / "whole", progress=False, plots=False)
    metajax.train(config.replace(micro_batches=4), tmp_path / "chunks", progress=False, plots=False)
    whole, chunks = (metajax.load(tmp_path / name).meta_params for name in ("whole", "chunks"))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6), whole, chunks)
    # The default, automatic, takes the batch of 8 whole; the summary says what was chosen.
    assert run_dir.read_json(tmp_path / "whole" / run_dir.SUMMARY)["micro_batches"] == 1
    assert run_dir.read_json(tmp_path / "chunks" / run_dir.SUMMARY)["micro_batches"] == 4


@pytest.mark.parametrize(
    ("meta_batch_size", "devices", "chunks"),
    [
        (25, 1, 1),
        (128, 1, 1),  # within one chunk
        (256, 1, 2),
        (1024, 1, 8),
        (4096, 1, 32),
        (600, 1, 5),  # 4 chunks would hold 150 tasks
        (1024, 8, 1),  # 128 tasks a device
        (4096, 2, 16),
        (1031, 1, 1),  # a prime: only chunks of 1 task, too small to be worth it
        (514, 1, 1),  # 2 x 257: chunks of 257 are too large, of 2 too small
        (2**31 - 1, 1, 1),  # the largest meta-batch, a prime too: found without a long search
    ],
)
def test_automatic_micro_batches_keep_each_devices_chunk_within_128_tasks(
    meta_batch_size, devices, chunks
):
    assert jax.default_backend() == "cpu"
    assert automatic_micro_batches(meta_batch_size, devices) == chunks
    config = metajax.presets("sinusoid")["tutorial"].replace(meta_batch_size=meta_batch_size)
    assert config.training.micro_batches == 0
    assert build(config, devices).micro_batches == chunks
