"""Settings and fixtures for the whole test suite."""

import os
import subprocess
import sys

import jax
import pytest

# The tests compare numbers to 1e-6; on GPUs float32 matrix products would otherwise run in
# TF32 or bfloat16 passes. (No effect on CPUs.)
jax.config.update("jax_default_matmul_precision", "highest")


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
