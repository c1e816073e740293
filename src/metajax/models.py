"""Built-in networks and losses: the MLP of the sinusoid family, the MAML paper's Conv4 and its
convolutions, the mean squared error and the cross-entropy. It may import only
metajax._validation."""

import itertools
from collections.abc import Callable, Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array, lax

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


ConvMethod = Literal["auto", "slices", "lax"]


def conv2d(x: Array, weight: Array, stride: int = 1, *, method: ConvMethod = "auto") -> Array:
    """A 2-D convolution with ``"SAME"`` padding: ``x [batch, height, width, in]`` and
    ``weight [kh, kw, in, out]`` give ``[batch, ceil(height / stride), ceil(width / stride),
    out]``, the numbers of ``lax.conv_general_dilated``.

    Args:
      method: ``"slices"`` writes the convolution as ``kh * kw`` strided slices of ``x``,
        concatenated along the channels and multiplied by the weight as one matrix; its
        derivatives, of any order, are slices, pads and matrix products. On XLA's CPU backend
        this makes MAML's second-order meta-gradient through a Conv4 about 28 times faster than
        ``"lax"`` (``lax.conv_general_dilated``), whose derivatives under ``vmap`` over tasks are
        grouped convolutions (see ``benchmarks/omniglot_throughput.py``). ``"auto"`` takes
        ``"slices"`` on the CPU and ``"lax"`` elsewhere, where convolutions have their own kernels.
    """
    if method == "auto":
        method = "slices" if jax.default_backend() == "cpu" else "lax"
    if method == "lax":
        return lax.conv_general_dilated(
            x, weight, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    if method != "slices":
        raise ValueError(f"`method` must be 'auto', 'slices' or 'lax', got {method!r}")
    kh, kw, channels, features = weight.shape
    _, height, width, _ = x.shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + kh - height, 0)
    pad_w = max((out_w - 1) * stride + kw - width, 0)
    # "SAME" puts the odd pixel of padding after, as XLA does.
    padded = jnp.pad(
        x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    patches = jnp.concatenate(
        [
            padded[
                :,
                i : i + (out_h - 1) * stride + 1 : stride,
                j : j + (out_w - 1) * stride + 1 : stride,
            ]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )
    return patches @ weight.reshape(kh * kw * channels, features)


def batch_norm(x: Array, scale: Array, offset: Array, eps: float = 1e-5) -> Array:
    """Normalises each channel (last axis) by the mean and variance of this batch alone, over
    every other axis, then scales and offsets it. No running averages: a task's statistics are
    its own, in the inner loop and the outer loop alike (as in the MAML paper's code)."""
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    variance = jnp.mean(jnp.square(x - mean), axes)
    return (x - mean) * lax.rsqrt(variance + eps) * scale + offset


Pooling = Literal["stride", "max"]


class Conv4(eqx.Module):
    """The MAML paper's few-shot image classifier: four blocks of 3x3 convolution, batch
    normalisation and ReLU, then a linear head.

    With ``pooling="stride"`` (the paper's Omniglot network) each convolution has stride 2 and
    the head reads the mean of the last block's feature maps; with ``pooling="max"`` (its
    MiniImagenet network) each block ends in 2x2 max-pooling and the head reads the flattened
    maps. Convolutions have no bias: batch normalisation's offset takes its place.

    It maps a batch ``[batch, size, size, channels]`` (values in [0, 1]) to logits
    ``[batch, ways]``; batch normalisation uses that batch's statistics, so apply it to one
    task's whole support or query set, not to single images.

    Attributes:
      kernels: one ``[3, 3, in, filters]`` kernel per block.
      scales, offsets: batch normalisation's ``[filters]`` parameters per block.
      head_weight: ``[features, ways]``.
      head_bias: ``[ways]``.
      pooling: ``"stride"`` or ``"max"``.
      conv: how convolutions are computed (see :func:`conv2d`).
    """

    kernels: tuple[Array, ...]
    scales: tuple[Array, ...]
    offsets: tuple[Array, ...]
    head_weight: Array
    head_bias: Array
    pooling: Pooling = eqx.field(static=True)
    conv: ConvMethod = eqx.field(static=True)

    def __call__(self, x: Array) -> Array:
        return self.features(x) @ self.head_weight + self.head_bias

    def features(self, x: Array) -> Array:
        """What the head reads: ``[batch, features]``, the embedding of a batch of images."""
        stride = 2 if self.pooling == "stride" else 1
        for kernel, scale, offset in zip(self.kernels, self.scales, self.offsets, strict=True):
            x = jax.nn.relu(batch_norm(conv2d(x, kernel, stride, method=self.conv), scale, offset))
            if self.pooling == "max":
                x = _max_pool(x)
        return x.mean((1, 2)) if self.pooling == "stride" else x.reshape(x.shape[0], -1)


def _max_pool(x: Array) -> Array:
    """2x2 max-pooling with stride 2; an odd last row or column is dropped ("VALID")."""
    batch, height, width, channels = x.shape
    x = x[:, : height // 2 * 2, : width // 2 * 2]
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max((2, 4))


def conv4(
    key: Array,
    ways: int,
    *,
    image_size: int = 28,
    channels: int = 1,
    filters: int = 64,
    pooling: Pooling = "stride",
    conv: ConvMethod = "auto",
) -> Conv4:
    """A :class:`Conv4` for ``ways``-way classification of ``[image_size, image_size,
    channels]`` images.

    Kernels and the head are Glorot-uniform (as in the MAML paper's code), batch
    normalisation starts as the identity (scale 1, offset 0) and the head's bias at 0.

    Raises:
      ValueError: if a size is not a positive integer, ``pooling`` is not ``"stride"`` or
        ``"max"``, or max-pooling would shrink the images to nothing.
    """
    ways, image_size, channels, filters = (
        _validation.integer(name, value, 1)
        for name, value in (
            ("ways", ways),
            ("image_size", image_size),
            ("channels", channels),
            ("filters", filters),
        )
    )
    if pooling not in ("stride", "max"):
        raise ValueError(f"`pooling` must be 'stride' or 'max', got {pooling!r}")
    if conv not in ("auto", "slices", "lax"):
        raise ValueError(f"`conv` must be 'auto', 'slices' or 'lax', got {conv!r}")
    side = image_size
    if pooling == "max":
        for _ in range(4):
            side //= 2
        if side == 0:
            raise ValueError(
                f"`image_size` must be at least 16 for max-pooling (four halvings), got "
                f"{image_size}"
            )
    features = filters if pooling == "stride" else filters * side * side
    kernels, head_weight = _init_conv4_params(key, channels, filters, features, ways)
    ones, zeros = jnp.ones(filters), jnp.zeros(filters)
    return Conv4(
        kernels=kernels,
        scales=(ones,) * 4,
        offsets=(zeros,) * 4,
        head_weight=head_weight,
        head_bias=jnp.zeros(ways),
        pooling=pooling,
        conv=conv,
    )


@eqx.filter_jit
def _init_conv4_params(
    key: Array, channels: int, filters: int, features: int, ways: int
) -> tuple[tuple[Array, ...], Array]:
    init = jax.nn.initializers.glorot_uniform(in_axis=(0, 1, 2), out_axis=3)
    keys = jax.random.split(key, 5)
    kernels = tuple(
        init(keys[i], (3, 3, channels if i == 0 else filters, filters)) for i in range(4)
    )
    return kernels, jax.nn.initializers.glorot_uniform()(keys[4], (features, ways))


def cross_entropy(logits: Array, labels: Array) -> tuple[Array, Array]:
    """The mean cross-entropy of ``logits [batch, classes]`` against integer ``labels [batch]``,
    and the accuracy of their arg-max."""
    log_probs = jax.nn.log_softmax(logits)
    loss = -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss, accuracy
