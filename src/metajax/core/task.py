"""The record every task family produces and every algorithm consumes."""

from typing import Any, NamedTuple


class Task(NamedTuple):
    """One few-shot task, or a batch of them.

    A task pairs a *support* set, on which the inner loop adapts, with a *query* set, on which
    the adapted parameters are scored. Both are whatever pytree the loss function takes as its
    ``batch`` argument; for sinusoid regression each is a pair ``(x, y)`` of arrays of shape
    ``[num_points, 1]``. A *task batch* is the same record with a leading task axis on every
    leaf, so ``jax.vmap`` over a task batch yields single tasks.

    Attributes:
      support: the examples the learner adapts on.
      query: the held-out examples of the same task that the adapted learner is scored on.
    """

    support: Any
    query: Any
