"""The VGG16 convolutional base as a Flax linen module, with Keras' layer names.

Shapes: images are ``float32[N, H, W, 3]`` (any H and W; pooling floors odd sizes as Keras does) and a
forward returns ``{layer_name: float32[N, h, w, C]}`` for the layers asked for. Layers are named as in
``keras.applications.VGG16(include_top=False)``: ``block1_conv1`` ... ``block5_pool``. The ReLU lives
inside each conv layer (Keras' ``activation="relu"``), so a conv layer's activation is post-ReLU.

The forward stops at the deepest requested layer: asking for ``block2_conv1`` builds no op past it, which
is what makes shallow-layer ascents cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from filterviz.errors import SettingError, UnknownLayerError

Params = Mapping[str, Mapping[str, jax.Array]]
"""Model parameters: ``{conv_layer_name: {"kernel": float32[3, 3, C_in, C_out], "bias": float32[C_out]}}``."""


class LayerSpec(NamedTuple):
    """One layer of the base: its Keras name, kind (``"conv"`` or ``"pool"``) and output channels."""

    name: str
    kind: str
    channels: int
    # How many 2x2 poolings lie between the input and this layer's output.
    pools_before_output: int


def _vgg16_layers() -> tuple[LayerSpec, ...]:
    widths = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    layers = []
    for block, block_widths in enumerate(widths, start=1):
        for conv, channels in enumerate(block_widths, start=1):
            layers.append(LayerSpec(f"block{block}_conv{conv}", "conv", channels, block - 1))
        layers.append(LayerSpec(f"block{block}_pool", "pool", block_widths[-1], block))
    return tuple(layers)


LAYERS: tuple[LayerSpec, ...] = _vgg16_layers()
"""Every layer of the base after the input, in order."""

LAYER_NAMES: tuple[str, ...] = tuple(spec.name for spec in LAYERS)
CONV_LAYERS: tuple[str, ...] = tuple(spec.name for spec in LAYERS if spec.kind == "conv")
_SPEC_BY_NAME = {spec.name: spec for spec in LAYERS}


def layer_spec(layer: str, *, conv_only: bool = False) -> LayerSpec:
    """The spec of ``layer``; raises :class:`UnknownLayerError` listing the valid names."""
    spec = _SPEC_BY_NAME.get(layer) if isinstance(layer, str) else None
    if spec is None or (conv_only and spec.kind != "conv"):
        raise UnknownLayerError(layer, CONV_LAYERS if conv_only else LAYER_NAMES)
    return spec


def output_size(layer: str, height: int, width: int) -> tuple[int, int]:
    """Spatial size ``(h, w)`` of ``layer``'s output for an ``height x width`` input (valid 2x2 pools)."""
    pools = layer_spec(layer).pools_before_output
    for _ in range(pools):
        height, width = height // 2, width // 2
    return height, width


