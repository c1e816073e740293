"""MAML++'s multi-step loss (Antoniou et al., 2019): the weights of the query losses after
each inner step, annealed over meta-training towards the last step's alone."""

import jax.numpy as jnp
from jax import Array

MIN_WEIGHT = 0.03
"""The multi-step loss's floor for the weight of a step before the last, times the number of
steps (MAML++'s code: ``0.03 / number_of_steps``)."""


def step_loss_weights(meta_step: Array, inner_steps: int, anneal_steps: int) -> Array:
    """The weights of the query losses after inner steps 1..``inner_steps`` at ``meta_step``.

    They start equal (``1 / N`` each, N the number of inner steps); each weight but the last
    falls linearly by ``1 / N`` over ``anneal_steps`` meta-steps, to no less than ``0.03 / N``,
    and the last takes up what they lose, so they always sum to 1. From meta-step
    ``anneal_steps`` on, the last step's loss alone counts (weights ``[0, ..., 0, 1]``), as in
    MAML++'s code. With ``anneal_steps=0`` the last step's loss alone counts from the start.
    """
    n = inner_steps
    if anneal_steps == 0:
        return last_step_only(n)
    progress = jnp.asarray(meta_step, float) / anneal_steps  # float64 under x64
    earlier = jnp.maximum(1 / n - progress / n, MIN_WEIGHT / n)
    last = jnp.minimum(1 / n + progress * (n - 1) / n, 1 - (n - 1) * MIN_WEIGHT / n)
    weights = jnp.full(n, earlier).at[-1].set(last)
    return jnp.where(meta_step < anneal_steps, weights, last_step_only(n))


def last_step_only(inner_steps: int) -> Array:
    """The weights ``[0, ..., 0, 1]``: the objective after the multi-step loss has annealed."""
    return jnp.zeros(inner_steps).at[-1].set(1.0)
