"""Prototypical Networks and ProtoMAML: the prototype layer against the distances it stands for,
both meta-gradients against hand-written objectives, the error on a model without a linear
head, and a run on images through train, resume, eval and the Python API."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from images import alphabets

import metajax
from metajax import LinearHead, OptionError, Task
from metajax.core.linear_head import ABSENT_CLASS_LOGIT, prototype_layer
from metajax.runs import checkpoints


@pytest.fixture
def float64():
    with jax.enable_x64(True):
        yield


WAYS, SHOTS, QUERY, DIM, EMBED = 3, 2, 4, 5, 4


def features(params, inputs):
    return jnp.tanh(inputs @ params["embed"])


def replace(params, weight, bias):
    return {**params, "weight": weight, "bias": bias}


HEAD = LinearHead(features, replace, WAYS)


def loss_fn(params, batch):
    inputs, labels = batch
    logits = features(params, inputs) @ params["weight"] + params["bias"]
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(log_probs[jnp.arange(len(labels)), labels])


def make_problem(seed=0):
    keys = jax.random.split(jax.random.key(seed), 5)
    params = {
        "embed": jax.random.normal(keys[0], (DIM, EMBED)),
        "weight": jax.random.normal(keys[1], (EMBED, WAYS)),
        "bias": jnp.zeros(WAYS),
    }

    def task(key):
        k1, k2 = jax.random.split(key)
        support = (
            jax.random.normal(k1, (WAYS * SHOTS, DIM)),
            jnp.repeat(jnp.arange(WAYS), SHOTS),
        )
        query = (jax.random.normal(k2, (WAYS * QUERY, DIM)), jnp.repeat(jnp.arange(WAYS), QUERY))
        return Task(support=support, query=query)

    tasks = jax.vmap(task)(jax.random.split(keys[2], 4))
    return params, tasks


def hand_written_protonet_loss(params, task):
    """Snell et al.'s loss: softmax over negative squared distances to the class means."""
    (s_inputs, _), (q_inputs, q_labels) = task.support, task.query
    s_features = features(params, s_inputs)
    prototypes = s_features.reshape(WAYS, SHOTS, -1).mean(1)  # labels class by class
    distances = jnp.sum((features(params, q_inputs)[:, None] - prototypes[None]) ** 2, -1)
    log_probs = jax.nn.log_softmax(-distances)
    return -jnp.mean(log_probs[jnp.arange(len(q_labels)), q_labels])


def test_the_prototype_layer_gives_the_distances_probabilities_and_masks_absent_classes(float64):
    z = jax.random.normal(jax.random.key(1), (7, EMBED))
    labels = jnp.array([0, 0, 1, 2, 2, 2, 0])
    weight, bias = prototype_layer(z, labels, 5)  # classes 3 and 4 have no example
    prototypes = np.stack([np.asarray(z)[np.asarray(labels) == k].mean(0) for k in range(3)])
    np.testing.assert_allclose(weight[:, :3], 2 * prototypes.T, rtol=1e-12)
    np.testing.assert_allclose(bias[:3], -np.sum(prototypes**2, -1), rtol=1e-12)
    assert np.all(weight[:, 3:] == 0) and np.all(bias[3:] == ABSENT_CLASS_LOGIT)
    x = jax.random.normal(jax.random.key(2), (6, EMBED))
    distances = np.sum((np.asarray(x)[:, None] - prototypes[None]) ** 2, -1)
    probabilities = jax.nn.softmax(x @ weight + bias)
    np.testing.assert_allclose(probabilities[:, :3], jax.nn.softmax(-distances), rtol=1e-10)
    assert np.all(probabilities[:, 3:] == 0)
    # No NaN flows back from the masked classes.
    grads = jax.grad(lambda z: jax.nn.log_softmax(x @ prototype_layer(z, labels, 5)[0]).sum())(z)
    assert np.isfinite(grads).all()


def test_protonet_meta_gradient_is_the_hand_written_objectives(float64):
    params, tasks = make_problem()
    learner = metajax.protonet(loss_fn, head=HEAD)
    expected = jax.vmap(hand_written_protonet_loss, in_axes=(None, 0))(params, tasks).mean()
    loss, grads = jax.jit(learner.meta_grad)(params, tasks)
    np.testing.assert_allclose(loss, expected, rtol=1e-12)
    want = jax.grad(
        lambda p: jax.vmap(hand_written_protonet_loss, in_axes=(None, 0))(p, tasks).mean()
    )(params)
    np.testing.assert_allclose(grads["embed"], want["embed"], rtol=1e-10, atol=1e-14)
    # The meta-parameters' own last layer is never used: every task replaces it.
    assert np.all(grads["weight"] == 0) and np.all(grads["bias"] == 0)
    # ProtoMAML with no inner step is the same learner.
    proto_maml = metajax.protomaml(loss_fn, head=HEAD, inner_lr=0.1, inner_steps=0)
    np.testing.assert_allclose(proto_maml.meta_loss(params, tasks), expected, rtol=1e-12)