_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def _conv_same(images: jax.Array, kernel: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(images, kernel, (1, 1), "SAME", dimension_numbers=_DIMENSIONS)


def flip_kernel(kernel: jax.Array) -> jax.Array:
    """Kernel of a 3x3 'same' conv's input gradient: ``[3, 3, C_in, C_out] -> [3, 3, C_out, C_in]``."""
    return jnp.transpose(jnp.flip(kernel, (0, 1)), (0, 1, 3, 2))


@jax.custom_vjp
def _conv3x3_with_flipped(images: jax.Array, kernel: jax.Array, flipped_kernel: jax.Array) -> jax.Array:
    return _conv_same(images, kernel)


def _conv3x3_forward(images: jax.Array, kernel: jax.Array, flipped_kernel: jax.Array):
    return _conv_same(images, kernel), (images, kernel, flipped_kernel)


def _conv3x3_backward(residuals: tuple[jax.Array, jax.Array, jax.Array], output_cotangent: jax.Array):
    images, kernel, flipped_kernel = residuals
    images_cotangent = _conv_same(output_cotangent, flipped_kernel)
    # The kernel's gradient keeps JAX's own rule; it is dead code (and removed) when only images are
    # differentiated, as in the ascent. The flipped kernel is a function of the kernel, not an input
    # of its own: its cotangent is zero.
    _, kernel_vjp = jax.vjp(lambda k: _conv_same(images, k), kernel)
    (kernel_cotangent,) = kernel_vjp(output_cotangent)
    return images_cotangent, kernel_cotangent, jnp.zeros_like(flipped_kernel)


_conv3x3_with_flipped.defvjp(_conv3x3_forward, _conv3x3_backward)


def conv3x3(images: jax.Array, kernel: jax.Array, flipped_kernel: jax.Array | None = None) -> jax.Array:
    """3x3 'same' convolution: ``[N, H, W, C_in] x [3, 3, C_in, C_out] -> [N, H, W, C_out]``, float32.

    Its values and gradients are those of ``lax.conv_general_dilated``; only the gradient with respect to
    the images is written differently. JAX's own rule expresses it as a convolution whose kernel swaps
    its in and out axes through dimension numbers; XLA:CPU runs that form with a slow generic loop
    whenever it sits inside a ``while`` loop (as in the ascent's ``fori_loop``), 2.5x slower than its
    library convolution. Flipping and transposing the kernel as an explicit array keeps every
    convolution in the standard HWIO form, which runs at full speed on every backend.

    ``flipped_kernel`` (``flip_kernel(kernel)``) may be passed in precomputed, so that a loop of
    gradient steps flips the kernels once rather than at every step (XLA does not hoist it).
    """
    if flipped_kernel is None:
        flipped_kernel = flip_kernel(kernel)
    return _conv3x3_with_flipped(images, kernel, flipped_kernel)


def max_pool2x2(images: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, 'valid' padding: ``float32[N, H, W, C] -> float32[N, H//2, W//2, C]``.

    Written as a max over a reshape rather than ``lax.reduce_window``: the values are the same, and the
    gradient becomes elementwise masks that XLA fuses, where reduce_window's select-and-scatter runs
    as a slow loop on CPU (10-15% of a deep layer's ascent step). The two gradients differ only where a
    window holds tied maxima; after a ReLU such ties are zeros, whose gradient the ReLU blocks anyway.
    """
    batch, height, width, channels = images.shape
    height, width = height // 2, width // 2
    cropped = images[:, : 2 * height, : 2 * width, :]  # 'valid': an odd last row or column is dropped
    return cropped.reshape(batch, height, 2, width, 2, channels).max(axis=(2, 4))


@jax.custom_vjp
def redirected_relu(x: jax.Array) -> jax.Array:
    """ReLU whose gradient is redirected when it would be zero for a whole image (Lucid's override).

    Forward: ``max(x, 0)``. Backward, per image of ``x [N, ...]``: the ReLU's own gradient if any of it is
    non-zero; otherwise the cotangent is let through where ``x < 0`` too, except where it would push
    ``x`` further down. So a filter that is off everywhere on the start image still gets a direction to
    turn on, instead of a zero gradient forever. Values are never changed, only gradients.
    """
    return jnp.maximum(x, 0)


def _redirected_relu_forward(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.maximum(x, 0), x


def _redirected_relu_backward(x: jax.Array, cotangent: jax.Array) -> tuple[jax.Array]:
    relu_gradient = jnp.where(x < 0, 0, cotangent)
    # The cotangent is that of a loss being minimised: positive means "lower x".
    redirected = jnp.where((x < 0) & (cotangent > 0), 0, cotangent)
    axes = tuple(range(1, x.ndim))
    alive = jnp.any(relu_gradient != 0, axis=axes, keepdims=True)
    return (jnp.where(alive, relu_gradient, redirected),)


redirected_relu.defvjp(_redirected_relu_forward, _redirected_relu_backward)


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
        return relu(conv3x3(images, kernel, flipped) + bias)


class VGG16(nn.Module):
    """VGG16's 13 conv layers and 5 max-pools; returns the activations of the requested layers.

    Call with ``images: float32[N, H, W, 3]`` and ``outputs``: the layer names to return. Layers past the
    deepest requested one are neither built nor run.

    >>> import jax, jax.numpy as jnp
    >>> model = VGG16()
    >>> images = jnp.zeros((1, 32, 32, 3))
    >>> variables = model.init(jax.random.key(0), images, ["block1_conv2"])
    >>> variables["params"]["block1_conv2"]["kernel"].shape
    (3, 3, 64, 64)
    >>> model.apply(variables, images, ["block1_conv2"])["block1_conv2"].shape
    (1, 32, 32, 64)
    """

    redirect_relu: bool = False  # gradients through redirected_relu (values unchanged)

    @nn.compact
    def __call__(self, images: jax.Array, outputs: Iterable[str] = ("block5_pool",)) -> dict[str, jax.Array]:
        wanted = {layer_spec(name).name for name in outputs}
        depth = max(LAYER_NAMES.index(name) for name in wanted) if wanted else -1
        x = images
        activations = {}
        for spec in LAYERS[: depth + 1]:
            if spec.kind == "conv":
                x = Conv3x3ReLU(spec.channels, self.redirect_relu, name=spec.name)(x)
            else:
                x = max_pool2x2(x)
            if spec.name in wanted:
                activations[spec.name] = x
        return activations


def forward(
    params: Params, images: jax.Array, outputs: Iterable[str], *, redirect_relu: bool = False
) -> dict[str, jax.Array]:
    """Pure forward: ``images float32[N, H, W, 3] -> {layer: float32[N, h, w, C]}`` for ``outputs``.

    ``redirect_relu`` changes only the gradients (see :func:`redirected_relu`).
    """
    return VGG16(redirect_relu).apply({"params": params}, images, tuple(outputs))


def _conv3x3_one_channel(
    images: jax.Array, kernel: jax.Array, bias: jax.Array, channel: jax.Array
) -> jax.Array:
    # One output channel of a 3x3 'same' conv + ReLU as nine shifted matrix-vector products:
    # [N, H, W, C_in] -> [N, H, W]. Unlike a convolution with a sliced kernel, this stays a plain
    # contraction when vmapped over `channel`, where a convolution would become a grouped one.
    weights = lax.dynamic_index_in_dim(kernel, channel, axis=3, keepdims=False)  # [3, 3, C_in]
    height, width = images.shape[1:3]
    padded = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    total = lax.dynamic_index_in_dim(bias, channel, keepdims=False)
    for dy in range(3):
        for dx in range(3):
            total = total + padded[:, dy : dy + height, dx : dx + width, :] @ weights[dy, dx]
    return nn.relu(total)


def channel_activation(params: Params, images: jax.Array, layer: str, channel: jax.Array | int) -> jax.Array:
    """One channel of one layer: ``float32[N, H, W, 3] -> float32[N, h, w]``.

    Equal to ``forward(params, images, [layer])[layer][..., channel]`` but computes only that channel
    of the layer (and of the conv before it, for a pool layer): for ``block1_conv2`` that halves the
    work of a step. ``channel`` may be traced, so one compiled program serves every filter of a layer.
    """
    spec = layer_spec(layer)
    conv_index = LAYER_NAMES.index(spec.name) - (1 if spec.kind == "pool" else 0)
    conv_name = LAYER_NAMES[conv_index]
    conv_input = (
        images
        if conv_index == 0
        else forward(params, images, [LAYER_NAMES[conv_index - 1]])[LAYER_NAMES[conv_index - 1]]
    )
    activation = _conv3x3_one_channel(
        conv_input, params[conv_name]["kernel"], params[conv_name]["bias"], channel
    )
    if spec.kind == "pool":
        activation = max_pool2x2(activation[..., None])[..., 0]
    return activation


def with_flipped_kernels(params: Params) -> dict[str, dict[str, jax.Array]]:
    """``params`` plus each conv layer's ``kernel_flipped``, which the model's image gradient uses.

    Pure and cheap (one transpose per layer); call it outside a loop of gradient steps.
    """
    return {
        layer: {**arrays, "kernel_flipped": flip_kernel(arrays["kernel"])} for layer, arrays in params.items()
    }


def parameter_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Every parameter's shape: ``{layer: {"kernel": (3, 3, C_in, C_out), "bias": (C_out,)}}``."""
    shapes = {}
    channels_in = 3
    for spec in LAYERS:
        if spec.kind == "conv":
            shapes[spec.name] = {"kernel": (3, 3, channels_in, spec.channels), "bias": (spec.channels,)}
            channels_in = spec.channels
    return shapes


def parameter_count(layer: str | None = None) -> int:
    """Number of parameters of one layer, or of the whole base (14,714,688) when ``layer`` is None."""
    shapes = parameter_shapes()
    layers = [layer_spec(layer).name] if layer is not None else list(shapes)
    total = 0
    for name in layers:
        for shape in shapes.get(name, {}).values():
            size = 1
            for dim in shape:
                size *= dim
            total += size
    return total


def summary(height: int | None = None, width: int | None = None) -> str:
    """The Keras-style table of the base (layer, type, output shape, params), as the notebook prints it.

    With no size the spatial dimensions print as ``None``, as for ``VGG16(include_top=False)``; with
    ``height`` and ``width`` they are the actual output sizes.

    >>> print(summary(224, 224).splitlines()[6])
    block1_conv1 (Conv2D)        (None, 224, 224, 64)      1792
    """
    if (height is None) != (width is None):
        raise SettingError("give both height and width, or neither")
    for side in (height, width):
        if side is not None and (isinstance(side, bool) or not isinstance(side, int) or side < 1):
            raise SettingError(f"a size must be a whole number of at least 1, got {side!r}")
    rows = [("input_1 (InputLayer)", (None, height, width, 3), 0)]
    for spec in LAYERS:
        kind = "Conv2D" if spec.kind == "conv" else "MaxPooling2D"
        if height is None:
            spatial: tuple[int | None, int | None] = (None, None)
        else:
            spatial = output_size(spec.name, height, width)
        rows.append((f"{spec.name} ({kind})", (None, *spatial, spec.channels), parameter_count(spec.name)))
    rule = "_" * 65
    lines = ['Model: "vgg16"', rule, f"{'Layer (type)':<29}{'Output Shape':<26}Param #", "=" * 65]
    for index, (name, shape, count) in enumerate(rows):
        lines.append(f"{name:<29}{shape!s:<26}{count}")
        lines.append("=" * 65 if index == len(rows) - 1 else rule)
    total = parameter_count()
    lines += [f"Total params: {total:,}", f"Trainable params: {total:,}", "Non-trainable params: 0", rule]
    return "\n".join(lines)


def init_params(key: jax.Array) -> dict[str, dict[str, jax.Array]]:
    """Randomly initialised parameters (for tests and shape checks; real use loads the ImageNet weights)."""
    images = jnp.zeros((1, 32, 32, 3), jnp.float32)
    return VGG16().init(key, images, LAYER_NAMES)["params"]
