"""Checkpoints of a pytree: written atomically, verified when read, only the newest few kept.

A checkpoint is a directory ``step_<step>`` holding two files:

- ``state.eqx``: the pytree's arrays, written by ``equinox.tree_serialise_leaves``;
- ``checkpoint.json``: the step, the format version, the SHA-256 of ``state.eqx``, whatever
  metadata the caller adds (a run's resolved config, its recent losses), and a SHA-256 of all
  of that.

Why equinox's serialisation rather than orbax-checkpoint: a meta-training state is one small,
replicated pytree, and equinox (already a dependency, and how ``params.eqx`` is saved) writes it
as a single stream of ``.npy`` arrays that we can fsync and rename ourselves. Orbax would add
tensorstore and background threads, and its asynchronous saves would have to be waited on
before a signal handler may let the process exit. ``.npy`` has no checksum, so a SHA-256 in the
manifest catches damaged bytes that would otherwise load as wrong numbers (and one of the
manifest's own entries catches a changed digit in its metadata).

Atomicity: both files are written, flushed and fsynced inside a hidden temporary directory,
which is then renamed to its final name (and the parent directory fsynced). A process killed
at any moment leaves either a complete checkpoint or a hidden temporary directory, which
:func:`latest` ignores and :func:`remove_partial` deletes.
"""

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from metajax._files import write_synced
from metajax.runs.run_dir import RunDirError

FORMAT = 1
"""The version of the checkpoint layout; a checkpoint of another version is refused."""

STATE_FILE = "state.eqx"
MANIFEST_FILE = "checkpoint.json"
_NAME = re.compile(r"step_(\d+)")
_PARTIAL_PREFIX = ".partial-"
_RESERVED = {"format", "metajax_version", "step", "state_sha256", "manifest_sha256"}


class CheckpointError(RunDirError):
    """A checkpoint that is damaged, truncated or from an incompatible version of metajax."""


class Checkpoint(NamedTuple):
    """A complete checkpoint on disk: its directory and the step it was taken at."""

    path: Path
    step: int


def directory_name(step: int) -> str:
    return f"step_{step:09d}"


def save(
    directory: str | os.PathLike, tree: Any, *, step: int, metadata: dict[str, Any], keep: int
) -> Path:
    """Writes ``tree`` as the checkpoint of ``step`` in ``directory``; keeps the newest ``keep``.

    Args:
      directory: where checkpoints live; created if missing.
      tree: any pytree of arrays; typed PRNG keys are saved as their raw key data.
      step: the step the checkpoint belongs to.
      metadata: JSON-ready values to store alongside (``checkpoint.json``).
      keep: how many checkpoints to keep, counting this one; older ones are deleted.

    Returns:
      The checkpoint's directory.
    """
    if not isinstance(keep, int) or keep < 1:
        raise ValueError(f"`keep` must be an integer >= 1, got {keep!r}")
    reserved = sorted(set(metadata) & _RESERVED)
    if reserved:
        raise ValueError(f"metadata may not use the manifest's own keys: {', '.join(reserved)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree, filter_spec=_serialise_leaf)
    state_bytes = buffer.getvalue()
    manifest = {
        "format": FORMAT,
        "metajax_version": version("metajax"),
        "step": step,
        "state_sha256": hashlib.sha256(state_bytes).hexdigest(),
        **metadata,
    }
    manifest["manifest_sha256"] = _manifest_sha256(manifest)
    prefix = f"{_PARTIAL_PREFIX}{directory_name(step)}-"
    partial = Path(tempfile.mkdtemp(prefix=prefix, dir=directory))
    manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode()
    write_synced(partial / STATE_FILE, lambda file: file.write(state_bytes))
    write_synced(partial / MANIFEST_FILE, lambda file: file.write(manifest_bytes))
    _fsync_directory(partial)
    final = directory / directory_name(step)
    if final.exists():  # only if a run is resumed from a copy that lacked this checkpoint
        shutil.rmtree(final)
    os.rename(partial, final)
    _fsync_directory(directory)
    for old in list_complete(directory)[:-keep]:
        shutil.rmtree(old.path)
    return final


def list_complete(directory: str | os.PathLike) -> list[Checkpoint]:
    """The complete checkpoints in ``directory``, oldest first (none if it does not exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append(Checkpoint(entry, int(match.group(1))))
    return sorted(found, key=lambda checkpoint: checkpoint.step)


def latest(directory: str | os.PathLike) -> Checkpoint | None:
    """The newest complete checkpoint in ``directory``, or ``None``."""
    complete = list_complete(directory)
    return complete[-1] if complete else None


def remove_partial(directory: str | os.PathLike) -> None:
    """Deletes the temporary directories of checkpoint writes that were interrupted."""
    directory = Path(directory)
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.name.startswith(_PARTIAL_PREFIX):
                shutil.rmtree(entry)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The verified manifest (``checkpoint.json``, with the caller's metadata) of the
    checkpoint in ``path``, without reading its arrays.

    Raises:
      CheckpointError: naming the file, if it is missing, truncated or damaged, or the
        checkpoint has another format version.
    """
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file '{manifest_path}' is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"checkpoint file '{manifest_path}' is damaged: not valid JSON ({error})"
        ) from None
    required = {"format", "step", "state_sha256", "manifest_sha256"}
    if not isinstance(manifest, dict) or not required <= set(manifest):
        raise CheckpointError(
            f"checkpoint file '{manifest_path}' is damaged: it lacks one of "
            f"{', '.join(sorted(required))}"
        )
    if manifest["format"] != FORMAT:
        raise CheckpointError(
            f"checkpoint '{path}' was written by metajax {manifest.get('metajax_version', '?')} "
            f"in checkpoint format {manifest['format']!r}; this metajax ({version('metajax')}) "
            f"reads format {FORMAT}. Resume it with the metajax version that wrote it"
        )
    if _manifest_sha256(manifest) != manifest["manifest_sha256"]:
        raise CheckpointError(
            f"checkpoint file '{manifest_path}' is damaged: its contents do not match its "
            "manifest_sha256"
        )
    return manifest


