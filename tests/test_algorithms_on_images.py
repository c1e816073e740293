"""MAML++ and iMAML on the image family too: each trains, resumes bit for bit from a checkpoint
in the middle, and is evaluated. Slow: the quick suite covers the same ground with MAML on
images (test_images.py) and with these algorithms on Conv4 and on sinusoids."""

import shutil
from contextlib import nullcontext

import numpy as np
import pytest
from images import alphabets

import metajax
from metajax.runs import checkpoints

pytestmark = pytest.mark.slow

# The algorithms whose objectives differ most from MAML's, each with its settings exercised
# (ANIL, Reptile and Meta-SGD adapt and train like it, and their own tests run them).
ALGORITHMS = {
    "maml++": {
        "initial_lr": 0.1,
        "inner_steps": 2,
        "anneal_steps": 2,
        "first_order_steps": 1,
        "step_size_lr_scale": 0.1,  # the outer optimizer's state then has a scaled part
    },
    "imaml": {"inner_lr": 0.1, "inner_steps": 2, "cg_steps": 2},
}


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    return alphabets(tmp_path_factory.mktemp("data") / "set", groups=3, characters=4)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_trains_resumes_bit_for_bit_and_evaluates_on_images(name, image_data, tmp_path):
    small = metajax.presets("images")["default"].replace(
        data=str(image_data), validation_count=3, test_count=3, image_size=16, filters=8,
        ways=3, meta_batch_size=2, meta_steps=4, steps_per_call=2, checkpoint_every=2,
        log_every=1, validation_tasks=0,
    )  # fmt: skip
    config = small.with_algorithm(name).replace(**ALGORITHMS[name])
    out = tmp_path / name
    # 0.1 is above the undamped inner loop's stability bound on these images, and said so.
    warns = name == "imaml"
    with pytest.warns(metajax.SettingWarning, match="cannot converge") if warns else nullcontext():
        metajax.train(config, out, progress=False, plots=False)
    # As if killed after the checkpoint at meta-step 2.
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for file in ("summary.json", "params.eqx"):
        (copy / file).unlink()
    shutil.rmtree(copy / "checkpoints" / "step_000000004")
    assert checkpoints.latest(copy / "checkpoints").step == 2
    metajax.resume(copy, progress=False, plots=False)
    assert (copy / "params.eqx").read_bytes() == (out / "params.eqx").read_bytes()
    report = metajax.evaluate(
        out, metajax.EvalSettings(num_tasks=10, adapt_steps=2, query_shots=1), write=False
    )
    accuracy = report["results"][0]["accuracy_mean"]
    assert len(accuracy) == 3 and all(0 <= a <= 1 for a in accuracy), accuracy
    assert np.isfinite(report["results"][0]["loss_mean"]).all()