@pytest.mark.parametrize("first_order", [False, True])
def test_protomaml_meta_gradient_is_the_hand_written_objectives(first_order, float64):
    params, tasks = make_problem(3)
    lr, steps = 0.3, 2

    def hand_written(meta_params, task):
        s_inputs = task.support[0]
        s_features = features(meta_params, s_inputs)
        prototypes = s_features.reshape(WAYS, SHOTS, -1).mean(1)  # labels class by class
        adapted = {**meta_params, "weight": 2 * prototypes.T, "bias": -jnp.sum(prototypes**2, 1)}
        for _ in range(steps):
            grads = jax.grad(loss_fn)(adapted, task.support)
            if first_order:
                grads = jax.lax.stop_gradient(grads)
            adapted = jax.tree.map(lambda p, g: p - lr * g, adapted, grads)
        return loss_fn(adapted, task.query)

    def mean_loss(p):
        return jax.vmap(hand_written, in_axes=(None, 0))(p, tasks).mean()

    learner = metajax.protomaml(
        loss_fn, head=HEAD, inner_lr=lr, inner_steps=steps, first_order=first_order
    )
    loss, grads = jax.jit(learner.meta_grad)(params, tasks)
    np.testing.assert_allclose(loss, mean_loss(params), rtol=1e-12)
    want = jax.grad(mean_loss)(params)
    for name in params:
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-9, atol=1e-13)
    assert float(jnp.abs(grads["embed"]).max()) > 1e-3  # through the prototypes, either order
    # The adaptation curve starts at the prototype layer's loss.
    support, query = jax.tree.map(lambda leaf: leaf[0], (tasks.support, tasks.query))
    trajectory = learner.adapt_trajectory(params, support, observe=lambda p: loss_fn(p, query))
    first = jax.tree.map(lambda leaf: leaf[0], tasks)
    np.testing.assert_allclose(trajectory[0], hand_written_protonet_loss(params, first), 1e-12)


@pytest.mark.parametrize("name", ["protonet", "protomaml"])
def test_a_model_without_a_linear_head_is_refused_by_name(name, tmp_path):
    config = metajax.presets("sinusoid")["tutorial"].with_algorithm(name)
    expected = (
        f"`algorithm` must be an algorithm this task family's model supports: {name} sets a "
        "classifier's last layer from class prototypes, so it needs a model that ends in a "
        "linear layer, as the image families' (images, omniglot) does; in Python, pass "
        f"head=metajax.LinearHead(...), got '{name}'"
    )
    with pytest.raises(OptionError) as error:
        metajax.train(config, tmp_path / "run", progress=False, plots=False)
    assert str(error.value) == expected
    assert not (tmp_path / "run").exists()
    with pytest.raises(OptionError, match="needs a model that ends in a linear layer"):
        metajax.protonet(loss_fn, head=None)


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    return alphabets(tmp_path_factory.mktemp("data") / "set", groups=3, characters=4)


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        # Trained on tasks of more classes than it is tested on, as the paper trains.
        ("protonet", {"train_ways": 4}),
        pytest.param(  # the same ground as protonet's run, with MAML's inner loop after it
            "protomaml", {"inner_lr": 0.1, "inner_steps": 1}, marks=pytest.mark.slow
        ),
    ],
)
def test_trains_resumes_bit_for_bit_and_evaluates_on_images(name, changes, image_data, tmp_path):
    small = metajax.presets("images")["default"].replace(
        data=str(image_data), validation_count=3, test_count=3, image_size=16, filters=8,
        ways=3, meta_batch_size=2, meta_steps=4, steps_per_call=2, checkpoint_every=2,
        log_every=1, validation_tasks=0,
    )  # fmt: skip
    config = small.with_algorithm(name).replace(**changes)
    out = tmp_path / name
    metajax.train(config, out, progress=False, plots=name == "protonet")
    if name == "protonet":  # the figures of a learner tested with no steps are drawn too
        assert (out / "adaptation.png").exists()
    copy = tmp_path / "copy"  # as if killed after the checkpoint at meta-step 2
    shutil.copytree(out, copy)
    for file in ("summary.json", "params.eqx"):
        (copy / file).unlink()
    shutil.rmtree(copy / "checkpoints" / "step_000000004")
    assert checkpoints.latest(copy / "checkpoints").step == 2
    metajax.resume(copy, progress=False, plots=False)
    assert (copy / "params.eqx").read_bytes() == (out / "params.eqx").read_bytes()
    # Evaluation of the prototypes (0 steps) agrees with the loaded run's own adaptation.
    report = metajax.evaluate(
        out,
        metajax.EvalSettings(num_tasks=6, shots=(1,), adapt_steps=1, query_shots=2),
        write=False,
    )
    accuracy = report["results"][0]["accuracy_mean"]
    assert len(accuracy) == 2 and all(0 <= a <= 1 for a in accuracy), accuracy
    run = metajax.load(out)
    task = jax.tree.map(lambda leaf: leaf[0], config.task.eval_tasks(jax.random.key(0), 1, 1, 2))
    adapted = run.model(run.adapt(task.support, 0))
    embedding = run.model().features(task.support[0])
    prototypes = np.asarray(embedding)  # one image a class: the prototypes are the embeddings
    logits = np.asarray(adapted(task.query[0]))
    if name == "protonet":  # the head's fourth class is absent from a 3-way task
        assert float(jax.nn.softmax(logits)[:, 3:].max()) < 1e-30
        logits = logits[:, :3]
    query_embedding = np.asarray(run.model().features(task.query[0]))
    distances = np.sum((query_embedding[:, None] - prototypes) ** 2, -1)
    np.testing.assert_allclose(
        jax.nn.softmax(logits), jax.nn.softmax(-distances), rtol=1e-5, atol=1e-7
    )
