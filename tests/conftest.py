"""Settings and fixtures for the whole test suite."""

import os
import subprocess
import sys
import tempfile

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


@pytest.fixture
def run_metajax():
    """Runs the metajax command in a fresh process, as a user would; returns the result."""

    def run(*args: str) -> subprocess.CompletedProcess:
        # The subprocess uses this suite's matmul precision, so its numbers compare exactly.
        env = {**os.environ, "JAX_DEFAULT_MATMUL_PRECISION": "highest"}
        return subprocess.run(
            [sys.executable, "-m", "metajax", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    return run
