"""Settings and fixtures for the whole test suite."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import fakes  # registers the test-only task family "lines" and algorithm "learned-lr"
import jax
import pytest

# The tests compare numbers to 1e-6; on GPUs float32 matrix products would otherwise run in
# TF32 or bfloat16 passes. (No effect on CPUs.)
jax.config.update("jax_default_matmul_precision", "highest")

# No persistent compilation cache, though many tests compile the same programs: XLA:CPU
# crashes now and then when it deserializes a cached executable (a segfault and an abort in
# backend.deserialize_executable, two CI runs of this suite), and a test run must not.
jax.config.update("jax_enable_compilation_cache", False)
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"  # and the metajax subprocesses
# Decoded image sets are cached here, not in the user's ~/.cache.
_IMAGE_CACHE = tempfile.TemporaryDirectory(prefix="metajax-tests-image-cache-")
os.environ["METAJAX_CACHE"] = _IMAGE_CACHE.name


@pytest.fixture(scope="session")
def child_env(tmp_path_factory):
    """The environment of a metajax subprocess: this suite's matmul precision (so its numbers
    compare exactly), and the test-only family and algorithm installed as a plugin, the way a
    user's package would add them."""
    plugin = fakes.plugin_path(Path(tmp_path_factory.mktemp("plugin")))
    return {
        **os.environ,
        "JAX_DEFAULT_MATMUL_PRECISION": "highest",
        "PYTHONPATH": os.pathsep.join(filter(None, [plugin, os.environ.get("PYTHONPATH")])),
    }


@pytest.fixture
def run_metajax(child_env):
    """Runs the metajax command in a fresh process, as a user would; returns the result."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "metajax", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=child_env,
        )

    return run


@pytest.fixture
def count_compilations():
    """``count(function, *args)``: how many times XLA compiles while ``function(*args)`` runs
    (by JAX's monitoring events)."""

    def count(function, *args):
        compiled = []

        def listener(name, duration, **kwargs):
            if name == "/jax/core/compile/backend_compile_duration":
                compiled.append(name)

        jax.monitoring.register_event_duration_secs_listener(listener)
        try:
            jax.block_until_ready(function(*args))
        finally:
            jax.monitoring.unregister_event_duration_listener(listener)
        return len(compiled)

    return count
