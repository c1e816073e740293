"""The image families: splits, their checks, runs, resuming, validation and ``metajax adapt``."""

import csv
import json
import re
import shutil

import jax
import numpy as np
import pytest
from images import (
    OMNIGLOT,
    alphabets,
    class_image,
    small_config,
    train_image_run,
    write_image_folders,
    write_task,
)
from PIL import Image

import metajax
from metajax import DataError, ImageClassification
from metajax.cli import main
from metajax.config.streams import VALIDATION_STREAM, stream_key
from metajax.evaluation import predict
from metajax.runs import checkpoints, metrics


def family(data, **changes):
    settings = {"validation_count": 3, "test_count": 3, "image_size": 16, "filters": 8, "ways": 3}
    return ImageClassification(data=str(data), **{**settings, **changes})


def test_splits_by_class_and_by_group(tmp_path):
    root = alphabets(tmp_path / "set", groups=3, characters=4)
    splits = family(root).splits()
    assert splits.test.classes == ("alphabet2/character01", "alphabet2/character02",
                                   "alphabet2/character03")  # fmt: skip
    assert splits.validation.classes == ("alphabet1/character02", "alphabet1/character03",
                                         "alphabet2/character00")  # fmt: skip
    assert len(splits.train.classes) == 6 and splits.train.classes[0] == "alphabet0/character00"
    by_group = family(root, split="groups", validation_count=1, test_count=1).splits()
    assert {by_group.train.groups, by_group.validation.groups, by_group.test.groups} == {
        ("alphabet0",) * 4,
        ("alphabet1",) * 4,
        ("alphabet2",) * 4,
    }
    assert by_group.test.groups == ("alphabet2",) * 4
    record = family(root).prepare()
    assert record["test_classes"] == list(splits.test.classes)
    assert record["train_images"] == 36 and not any("overlap" in key for key in record)


def test_test_data_are_the_test_split_when_training_has_none_of_their_classes(tmp_path):
    train = alphabets(tmp_path / "train", groups=2, characters=4)
    test = write_image_folders(
        tmp_path / "test",
        {f"{g}/character{c:02d}": 6 for g in ("other", "new") for c in range(3)},
        first_label=8,
    )
    splits = family(train, test_data=str(test), test_count=0).splits()
    assert splits.test.classes == (
        "new/character00", "new/character01", "new/character02",
        "other/character00", "other/character01", "other/character02",
    )  # fmt: skip
    assert splits.overlaps == ()
    assert len(splits.train.classes) == 5 and len(splits.validation.classes) == 3


