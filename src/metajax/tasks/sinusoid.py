"""Sinusoid regression, the task family of Finn et al. (2017), sampled on device."""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from metajax import _validation
from metajax.tasks.task import Task


class Sinusoid(NamedTuple):
    """One sinusoid ``y = amplitude * sin(x + phase)``, or a batch of them (leading axis)."""

    amplitude: Array
    phase: Array

    def __call__(self, x: Array) -> Array:
        """Evaluates a single sinusoid at ``x`` (any shape); ``jax.vmap`` it over a batch."""
        return self.amplitude * jnp.sin(x + self.phase)


Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class SinusoidFamily:
    """The distribution of sinusoid regression tasks.

    A task draws an amplitude and a phase uniformly from their ranges; its support and query
    inputs are drawn independently and uniformly from ``x_range``, and its targets are
    ``amplitude * sin(x + phase)``, without noise. Inputs and targets have shape
    ``[num_points, 1]``.

    Attributes:
      amplitude_range: ``(low, high)`` of the amplitude.
      phase_range: ``(low, high)`` of the phase, in radians.
      x_range: ``(low, high)`` of the inputs.
    """

    amplitude_range: Range = (0.1, 5.0)
    phase_range: Range = (0.0, math.pi)
    x_range: Range = (-5.0, 5.0)

    def __post_init__(self):
        for name in ("amplitude_range", "phase_range", "x_range"):
            object.__setattr__(self, name, _validation.number_range(name, getattr(self, name)))

    def sample_sinusoids(self, key: Array, num_tasks: int) -> Sinusoid:
        """Draws ``num_tasks`` sinusoids; each field has shape ``[num_tasks]``."""
        amplitude_key, phase_key = jax.random.split(key)
        return Sinusoid(
            amplitude=_uniform(amplitude_key, (num_tasks,), self.amplitude_range),
            phase=_uniform(phase_key, (num_tasks,), self.phase_range),
        )

    def sample_inputs(self, key: Array, shape: tuple[int, ...]) -> Array:
        """Draws inputs uniformly from ``x_range``."""
        return _uniform(key, shape, self.x_range)

    def sample_points(
        self, key: Array, sinusoids: Sinusoid, num_points: int
    ) -> tuple[Array, Array]:
        """Draws ``(x, y)`` for given sinusoids (a batch), shapes ``[num_tasks, num_points, 1]``."""
        x = self.sample_inputs(key, (sinusoids.amplitude.shape[0], num_points, 1))
        return x, jax.vmap(Sinusoid.__call__)(sinusoids, x)

    def tasks_for(self, key: Array, sinusoids: Sinusoid, num_support: int, num_query: int) -> Task:
        """Draws support and query points for given sinusoids (a batch, leading axis).

        Returns:
          A task batch whose support is ``(x, y)`` with shapes ``[num_tasks, num_support, 1]``
          and whose query is ``(x, y)`` with shapes ``[num_tasks, num_query, 1]``.
        """
        x, y = self.sample_points(key, sinusoids, num_support + num_query)
        return Task(
            support=(x[:, :num_support], y[:, :num_support]),
            query=(x[:, num_support:], y[:, num_support:]),
        )

    def sample_tasks(self, key: Array, num_tasks: int, num_support: int, num_query: int) -> Task:
        """Draws a batch of tasks: ``tasks_for(x_key, sample_sinusoids(sinusoid_key, ...))``
        with ``sinusoid_key, x_key = jax.random.split(key)``. Pure and jit-able."""
        sinusoid_key, x_key = jax.random.split(key)
        sinusoids = self.sample_sinusoids(sinusoid_key, num_tasks)
        return self.tasks_for(x_key, sinusoids, num_support, num_query)


def _uniform(key: Array, shape: tuple[int, ...], bounds: Range) -> Array:
    return jax.random.uniform(key, shape, minval=bounds[0], maxval=bounds[1])


SINUSOID_PRESETS: dict[str, SinusoidFamily] = {
    # The tutorial "MAML Tutorial with JAX" (Jang, 2019).
    "tutorial": SinusoidFamily(amplitude_range=(0.1, 0.5)),
    # The MAML paper (Finn et al., 2017, section 5.1).
    "finn2017": SinusoidFamily(amplitude_range=(0.1, 5.0)),
}
