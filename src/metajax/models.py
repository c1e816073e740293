"""Built-in networks and losses."""

import itertools
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from metajax import _validation


class MLP(eqx.Module):
    """A fully connected network with weights stored ``[in, out]``, as stax's ``Dense`` did.

    It maps an input of shape ``[..., in_size]`` to ``[..., out_size]``, so it takes one example
    or a batch; ``jax.vmap`` over examples gives the same matrix products. (Storing weights
    ``[in, out]`` rather than ``equinox.nn.Linear``'s ``[out, in]`` makes MAML's meta-gradient
    about 10% faster on CPU: the batched products need no transposes.)

    Attributes:
      weights: one ``[in, out]`` matrix per layer.
      biases: one ``[out]`` vector per layer.
      activation: applied after every layer but the last.
    """

    weights: tuple[Array, ...]
    biases: tuple[Array, ...]
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __call__(self, x: Array) -> Array:
        for weight, bias in zip(self.weights[:-1], self.biases[:-1], strict=True):
            x = self.activation(x @ weight + bias)
        return x @ self.weights[-1] + self.biases[-1]


def mlp(
    key: Array,
    sizes: Sequence[int] = (1, 40, 40, 1),
    activation: Callable[[Array], Array] = jax.nn.relu,
) -> MLP:
    """The network of the MAML sinusoid experiments: by default 1 -> 40 -> 40 -> 1 with ReLU.

    Weights are Glorot-normal (truncated normal, fan-average scaling) and biases are normal with
    standard deviation 0.01: the defaults of ``jax.example_libraries.stax.Dense``, where the
    tutorial's ``jax.experimental.stax`` lives on. (The stax of 2019 drew untruncated normal
    weights of twice this variance.)

    Args:
      key: PRNG key for the initial parameters.
      sizes: the input size, the hidden sizes and the output size.
      activation: the hidden layers' nonlinearity.

    Returns:
      An :class:`MLP`.

    Raises:
      ValueError: if ``sizes`` has fewer than two entries or a size is not a positive integer.
    """
    sizes = _validation.sizes("sizes", sizes, min_length=2)
    weights, biases = _init_mlp_params(key, sizes)
    return MLP(weights=weights, biases=biases, activation=activation)


@eqx.filter_jit  # one compiled call instead of a dozen separately compiled initialiser ops
def _init_mlp_params(
    key: Array, sizes: tuple[int, ...]
) -> tuple[tuple[Array, ...], tuple[Array, ...]]:
    weight_init = jax.nn.initializers.glorot_normal()
    bias_init = jax.nn.initializers.normal(stddev=1e-2)
    shapes = list(itertools.pairwise(sizes))
    keys = jax.random.split(key, (len(shapes), 2))
    weights = tuple(weight_init(k[0], shape) for k, shape in zip(keys, shapes, strict=True))
    biases = tuple(bias_init(k[1], (shape[1],)) for k, shape in zip(keys, shapes, strict=True))
    return weights, biases


def mse_loss(model: Callable[[Array], Array], batch: tuple[Array, Array]) -> Array:
    """Mean squared error of a one-example-in, one-out ``model`` on ``batch = (x, y)``.

    ``x`` has shape ``[num_points, in_size]`` and ``y`` has shape ``[num_points, out_size]``.
    """
    x, y = batch
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)
