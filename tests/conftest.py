"""Settings and fixtures for the whole test suite."""

import gc
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

# Many tests compile the same training programs (meta_train compiles ahead of time on every
# call); a compilation cache for the session, shared with the metajax subprocesses, loads them
# instead. The cache key is the program itself, so results are the same bits.
_CACHE = tempfile.TemporaryDirectory(prefix="metajax-tests-jax-cache-")
jax.config.update("jax_compilation_cache_dir", _CACHE.name)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE.name
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
# Decoded image sets are cached here, not in the user's ~/.cache.
_IMAGE_CACHE = tempfile.TemporaryDirectory(prefix="metajax-tests-image-cache-")
os.environ["METAJAX_CACHE"] = _IMAGE_CACHE.name


@pytest.fixture(scope="module", autouse=True)
def release_compiled_code():
    """Frees each module's compiled programs when it ends. XLA:CPU maps memory for every
    compiled kernel, and a process may hold only vm.max_map_count (65530) mappings: the whole
    suite in one process reached that limit and crashed in the next compilation or cache load
    (17,260 mappings after the first five modules without this; 585 with it)."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def child_env(tmp_path_factory):
    """The environment of a metajax subprocess: this suite's matmul precision (so its numbers
    compare exactly) and compilation cache, and the test-only family and algorithm installed
    as a plugin, the way a user's package would add them."""
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
