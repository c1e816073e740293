"""Settings for the whole test suite."""

import jax

# The tests compare numbers to 1e-6; on GPUs float32 matrix products would otherwise run in
# TF32 or bfloat16 passes. (No effect on CPUs.)
jax.config.update("jax_default_matmul_precision", "highest")
