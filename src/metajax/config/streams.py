"""The independent random streams of a seed.

Each stream is ``fold_in(jax.random.key(seed), stream)``: the model's initialisation and the
training tasks come from a run's seed; test and validation tasks from an evaluation seed, which
training never uses, so that every run of a family is evaluated on the same held-out tasks.
"""

import functools

import jax

INIT_STREAM, TRAIN_STREAM, TEST_STREAM, VALIDATION_STREAM = range(4)
"""The streams, by what they draw."""


# Compiled, so that a key made outside a trace costs one program, not one for each of the four
# operations that seed and fold it.
@functools.partial(jax.jit, static_argnums=(0, 1))
def stream_key(seed: int, stream: int) -> jax.Array:
    """The key of one of a seed's independent random streams."""
    return jax.random.fold_in(jax.random.key(seed), stream)