def load(path: str | os.PathLike, like: Any) -> tuple[Any, dict[str, Any]]:
    """Reads the checkpoint in ``path`` into a pytree shaped like ``like``.

    Returns:
      The pytree and the manifest (see :func:`read_manifest`).

    Raises:
      CheckpointError: naming the file, if either file is missing, truncated or damaged, the
        checkpoint has another format version, or its arrays do not fit ``like``.
    """
    path = Path(path)
    manifest = read_manifest(path)
    manifest_path = path / MANIFEST_FILE
    state_path = path / STATE_FILE
    try:
        state_bytes = state_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file '{state_path}' is missing") from None
    if hashlib.sha256(state_bytes).hexdigest() != manifest["state_sha256"]:
        raise CheckpointError(
            f"checkpoint file '{state_path}' is damaged: its SHA-256 does not match the one in "
            f"'{manifest_path}'"
        )
    try:
        tree = eqx.tree_deserialise_leaves(
            io.BytesIO(state_bytes), like, filter_spec=_deserialise_leaf
        )
    except Exception as error:  # numpy and equinox raise many kinds on arrays that do not fit
        raise CheckpointError(
            f"checkpoint file '{state_path}' does not fit this run's state: {error}"
        ) from None
    return tree, manifest


def _manifest_sha256(manifest: dict[str, Any]) -> str:
    """The SHA-256 of the manifest's other entries, as canonical JSON (Python's JSON writes
    floats so that they read back exactly, so a manifest read back hashes the same)."""
    others = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    return hashlib.sha256(json.dumps(others, sort_keys=True).encode()).hexdigest()


def _is_key(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _serialise_leaf(file: BinaryIO, leaf: Any) -> None:
    if _is_key(leaf):  # .npy cannot hold typed keys: save their raw data
        leaf = jax.random.key_data(leaf)
    eqx.default_serialise_filter_spec(file, leaf)


def _deserialise_leaf(file: BinaryIO, like: Any) -> Any:
    if _is_key(like):
        data = jnp.asarray(np.load(file))
        if data.shape != jax.random.key_data(like).shape:
            raise ValueError(f"a PRNG key of data shape {data.shape} does not fit {like.shape}")
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(like))
    return eqx.default_deserialise_filter_spec(file, like)


def _fsync_directory(path: Path) -> None:
    """Makes a rename or a new entry in ``path`` durable (a no-op where it is not supported)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