def test_data_that_cannot_make_the_tasks_is_refused_with_the_reason(tmp_path):
    root = alphabets(tmp_path / "set", groups=3, characters=4)
    message = (
        "the validation split has 3 classes (set with --validation-count), fewer than the 4 of a "
        "4-way task; lower --ways or give more classes"
    )
    with pytest.raises(DataError, match=re.escape(message) + "$"):  # and no other advice
        family(root, ways=4).prepare()
    with pytest.raises(
        DataError, match=re.escape("the train split has 4 classes, fewer than the 7")
    ):
        family(root, ways=7, validation_count=0, test_count=8).prepare()
    # Rotations make four classes of each training class.
    family(root, ways=7, validation_count=0, test_count=8, rotations=True).prepare()
    few = write_image_folders(tmp_path / "few", {"a": 6, "b": 2, "c": 6, "d": 6})
    message = (
        "class 'b' has 2 images, fewer than the 3 a task takes from each class (shots + query "
        "shots); lower --shots or --query-shots, or remove the class"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        family(few, ways=2, shots=2, validation_count=0, test_count=0).prepare()
    with pytest.raises(DataError, match=re.escape(f"'{root}' has 12 classes, too few to hold out")):
        family(root, validation_count=6, test_count=6).prepare()
    with pytest.raises(DataError, match=re.escape("the images family needs its images: give --")):
        ImageClassification().prepare()


def test_validation_tasks_without_validation_classes_are_refused_before_writing(tmp_path, capsys):
    root = alphabets(tmp_path / "set", groups=3, characters=4)
    config = small_config(root, validation_count=0)
    out = tmp_path / "run"
    message = (
        "the validation split has 0 classes (set with --validation-count), fewer than the 3 of a "
        "3-way task; lower --ways or give more classes; or ask for no validation tasks "
        "(metajax train: --validation-tasks 0; metajax eval: give --inner-lr LR rather than "
        "tuning it)"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        metajax.train(config, out, progress=False)
    assert not out.exists()
    metajax.train(
        config.replace(validation_tasks=0, meta_steps=2), out, progress=False, plots=False
    )
    assert metrics.read(out / "metrics.jsonl", ("step",), validation=True) == []
    # eval's choice of a step size on validation tasks gets the same advice, and it works.
    tuned = ["eval", str(out), "--num-tasks", "2", "--shots", "1", "--query-shots", "1"]
    tuned.append("--no-plots")
    assert main([*tuned, "--tune-inner-lr"]) == 1
    assert capsys.readouterr().err == f"metajax: error: {message}\n"
    assert main([*tuned, "--inner-lr", "0.1"]) == 0


def test_evaluation_with_more_shots_than_a_class_holds_is_refused(tmp_path):
    root = alphabets(tmp_path / "set", groups=3, characters=4, images=6)
    config = family(root, ways=3)
    with pytest.raises(DataError, match=re.escape("has 6 images, fewer than the 20")):
        config.eval_tasks(jax.random.key(0), 2, 5, 15)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    return train_image_run(tmp_path_factory)


def test_a_run_records_its_data_and_scores_validation_tasks(image_run):
    config, out = image_run
    data = json.loads((out / "data.json").read_text())
    assert data == config.task.prepare()
    validation = metrics.read(out / "metrics.jsonl", ("step",), validation=True)
    assert [r["step"] for r in validation] == [10, 20, 30]
    assert all(0 <= r["validation_accuracy"] <= 1 and r["validation_loss"] > 0 for r in validation)
    # The scores are the mean over the validation tasks after the training's inner step.
    run = metajax.load(out)
    tasks = config.task.validation_tasks(stream_key(0, VALIDATION_STREAM), 4, 1, 1)
    accuracies = []
    for i in range(4):
        task = jax.tree.map(lambda x, i=i: x[i], tasks)
        accuracies.append(run.loss_fn(run.adapt(task.support), task.query)[1]["accuracy"])
    np.testing.assert_allclose(
        validation[-1]["validation_accuracy"], np.mean(accuracies), rtol=1e-6
    )
    training = metrics.read(out / "metrics.jsonl", ("step", "meta_loss", "accuracy"))
    assert [r["step"] for r in training] == list(range(3, 31, 3))


def test_a_resumed_image_run_is_the_same_bit_for_bit(image_run, tmp_path):
    _, out = image_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    # As if killed after the checkpoint at 20 (not a multiple of log_every, 3).
    for name in ("summary.json", "params.eqx"):
        (copy / name).unlink()
    shutil.rmtree(copy / "checkpoints" / "step_000000030")
    assert checkpoints.latest(copy / "checkpoints").step == 20
    metajax.resume(copy, progress=False, plots=False)
    assert (copy / "params.eqx").read_bytes() == (out / "params.eqx").read_bytes()
    assert (copy / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()


def test_resuming_on_other_data_is_refused(image_run, tmp_path):
    _, out = image_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "summary.json").unlink()
    data = json.loads((copy / "data.json").read_text())
    data["train_images"] += 1
    (copy / "data.json").write_text(json.dumps(data))
    with pytest.raises(metajax.RunDirError, match="the data differs from what"):
        metajax.resume(copy, progress=False, plots=False)


def test_eval_on_other_test_data_refuses_classes_training_has_unless_told(
    image_run, tmp_path, capsys
):
    config, out = image_run
    other = write_image_folders(
        tmp_path / "other",
        {name: 6 for name in ("alphabet0/character00", "x/c1", "x/c2", "x/c3")},
        first_label=30,
    )
    command = ["eval", str(out), "--test-data", str(other), "--num-tasks", "4", "--shots", "1"]
    command += ["--query-shots", "1", "--no-plots"]
    assert main([*command, "--out", str(tmp_path / "refused")]) == 1
    assert capsys.readouterr().err.startswith(
        f"metajax: error: the test data '{other}' share 1 of 4 classes (0 of 24 images) with the "
        f"data '{config.task.data}': 'alphabet0/character00' (training class "
        "'alphabet0/character00': the same name); "
    )
    assert not (tmp_path / "refused").exists()
    reports = {}
    for policy in ("keep", "drop"):
        assert main([*command, "--test-overlap", policy, "--out", str(tmp_path / policy)]) == 0
        reports[policy] = json.loads((tmp_path / policy / "eval.json").read_text())
        shown = capsys.readouterr().out
        line = (
            "not held out: 1 of the 4 test classes (0 of 24 images) are training classes, kept "
            "by --test-overlap keep (test_overlap in eval.json)"
        )
        assert (line in shown) == (policy == "keep")
    kept = reports["keep"]["test_overlap"]
    assert (kept["classes"], kept["of_classes"], kept["policy"]) == (1, 4, "kept")
    assert kept["shared"][0]["name"] == "alphabet0/character00"
    assert "test_overlap" not in reports["drop"]
    assert reports["keep"]["settings"]["test_data"] == str(other)
    # The dropped pool is 3 classes, so each 3-way task is those 3: another score than kept's.
    assert reports["keep"]["results"] != reports["drop"]["results"]


def test_metajax_adapt_classifies_new_images_end_to_end(image_run, tmp_path, run_metajax):
    _, out = image_run
    write_task(tmp_path, {"left": 30, "middle": 31, "right": 32}, 3, 2)
    result = run_metajax(
        "adapt", str(out), "--support", str(tmp_path / "support"),
        "--query", str(tmp_path / "query"), "--out", str(tmp_path / "p.csv"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [row["image"] for row in rows] == [
        f"{n}_{i}.png" for n in ("left", "middle", "right") for i in range(2)
    ]
    for row in rows:
        probabilities = [float(row[c]) for c in ("left", "middle", "right")]
        np.testing.assert_allclose(sum(probabilities), 1, atol=1e-5)
        assert row["label"] == max(("left", "middle", "right"), key=lambda c: float(row[c]))
        assert float(row["probability"]) == max(probabilities)
        printed = [row["image"], row["label"], f"{float(row['probability']):.3f}"]
        assert printed in [line.split() for line in result.stdout.splitlines()]
    # The Python API gives the same predictions, and JSON the same values.
    found = predict.adapt_and_predict(out, tmp_path / "support", tmp_path / "query")
    assert [p.label for p in found] == [row["label"] for row in rows]
    predict.write_predictions(tmp_path / "p.json", found)
    written = json.loads((tmp_path / "p.json").read_text())
    assert [w["probability"] for w in written] == pytest.approx(
        [float(row["probability"]) for row in rows], abs=1e-6
    )


def test_the_cli_names_bad_data(tmp_path, run_metajax):
    root = write_image_folders(tmp_path / "set", {"a": 4, "b": 4, "c": 4})
    (root / "b" / "002.png").write_bytes(b"broken")
    result = run_metajax("train", "images", "--data", str(root), "--out", str(tmp_path / "run"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"metajax: error: cannot read image '{root}/b/002.png'")
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.slow
@pytest.mark.skipif(
    not OMNIGLOT.is_dir(), reason="the Omniglot subsets are not next to this checkout"
)
def test_a_short_run_on_real_omniglot_is_well_above_chance(tmp_path):
    config = metajax.presets("omniglot")["small-5way"].replace(
        data=str(OMNIGLOT / "images_background_small1.zip"),
        test_data=str(OMNIGLOT / "images_background_small2_heldout.zip"),
        meta_steps=300,
        meta_batch_size=8,
        checkpoint_every=300,
        validation_tasks=0,
    )
    metajax.train(config, tmp_path / "run", progress=False, plots=False)
    settings = metajax.EvalSettings(num_tasks=100, shots=(1,), adapt_steps=1)
    report = metajax.evaluate(tmp_path / "run", settings, plots=False)
    (result,) = report["results"]
    assert result["accuracy_mean"][0] == pytest.approx(0.2, abs=0.05)  # chance, before adapting
    assert result["accuracy_mean"][1] > 0.6  # 5-way: chance is 0.2


def test_metajax_data_uses_folders_already_in_place(tmp_path, run_metajax):
    for folder in ("images_background", "images_evaluation"):
        alphabets(tmp_path / "omniglot" / folder, groups=1, characters=1, images=1)
    result = run_metajax("data", "omniglot", str(tmp_path / "omniglot"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"metajax: {tmp_path}/omniglot/images_background, {tmp_path}/omniglot/images_evaluation "
        "ready",
        f"metajax: train with: metajax train omniglot --data {tmp_path}/omniglot",
    ]


def test_the_paper_presets_split_full_omniglot_as_the_maml_paper(tmp_path):
    # Omniglot's shape: 964 characters of 30 alphabets in images_background, 659 of 20 in
    # images_evaluation (two tiny images each here, where the real ones have 20).
    root = tmp_path / "omniglot"
    for folder, groups, characters, first in (
        ("images_background", 30, 964, 0),
        ("images_evaluation", 20, 659, 964),
    ):
        for c in range(first, first + characters):
            alphabet = (c - first) % groups + (30 if first else 0)
            path = root / folder / f"alphabet{alphabet:02d}" / f"character{c:04d}"
            path.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(class_image(c, i, 12)).save(path / f"{i}.png")
    for name in ("paper-5way", "paper-20way"):
        config = metajax.presets("omniglot")[name].replace(data=str(root))
        splits = config.task.splits()
        assert [len(getattr(splits, s).classes) for s in ("train", "validation", "test")] == [
            1100,
            100,
            423,
        ]
        # The first 1200 characters (all of images_background, then evaluation's) train and
        # validate; the other 423 test; rotations make 4400 training classes.
        assert all(c.startswith("images_evaluation/") for c in splits.test.classes)
        assert config.task.pool("train").num_classes == 4400
        assert config.task.pool("test").num_classes == 423
