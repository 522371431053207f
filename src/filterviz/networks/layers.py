"""Building blocks the built-in networks share: a convolution whose image gradient stays in the fast
kernel layout, a max-pool with a fusable gradient, and Lucid's ReLU whose gradient is redirected when it
would be zero for a whole image."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def flip_kernel(kernel: jax.Array, groups: int = 1) -> jax.Array:
    """Kernel of a convolution's image gradient: ``[kh, kw, C_in/g, C_out] -> [kh, kw, C_out/g, C_in]``,
    flipped in space and with its feature axes swapped as an array (not through dimension numbers), group
    by group for a convolution of ``groups`` feature groups."""
    height, width, inputs, outputs = kernel.shape
    grouped = jnp.flip(kernel, (0, 1)).reshape(height, width, inputs, groups, outputs // groups)
    return jnp.transpose(grouped, (0, 1, 4, 3, 2)).reshape(height, width, outputs // groups, groups * inputs)


Pads = tuple[tuple[int, int], tuple[int, int]]


def _convolve(images: jax.Array, kernel: jax.Array, geometry: tuple) -> jax.Array:
    strides, pads, dilation, groups = geometry
    return lax.conv_general_dilated(
        images, kernel, strides, pads, rhs_dilation=dilation, dimension_numbers=_DIMENSIONS,
        feature_group_count=groups,
    )  # fmt: skip


def _image_gradient_padding(
    size: int, kernel_size: int, stride: int, pads: tuple[int, int]
) -> tuple[int, int]:
    # Padding of the stride-dilated cotangent whose convolution with the flipped kernel gives back an
    # image of `size` pixels: the forward's own padding mirrored, plus the rows a stride left unread.
    outputs = (size + sum(pads) - kernel_size) // stride + 1
    unread = size + sum(pads) - ((outputs - 1) * stride + kernel_size)
    return kernel_size - 1 - pads[0], kernel_size - 1 - pads[1] + unread


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv_with_flipped(images, kernel, flipped_kernel, geometry: tuple) -> jax.Array:
    return _convolve(images, kernel, geometry)


def _conv_forward(images, kernel, flipped_kernel, geometry: tuple):
    return _convolve(images, kernel, geometry), (images, kernel, flipped_kernel)


def _conv_backward(geometry: tuple, residuals, output_cotangent):
    images, kernel, flipped_kernel = residuals
    strides, pads, dilation, groups = geometry
    spans = [(kernel.shape[axis] - 1) * dilation[axis] + 1 for axis in (0, 1)]  # the dilated kernel's
    images_cotangent = lax.conv_general_dilated(
        output_cotangent,
        flipped_kernel,
        (1, 1),
        [_image_gradient_padding(images.shape[1 + a], spans[a], strides[a], pads[a]) for a in (0, 1)],
        lhs_dilation=strides,
        rhs_dilation=dilation,
        dimension_numbers=_DIMENSIONS,
        feature_group_count=groups,
    )
    # The kernel's gradient keeps JAX's own rule; it is dead code (and removed) when only images are
    # differentiated, as in the ascent. The flipped kernel is a function of the kernel, not an input
    # of its own: its cotangent is zero.
    _, kernel_vjp = jax.vjp(lambda k: _convolve(images, k, geometry), kernel)
    (kernel_cotangent,) = kernel_vjp(output_cotangent)
    return images_cotangent, kernel_cotangent, jnp.zeros_like(flipped_kernel)


_conv_with_flipped.defvjp(_conv_forward, _conv_backward)


def conv2d(
    images: jax.Array,
    kernel: jax.Array,
    flipped_kernel: jax.Array | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: str | Pads = "SAME",
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> jax.Array:
    """Convolution ``[N, H, W, C_in] x [kh, kw, C_in/groups, C_out] -> [N, H', W', C_out]``: padding
    'SAME' (stride 1, odd square kernel), 'VALID', or explicit ``((top, bottom), (left, right))``.

    Its values and gradients are those of ``lax.conv_general_dilated``; only the gradient with respect to
    the images is written differently. JAX's own rule expresses it as a convolution whose kernel swaps
    its in and out axes through dimension numbers; XLA:CPU runs that form with a slow generic loop
    whenever it sits inside a ``while`` loop (as in the ascent's ``fori_loop``), 2.5x slower than its
    library convolution. Flipping and transposing the kernel as an explicit array keeps every
    convolution in the standard HWIO form, which runs at full speed on every backend.

    ``flipped_kernel`` (``flip_kernel(kernel, groups)``) may be passed in precomputed, so that a loop of
    gradient steps flips the kernels once rather than at every step (XLA does not hoist it).
    """
    strides = (stride, stride) if isinstance(stride, int) else tuple(stride)
    if padding == "SAME":
        if strides != (1, 1) or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
            raise ValueError(f"conv2d: padding 'SAME' with stride {stride} and a {kernel.shape[:2]} kernel")
        padding = (((kernel.shape[0] - 1) // 2,) * 2,) * 2
    elif padding == "VALID":
        padding = ((0, 0), (0, 0))
    elif isinstance(padding, str):
        raise ValueError(f"conv2d: padding {padding!r}")
    if flipped_kernel is None:
        flipped_kernel = flip_kernel(kernel, groups)
    geometry = (strides, tuple(map(tuple, padding)), tuple(dilation), groups)
    return _conv_with_flipped(images, kernel, flipped_kernel, geometry)


def conv_one_channel(
    images: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None,
    channel: jax.Array | int,
    stride: tuple[int, int] = (1, 1),
    padding: Pads = ((1, 1), (1, 1)),
) -> jax.Array:
    """One output channel of a convolution (one group, no dilation), ``[N, H, W, C_in] x [kh, kw, C_in,
    C_out] -> [N, H', W']``.

    One matrix product gives each pixel's response to the ``kh * kw`` taps, then shifted (strided) slices
    of that small map are summed. The wide input is read once, where ``kh * kw`` shifted matrix-vector
    products read it that often and their gradient writes it that often; and vmapped over ``channel`` it
    stays a plain contraction, where a convolution with a sliced kernel would become a grouped one.
    """
    height, width = kernel.shape[:2]
    weights = lax.dynamic_index_in_dim(kernel, channel, axis=3, keepdims=False)  # [kh, kw, C_in]
    padded = jnp.pad(images, ((0, 0), *padding, (0, 0)))
    taps = padded @ weights.reshape(height * width, -1).T  # [N, H + pads, W + pads, kh * kw]
    rows = (padded.shape[1] - height) // stride[0] + 1
    columns = (padded.shape[2] - width) // stride[1] + 1
    total = jnp.zeros(()) if bias is None else lax.dynamic_index_in_dim(bias, channel, keepdims=False)
    total = total.astype(images.dtype)
    for dy in range(height):
        for dx in range(width):
            rows_at = slice(dy, dy + stride[0] * (rows - 1) + 1, stride[0])
            columns_at = slice(dx, dx + stride[1] * (columns - 1) + 1, stride[1])
            total = total + taps[:, rows_at, columns_at, width * dy + dx]
    return total


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
