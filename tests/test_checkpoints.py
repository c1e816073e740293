"""Checkpoints: exact round trips, atomic writes, the newest few kept, damage named."""

import json
import os
from importlib.metadata import version

import jax
import numpy as np
import pytest
from fakes import line_config

from metajax.runs import checkpoints
from metajax.runs.checkpoints import CheckpointError
from metajax.runs.setup import build


def train_state(width=8, seed=0):
    """A training state of the test-only learned-lr algorithm: meta-parameters with a learned
    step size, Adam's state and a PRNG key."""
    setup = build(line_config(width=width, seed=seed).with_algorithm("learned-lr"))
    state = setup.initial_state
    # Make the optimizer state non-trivial, so that a mix-up of leaves would show.
    grads = jax.tree.map(lambda leaf: leaf * 0.5 + 1.0, state.meta_params)
    _, opt_state = setup.optimizer.update(grads, state.opt_state, state.meta_params)
    return state._replace(opt_state=opt_state, step=state.step + 7)


def assert_same_tree(one, other):
    one_leaves, one_def = jax.tree.flatten(one)
    other_leaves, other_def = jax.tree.flatten(other)
    assert one_def == other_def
    for a, b in zip(one_leaves, other_leaves, strict=True):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_round_trips_every_leaf_exactly(tmp_path):
    state = train_state(seed=3)
    path = checkpoints.save(tmp_path, state, step=7, metadata={"note": [1.5, 2]}, keep=3)
    assert path == tmp_path / "step_000000007"
    assert sorted(entry.name for entry in path.iterdir()) == ["checkpoint.json", "state.eqx"]
    # A state of other values but the same shapes receives the saved one, PRNG key included.
    restored, manifest = checkpoints.load(path, train_state(seed=4))
    assert_same_tree(restored, state)
    assert jax.random.key_impl(restored.key) == jax.random.key_impl(state.key)
    assert manifest["note"] == [1.5, 2]
    assert (manifest["format"], manifest["step"]) == (checkpoints.FORMAT, 7)
    assert manifest["metajax_version"] == version("metajax")


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    state = train_state()
    for step in (0, 10, 20, 30):
        checkpoints.save(tmp_path, state, step=step, metadata={}, keep=2)
    assert [found.step for found in checkpoints.list_complete(tmp_path)] == [20, 30]
    assert checkpoints.latest(tmp_path) == checkpoints.Checkpoint(tmp_path / "step_000000030", 30)
    assert checkpoints.latest(tmp_path / "none") is None


def test_a_write_cut_short_leaves_the_previous_checkpoint_as_the_newest(tmp_path, monkeypatch):
    state = train_state()
    checkpoints.save(tmp_path, state, step=10, metadata={}, keep=3)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.os, "rename", fail)
    with pytest.raises(OSError, match="disk full"):
        checkpoints.save(tmp_path, state, step=20, metadata={}, keep=3)
    partial = [entry.name for entry in tmp_path.iterdir() if entry.name.startswith(".partial-")]
    assert len(partial) == 1 and partial[0].startswith(".partial-step_000000020-")
    assert checkpoints.latest(tmp_path).step == 10
    checkpoints.remove_partial(tmp_path)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["step_000000010"]


@pytest.fixture
def saved(tmp_path):
    state = train_state()
    return checkpoints.save(tmp_path, state, step=7, metadata={}, keep=1), state


def test_a_changed_byte_is_found_and_the_file_named(saved):
    path, state = saved
    data = bytearray((path / "state.eqx").read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one float: it would load as a wrong number
    (path / "state.eqx").write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint file '.*step_000000007/state.eqx' is damaged: its SHA-256 does not "
        r"match the one in '.*step_000000007/checkpoint.json'",
    ):
        checkpoints.load(path, state)


def test_a_truncated_state_file_is_found_and_the_file_named(saved):
    path, state = saved
    data = (path / "state.eqx").read_bytes()
    (path / "state.eqx").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"state.eqx' is damaged: its SHA-256 does not"):
        checkpoints.load(path, state)


def test_a_truncated_manifest_is_found_and_the_file_named(saved):
    path, state = saved
    text = (path / "checkpoint.json").read_text()
    (path / "checkpoint.json").write_text(text[: len(text) // 2])
    with pytest.raises(
        CheckpointError, match=r"checkpoint file '.*checkpoint.json' is damaged: not valid JSON"
    ):
        checkpoints.load(path, state)
    (path / "checkpoint.json").write_text('{"step": 7}')
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint.json' is damaged: it lacks one of format, manifest_sha256, "
        r"state_sha256, step",
    ):
        checkpoints.load(path, state)


def test_a_changed_value_in_the_manifest_is_found(tmp_path):
    state = train_state()
    path = checkpoints.save(tmp_path, state, step=7, metadata={"losses": [0.25, 0.5]}, keep=1)
    manifest = json.loads((path / "checkpoint.json").read_text())
    checkpoints.load(path, state)  # as written, it loads
    manifest["losses"][1] = 0.6
    (path / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint file '.*checkpoint.json' is damaged: its contents do not match its "
        r"manifest_sha256",
    ):
        checkpoints.load(path, state)


@pytest.mark.parametrize("name", ["state.eqx", "checkpoint.json"])
def test_a_missing_file_is_named(saved, name):
    path, state = saved
    (path / name).unlink()
    with pytest.raises(CheckpointError, match=rf"checkpoint file '.*{name}' is missing"):
        checkpoints.load(path, state)


def test_a_checkpoint_of_another_format_is_refused_with_both_versions(saved):
    path, state = saved
    manifest = json.loads((path / "checkpoint.json").read_text())
    manifest.update(format=99, metajax_version="9.9.9")
    (path / "checkpoint.json").write_text(json.dumps(manifest))
    with pytest.raises(
        CheckpointError,
        match=rf"checkpoint '.*step_000000007' was written by metajax 9.9.9 in checkpoint format "
        rf"99; this metajax \({version('metajax')}\) reads format 1",
    ):
        checkpoints.load(path, state)


def test_a_checkpoint_of_another_model_shape_is_refused(saved):
    path, _ = saved
    with pytest.raises(
        CheckpointError, match=r"state.eqx' does not fit this run's state: .*changed shape"
    ):
        checkpoints.load(path, train_state(width=9))


def test_files_are_synced_before_the_rename_makes_them_visible(tmp_path, monkeypatch):
    synced, renamed = [], []
    monkeypatch.setattr(
        checkpoints.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}"))
    )
    real_rename = os.rename
    monkeypatch.setattr(
        checkpoints.os, "rename", lambda a, b: (renamed.append(len(synced)), real_rename(a, b))
    )
    checkpoints.save(tmp_path, train_state(), step=1, metadata={}, keep=1)
    # state.eqx, checkpoint.json and the temporary directory, then the rename, then the parent.
    assert [os.path.basename(path) for path in synced[:2]] == ["state.eqx", "checkpoint.json"]
    assert os.path.basename(synced[2]).startswith(".partial-step_000000001-")
    assert renamed == [3] and synced[3] == str(tmp_path)


def test_bad_keep_counts_and_reserved_metadata_keys_are_refused(tmp_path):
    state = train_state()
    with pytest.raises(ValueError, match=r"`keep` must be an integer >= 1, got 0"):
        checkpoints.save(tmp_path, state, step=1, metadata={}, keep=0)
    with pytest.raises(
        ValueError, match=r"metadata may not use the manifest's own keys: state_sha256, step"
    ):
        checkpoints.save(tmp_path, state, step=1, metadata={"step": 2, "state_sha256": ""}, keep=1)
    assert list(tmp_path.iterdir()) == []
