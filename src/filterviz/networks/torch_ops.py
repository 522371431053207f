"""The torchax environment PyTorch modules run in here: torchax's own, with 2-D convolutions and max
pooling computed channels-last for XLA (see :func:`channels_last_environment`), and antialiased
resampling that torchax cannot run (timm's ``dynamic_img_size`` position embeddings)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

_ENVIRONMENT: list[Any] = []


def channels_last_environment(torch: Any, torchax: Any) -> Any:
    """filterviz's own torchax environment, whose 2-D convolutions and max pooling compute channels-last.

    XLA:CPU runs an NCHW convolution inside a loop (the engine's ``fori_loop``) about 25x slower than the
    same convolution outside one, or than NHWC inside one (measured: 5.0 s against 0.19 s for four steps
    of two 64-channel 3x3 convolutions at 64x64 on two cores): it does not re-choose layouts there. And
    JAX's own image gradient of a convolution takes the slow path inside a loop too. So a convolution
    here transposes its operands to NHWC/HWIO and back and runs as the built-in networks' do
    (:func:`filterviz.networks.layers.conv2d`, whose image gradient convolves with an explicitly flipped
    kernel): VGG16 through torch went from 0.76 to 0.19 s per step (4 images, 128x128, block3_conv3;
    the built-in Flax VGG16 takes 0.14). Values are the same up to float rounding (the parity tests
    hold at 1e-5). Built once per process; torchax's global environment is left as the user has it.
    """
    if _ENVIRONMENT:
        return _ENVIRONMENT[0]
    from torchax import interop

    env = torchax.tensor.Environment()

    def convolution(*args: Any) -> Any:
        return interop.call_jax(_convolution, *args)

    def max_pool(*args: Any) -> Any:
        return interop.call_jax(_max_pool, *args)

    for op in (torch.ops.aten.convolution.default, torch.ops.aten.conv2d.default):
        env.override_op_definition(op, convolution)
    env.override_op_definition(torch.ops.aten.max_pool2d_with_indices.default, max_pool)
    # torchax's own antialiased resampling fails on current JAX ("'tuple' object is not callable"); timm's
    # ViTs with dynamic_img_size resample their position embeddings with it at every size but their own.
    for op, method in (
        (torch.ops.aten._upsample_bicubic2d_aa, "cubic"),
        (torch.ops.aten._upsample_bilinear2d_aa, "linear"),
    ):
        env.override_op_definition(
            op, functools.partial(interop.call_jax, functools.partial(_resample, method))
        )
    _ENVIRONMENT.append(env)
    return env


def _pair(value: Any) -> tuple[int, int]:
    # aten gives sizes as one int, a 1-list (both sides) or a 2-list.
    if isinstance(value, list | tuple):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


def _convolution(
    input: jax.Array,
    weight: jax.Array,
    bias: jax.Array | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    *rest: Any,
) -> jax.Array:
    """aten's ``convolution(..., transposed, output_padding, groups)`` and ``conv2d(..., groups)`` for
    ``[N, C, H, W]`` inputs, computed channels-last; anything else (transposed, 1-D, 3-D, padding by
    name) by torchax's own."""
    from torchax.ops import jaten

    transposed, output_padding, groups = rest if len(rest) == 3 else (False, 0, rest[0] if rest else 1)
    if transposed or input.ndim != 4 or isinstance(padding, str):
        strides, dilations = _pair(stride), _pair(dilation)
        return jaten._aten_convolution(
            input, weight, bias, strides, padding, dilations, transposed, output_padding, groups
        )
    from filterviz.networks.layers import conv2d

    pad_y, pad_x = _pair(padding)
    out = conv2d(
        jnp.transpose(input, (0, 2, 3, 1)),
        jnp.transpose(weight, (2, 3, 1, 0)),
        stride=_pair(stride),
        padding=((pad_y, pad_y), (pad_x, pad_x)),
        dilation=_pair(dilation),
        groups=groups,
    )
    if bias is not None:
        out = out + bias
    return jnp.transpose(out, (0, 3, 1, 2))


def _max_pool(
    input: jax.Array,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """aten's ``max_pool2d_with_indices`` for ``[N, C, H, W]``: the maximum computed channels-last, the
    indices torchax's (XLA drops them where nothing reads them, as in every forward here)."""
    from torchax.ops import jaten

    torchax_own = jaten._aten_max_pool2d_with_indices(
        input, kernel_size, stride, padding, dilation, ceil_mode
    )
    if input.ndim != 4 or ceil_mode:
        return torchax_own
    window = _pair(kernel_size)
    strides = _pair(stride) if stride not in (None, [], ()) else window
    out = jax.lax.reduce_window(
        jnp.transpose(input, (0, 2, 3, 1)),
        -jnp.inf,
        jax.lax.max,
        (1, *window, 1),
        (1, *strides, 1),
        [(0, 0), *[(side, side) for side in _pair(padding)], (0, 0)],
        window_dilation=(1, *_pair(dilation), 1),
    )
    return jnp.transpose(out, (0, 3, 1, 2)), torchax_own[1]


def _resample(
    method: str,
    images: jax.Array,
    size: Any,
    align_corners: bool,
    *scales: Any,
) -> jax.Array:
    """``images [N, C, H, W]`` resampled antialiased to ``size`` as torch's ``F.interpolate(...,
    antialias=True)`` does: its bicubic kernel is Keys' with a = -0.5 (Pillow's), which is JAX's cubic."""
    height, width = images.shape[-2:]
    if size is None:  # the .vec overload may give scale factors instead of a size
        factors = scales[0]
        size = (int(height * factors[0]), int(width * factors[-1]))
    if align_corners:
        raise NotImplementedError("antialiased resampling with align_corners=True")
    out_height, out_width = (int(side) for side in size)
    scale = jnp.array([out_height / height, out_width / width], images.dtype)
    return jax.image.scale_and_translate(
        images,
        (*images.shape[:2], out_height, out_width),
        (2, 3),
        scale,
        jnp.zeros(2, images.dtype),
        method=method,
        antialias=True,
    )
