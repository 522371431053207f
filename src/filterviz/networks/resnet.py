"""ResNet50 (Keras applications' v1, no top) as a Flax linen module with Keras' layer names.

Every layer Keras names has its output here under the same name (``conv1_relu``, ``conv3_block4_out``,
``conv4_block2_2_bn`` ...), computed in Keras' own layer order and stopping at the deepest one asked for.
Batch normalisation runs in inference mode from the stored moving statistics, as Keras does with
``training=False``: ``x * (gamma / sqrt(var + eps)) + (beta - mean * gamma / sqrt(var + eps))``.

Shapes: ``float32[N, H, W, 3]`` caffe-preprocessed images -> ``{layer: float32[N, h, w, C]}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from filterviz.core.network import Layer, Network, Params, WeightsSource
from filterviz.core.relu import relu
from filterviz.networks.layers import conv2d, flip_kernel

BN_EPSILON = 1.001e-5
STACKS = (("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2))
"""(name, bottleneck filters, blocks, stride of the first block) of ResNet50's four stacks."""


class Conv(nn.Module):
    """Keras ``Conv2D(features, size, strides)`` with a bias, 'valid' padding (or 'same' for the 3x3 ones)."""

    features: int
    size: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.glorot_uniform(), (self.size, self.size, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        # Present when the params went through prepare (the engine does, once per loop).
        flipped = (
            self.get_variable("params", "kernel_flipped")
            if self.has_variable("params", "kernel_flipped")
            else None
        )
        padding = "SAME" if self.size == 3 else "VALID"  # Keras pads conv1 and pool1 explicitly
        return conv2d(x, kernel, flipped, stride=self.stride, padding=padding) + bias.astype(x.dtype)


class FrozenBatchNorm(nn.Module):
    """Keras ``BatchNormalization`` in inference mode; params ``gamma``, ``beta``, ``moving_mean``,
    ``moving_variance`` (the names and order Keras stores)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = (x.shape[-1],)
        gamma = self.param("gamma", nn.initializers.ones, channels)
        beta = self.param("beta", nn.initializers.zeros, channels)
        mean = self.param("moving_mean", nn.initializers.zeros, channels)
        variance = self.param("moving_variance", nn.initializers.ones, channels)
        scale = gamma * lax.rsqrt(variance + BN_EPSILON)
        return x * scale.astype(x.dtype) + (beta - mean * scale).astype(x.dtype)


def _pad(x: jax.Array, amount: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (amount, amount), (amount, amount), (0, 0)))


def _max_pool3x3s2(x: jax.Array) -> jax.Array:
    # 3x3 max-pool, stride 2, 'valid': the max of nine strided slices, whose gradient XLA fuses
    # (reduce_window's select-and-scatter runs as a slow loop on CPU).
    height, width = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    slices = [
        x[:, dy : dy + 2 * (height - 1) + 1 : 2, dx : dx + 2 * (width - 1) + 1 : 2, :]
        for dy in range(3)
        for dx in range(3)
    ]
    out = slices[0]
    for piece in slices[1:]:
        out = jnp.maximum(out, piece)
    return out


def layer_table() -> tuple[Layer, ...]:
    """Every named layer of Keras' ResNet50 (no top) in Keras' own order, with its output channels."""
    layers = [
        Layer("conv1_pad", "ZeroPadding2D", 3, False),
        Layer("conv1_conv", "Conv2D", 64, False),
        Layer("conv1_bn", "BatchNormalization", 64, False),
        Layer("conv1_relu", "Activation", 64, True),
        Layer("pool1_pad", "ZeroPadding2D", 64, False),
        Layer("pool1_pool", "MaxPooling2D", 64, False),
    ]
    for stack, filters, blocks, _ in STACKS:
        for block in range(1, blocks + 1):
            name = f"{stack}_block{block}"
            main = [
                Layer(f"{name}_1_conv", "Conv2D", filters, False),
                Layer(f"{name}_1_bn", "BatchNormalization", filters, False),
                Layer(f"{name}_1_relu", "Activation", filters, False),
                Layer(f"{name}_2_conv", "Conv2D", filters, False),
                Layer(f"{name}_2_bn", "BatchNormalization", filters, False),
                Layer(f"{name}_2_relu", "Activation", filters, False),
            ]
            if block == 1:
                main += [
                    Layer(f"{name}_0_conv", "Conv2D", 4 * filters, False),
                    Layer(f"{name}_3_conv", "Conv2D", 4 * filters, False),
                    Layer(f"{name}_0_bn", "BatchNormalization", 4 * filters, False),
                    Layer(f"{name}_3_bn", "BatchNormalization", 4 * filters, False),
                ]
            else:
                main += [
                    Layer(f"{name}_3_conv", "Conv2D", 4 * filters, False),
                    Layer(f"{name}_3_bn", "BatchNormalization", 4 * filters, False),
                ]
            main += [
                Layer(f"{name}_add", "Add", 4 * filters, False),
                Layer(f"{name}_out", "Activation", 4 * filters, True),
            ]
            layers += main
    return tuple(layers)


LAYERS = layer_table()
_NAMES = tuple(layer.name for layer in LAYERS)


class ResNet50(nn.Module):
    """Keras' ResNet50 base; returns ``{name: activations}`` for ``outputs`` and stops after the last."""

    redirect_relu: bool = False

    @nn.compact
    def __call__(
        self, images: jax.Array, outputs: Iterable[str] = ("conv5_block3_out",)
    ) -> dict[str, jax.Array]:
        wanted = set(outputs)
        found: dict[str, jax.Array] = {}

        def keep(name: str, value: jax.Array) -> bool:
            if name in wanted:
                found[name] = value
            return len(found) == len(wanted)  # every output asked for is here: stop

        def conv(name: str, x: jax.Array, features: int, size: int, stride: int = 1) -> jax.Array:
            return Conv(features, size, stride, name=name)(x)

        def bn(name: str, x: jax.Array) -> jax.Array:
            return FrozenBatchNorm(name=name)(x)

        x = _pad(images, 3)
        if keep("conv1_pad", x):
            return found
        x = conv("conv1_conv", x, 64, 7, 2)
        if keep("conv1_conv", x):
            return found
        x = bn("conv1_bn", x)
        if keep("conv1_bn", x):
            return found
        x = relu(x, self.redirect_relu)
        if keep("conv1_relu", x):
            return found
        x = _pad(x, 1)
        if keep("pool1_pad", x):
            return found
        x = _max_pool3x3s2(x)
        if keep("pool1_pool", x):
            return found
        for stack, filters, blocks, first_stride in STACKS:
            for block in range(1, blocks + 1):
                name = f"{stack}_block{block}"
                stride = first_stride if block == 1 else 1
                y = conv(f"{name}_1_conv", x, filters, 1, stride)
                if keep(f"{name}_1_conv", y):
                    return found
                y = bn(f"{name}_1_bn", y)
                if keep(f"{name}_1_bn", y):
                    return found
                y = relu(y, self.redirect_relu)
                if keep(f"{name}_1_relu", y):
                    return found
                y = conv(f"{name}_2_conv", y, filters, 3)
                if keep(f"{name}_2_conv", y):
                    return found
                y = bn(f"{name}_2_bn", y)
                if keep(f"{name}_2_bn", y):
                    return found
                y = relu(y, self.redirect_relu)
                if keep(f"{name}_2_relu", y):
                    return found
                if block == 1:
                    shortcut = conv(f"{name}_0_conv", x, 4 * filters, 1, stride)
                    if keep(f"{name}_0_conv", shortcut):
                        return found
                    y = conv(f"{name}_3_conv", y, 4 * filters, 1)
                    if keep(f"{name}_3_conv", y):
                        return found
                    shortcut = bn(f"{name}_0_bn", shortcut)
                    if keep(f"{name}_0_bn", shortcut):
                        return found
                else:
                    shortcut = x
                    y = conv(f"{name}_3_conv", y, 4 * filters, 1)
                    if keep(f"{name}_3_conv", y):
                        return found
                y = bn(f"{name}_3_bn", y)
                if keep(f"{name}_3_bn", y):
                    return found
                x = shortcut + y
                if keep(f"{name}_add", x):
                    return found
                x = relu(x, self.redirect_relu)
                if keep(f"{name}_out", x):
                    return found
        return found


def output_sizes(height: int, width: int) -> dict[str, tuple[int, int]]:
    """Every layer's output ``(h, w)`` for an ``height x width`` input."""
    sizes = {}

    def conv(h: int, size: int, stride: int) -> int:
        return (h - size) // stride + 1

    h, w = height + 6, width + 6
    sizes["conv1_pad"] = (h, w)
    h, w = conv(h, 7, 2), conv(w, 7, 2)
    for name in ("conv1_conv", "conv1_bn", "conv1_relu"):
        sizes[name] = (h, w)
    h, w = h + 2, w + 2
    sizes["pool1_pad"] = (h, w)
    h, w = conv(h, 3, 2), conv(w, 3, 2)
    sizes["pool1_pool"] = (h, w)
    for stack, _, blocks, first_stride in STACKS:
        for block in range(1, blocks + 1):
            stride = first_stride if block == 1 else 1
            h, w = conv(h, 1, stride), conv(w, 1, stride)
            for layer in LAYERS:
                if layer.name.startswith(f"{stack}_block{block}_"):
                    sizes[layer.name] = (h, w)
    return sizes


def parameter_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Every Conv2D's kernel and bias and every BatchNormalization's four vectors, by layer name."""
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}

    def conv(name: str, size: int, channels_in: int, channels_out: int) -> None:
        shapes[name] = {"kernel": (size, size, channels_in, channels_out), "bias": (channels_out,)}

    def bn(name: str, channels: int) -> None:
        shapes[name] = {key: (channels,) for key in ("gamma", "beta", "moving_mean", "moving_variance")}

    conv("conv1_conv", 7, 3, 64)
    bn("conv1_bn", 64)
    channels = 64
    for stack, filters, blocks, _ in STACKS:
        for block in range(1, blocks + 1):
            name = f"{stack}_block{block}"
            conv(f"{name}_1_conv", 1, channels, filters)
            bn(f"{name}_1_bn", filters)
            conv(f"{name}_2_conv", 3, filters, filters)
            bn(f"{name}_2_bn", filters)
            if block == 1:
                conv(f"{name}_0_conv", 1, channels, 4 * filters)
            conv(f"{name}_3_conv", 1, filters, 4 * filters)
            if block == 1:
                bn(f"{name}_0_bn", 4 * filters)
            bn(f"{name}_3_bn", 4 * filters)
            channels = 4 * filters
    return {name: shapes[name] for name in _NAMES if name in shapes}  # in Keras' layer order


def build() -> Network:
    def forward(params: Params, images: jax.Array, outputs: tuple[str, ...], redirect_relu: bool) -> dict:
        return cast(dict, ResNet50(redirect_relu).apply({"params": params}, images, outputs))

    def output_size(layer: str, height: int, width: int) -> tuple[int, int]:
        return output_sizes(height, width)[layer]

    def prepare(params: Params, dtype: Any) -> Params:
        prepared = {}
        for name, arrays in params.items():
            arrays = dict(arrays)
            if "kernel" in arrays:
                arrays["kernel_flipped"] = flip_kernel(jnp.asarray(arrays["kernel"]))
            if "gamma" in arrays:  # batch norm keeps float32 statistics; its output takes the input's type
                prepared[name] = {key: jnp.asarray(value, jnp.float32) for key, value in arrays.items()}
            else:
                prepared[name] = {key: jnp.asarray(value).astype(dtype) for key, value in arrays.items()}
        return prepared

    @jax.jit  # one program (its forward pass unused, so dropped), not one eager op per parameter
    def init(key: jax.Array) -> Params:
        return ResNet50().init(key, jnp.zeros((1, 64, 64, 3), jnp.float32), _NAMES)["params"]

    return Network(
        name="resnet50",
        layers=LAYERS,
        forward=forward,
        output_size=output_size,
        preprocessing="caffe",
        parameter_shapes=parameter_shapes(),
        weights=RESNET50_WEIGHTS,
        prepare=prepare,
        init=init,
    )


RESNET50_WEIGHTS = WeightsSource(
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "4d473c1dd8becc155b73f8504c6f6626",
)

RESNET50 = build()
