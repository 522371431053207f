"""VGG16 and VGG19 (the convolutional bases) as Flax linen modules with Keras' layer names.

Shapes: images are ``float32[N, H, W, 3]`` (any H and W; pooling floors odd sizes as Keras does) and a
forward returns ``{layer: float32[N, h, w, C]}`` for the layers asked for. Layers are named as in
``keras.applications.VGG16(include_top=False)``: ``block1_conv1`` ... ``block5_pool``. The ReLU lives
inside each conv layer (Keras' ``activation="relu"``), so a conv layer's activation is post-ReLU.

The forward stops at the deepest requested layer: asking for ``block2_conv1`` builds no op past it, which
is what makes shallow-layer ascents cheap. :func:`channel_activation` computes one channel of a layer
(one product with the nine taps of the last convolution), the notebook's fast path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from filterviz.core.network import Layer, Network, Params, WeightsSource
from filterviz.core.relu import redirected_relu, relu
from filterviz.networks.layers import conv2d, conv_one_channel, flip_kernel, max_pool2x2


class Spec(NamedTuple):
    """One layer of a VGG base: its Keras name, kind (``"conv"`` or ``"pool"``), output channels, and
    how many 2x2 poolings lie between the input and its output."""

    name: str
    kind: str
    channels: int
    pools_before_output: int


def specs(widths: tuple[tuple[int, ...], ...]) -> tuple[Spec, ...]:
    """Every layer of a VGG base whose blocks have these conv widths."""
    layers = []
    for block, block_widths in enumerate(widths, start=1):
        for conv, channels in enumerate(block_widths, start=1):
            layers.append(Spec(f"block{block}_conv{conv}", "conv", channels, block - 1))
        layers.append(Spec(f"block{block}_pool", "pool", block_widths[-1], block))
    return tuple(layers)


VGG16_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG19_WIDTHS = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)


class Conv3x3ReLU(nn.Module):
    """Keras' ``Conv2D(features, 3, padding="same", activation="relu")``; params ``kernel`` and ``bias``.

    ``redirect_relu`` swaps the ReLU's gradient for :func:`redirected_relu`'s (values are unchanged).
    """

    features: int
    redirect_relu: bool = False

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.glorot_uniform(), (3, 3, images.shape[-1], self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        # Present when the params went through with_flipped_kernels (the ascent does, once per loop).
        flipped = (
            self.get_variable("params", "kernel_flipped")
            if self.has_variable("params", "kernel_flipped")
            else None
        )
        relu = redirected_relu if self.redirect_relu else nn.relu
        return relu(conv2d(images, kernel, flipped) + bias.astype(images.dtype))


class VGG(nn.Module):
    """A VGG base: conv layers of ``widths`` per block, each block closed by a 2x2 max-pool.

    Call with ``images: float32[N, H, W, 3]`` and ``outputs``: the layer names to return. Layers past the
    deepest requested one are neither built nor run.

    >>> import jax, jax.numpy as jnp
    >>> model = VGG(VGG16_WIDTHS)
    >>> images = jnp.zeros((1, 32, 32, 3))
    >>> variables = model.init(jax.random.key(0), images, ["block1_conv2"])
    >>> variables["params"]["block1_conv2"]["kernel"].shape
    (3, 3, 64, 64)
    >>> model.apply(variables, images, ["block1_conv2"])["block1_conv2"].shape
    (1, 32, 32, 64)
    """

    widths: tuple[tuple[int, ...], ...] = VGG16_WIDTHS
    redirect_relu: bool = False  # gradients through redirected_relu (values unchanged)

    @nn.compact
    def __call__(self, images: jax.Array, outputs: Iterable[str] = ("block5_pool",)) -> dict[str, jax.Array]:
        layers = specs(self.widths)
        names = [spec.name for spec in layers]
        wanted = set(outputs)
        depth = max(names.index(name) for name in wanted) if wanted else -1
        x = images
        activations = {}
        for spec in layers[: depth + 1]:
            if spec.kind == "conv":
                x = Conv3x3ReLU(spec.channels, self.redirect_relu, name=spec.name)(x)
            else:
                x = max_pool2x2(x)
            if spec.name in wanted:
                activations[spec.name] = x
        return activations


def with_flipped_kernels(params: Params) -> dict[str, dict[str, jax.Array]]:
    """``params`` plus each conv layer's ``kernel_flipped``, which the model's image gradient uses.

    Pure and cheap (one transpose per layer); call it outside a loop of gradient steps.
    """
    return {
        layer: {**arrays, "kernel_flipped": flip_kernel(arrays["kernel"])} for layer, arrays in params.items()
    }


def build(name: str, widths: tuple[tuple[int, ...], ...], weights: WeightsSource) -> Network:
    """The :class:`~filterviz.core.network.Network` of a VGG base with these conv widths."""
    layers = specs(widths)
    by_name = {spec.name: spec for spec in layers}
    names = [spec.name for spec in layers]

    def forward(params: Params, images: jax.Array, outputs: tuple[str, ...], redirect_relu: bool) -> dict:
        return cast(dict, VGG(widths, redirect_relu).apply({"params": params}, images, outputs))

    def output_size(layer: str, height: int, width: int) -> tuple[int, int]:
        for _ in range(by_name[layer].pools_before_output):
            height, width = height // 2, width // 2
        return height, width

    def channel(
        params: Params, images: jax.Array, layer: str, index: jax.Array | int, redirect_relu: bool = False
    ) -> jax.Array:
        # One channel of `layer` (and of the conv before it, for a pool layer): every channel of the
        # layers below, then one product with the target's nine taps.
        spec = by_name[layer]
        conv_index = names.index(layer) - (1 if spec.kind == "pool" else 0)
        conv_name = names[conv_index]
        below = names[conv_index - 1] if conv_index else None
        conv_input = images if below is None else forward(params, images, (below,), redirect_relu)[below]
        kernel, bias = params[conv_name]["kernel"], params[conv_name]["bias"]
        activation = relu(conv_one_channel(conv_input, kernel, bias, index), redirect_relu)
        if spec.kind == "pool":
            activation = max_pool2x2(activation[..., None])[..., 0]
        return activation

    def prepare(params: Params, dtype: Any) -> Params:
        return jax.tree.map(lambda array: jnp.asarray(array).astype(dtype), with_flipped_kernels(params))

    @jax.jit  # one program (its forward pass unused, so dropped), not one eager op per parameter
    def init(key: jax.Array) -> Params:
        return VGG(widths).init(key, jnp.zeros((1, 32, 32, 3), jnp.float32), names)["params"]

    shapes, channels_in = {}, 3
    for spec in layers:
        if spec.kind == "conv":
            shapes[spec.name] = {"kernel": (3, 3, channels_in, spec.channels), "bias": (spec.channels,)}
            channels_in = spec.channels
    return Network(
        name=name,
        layers=tuple(
            Layer(
                spec.name,
                "Conv2D" if spec.kind == "conv" else "MaxPooling2D",
                spec.channels,
                spec.kind == "conv",
            )
            for spec in layers
        ),
        forward=forward,
        output_size=output_size,
        preprocessing="caffe",
        parameter_shapes=shapes,
        weights=weights,
        channel=channel,
        channel_layers=frozenset(names),
        prepare=prepare,
        init=init,
    )


_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications"
VGG16_WEIGHTS = WeightsSource(
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    f"{_KERAS}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "6d6bbae143d832006294945121d1f1fc",
)
VGG19_WEIGHTS = WeightsSource(
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    f"{_KERAS}/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "253f8cb515780f3b799900260a226db6",
)

VGG16 = build("vgg16", VGG16_WIDTHS, VGG16_WEIGHTS)
VGG19 = build("vgg19", VGG19_WIDTHS, VGG19_WEIGHTS)
