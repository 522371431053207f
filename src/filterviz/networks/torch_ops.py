"""The torchax environment PyTorch modules run in here: torchax's own, with 2-D convolutions and max
pooling computed channels-last for XLA (see :func:`channels_last_environment`), and antialiased
resampling that torchax cannot run (timm's ``dynamic_img_size`` position embeddings)."""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

_ENVIRONMENT: list[Any] = []


class Prepared(NamedTuple):
    """A PyTorch model's parameters made ready for a loop of steps: ``params`` cast to the compute type,
    and each 4-D one also as a channels-last kernel (``[O, I, kH, kW] -> [kH, kW, I, O]``), transposed
    once before the loop instead of at every step (the step keeps the loop's invariants inside it)."""

    params: dict[str, jax.Array]
    kernels: dict[str, tuple[jax.Array, jax.Array]]


def prepare(params: Mapping[str, Any], dtype: Any) -> Prepared:
    """``params`` cast to ``dtype`` (floating ones), with every 4-D one's channels-last kernel and its
    flipped form for the image gradient (:func:`~filterviz.networks.layers.flip_kernel`, ungrouped: a
    grouped convolution flips its own)."""
    from filterviz.networks.layers import flip_kernel

    def cast(array: Any) -> jax.Array:
        array = jnp.asarray(array)
        return array.astype(dtype) if jnp.issubdtype(array.dtype, jnp.floating) else array

    cast_params = {path: cast(array) for path, array in params.items()}
    kernels = {path: jnp.transpose(a, (2, 3, 1, 0)) for path, a in cast_params.items() if a.ndim == 4}
    return Prepared(cast_params, {path: (kernel, flip_kernel(kernel)) for path, kernel in kernels.items()})


_KERNELS: contextvars.ContextVar[Prepared | None] = contextvars.ContextVar(
    "filterviz_channels_last_kernels", default=None
)


@contextlib.contextmanager
def channels_last_kernels(params: Mapping[str, Any] | Prepared) -> Iterator[Mapping[str, Any]]:
    """The plain parameters of ``params``, for a forward run inside the block. Where they are
    :class:`Prepared`, a convolution whose weight is one of ``params.params`` (the very array: a module
    that derives its weight, by a cast or a reparametrisation, transposes its own) takes that weight's
    hoisted kernel meanwhile."""
    if not isinstance(params, Prepared):
        yield params
        return
    token = _KERNELS.set(params)
    try:
        yield params.params
    finally:
        _KERNELS.reset(token)


_SHADOWS: contextvars.ContextVar[dict[int, tuple[jax.Array, jax.Array]] | None] = contextvars.ContextVar(
    "filterviz_channels_last_shadows", default=None
)


@contextlib.contextmanager
def channels_last_shadows() -> Iterator[None]:
    """While a forward runs, each NCHW result of a convolution, pooling or ReLU here keeps its NHWC form,
    and the next such op takes that form instead of transposing back: a chain of them runs channels-last
    end to end, and XLA drops the NCHW copies that nothing else reads (VGG16's step lost 16 transposes)."""
    token = _SHADOWS.set({})
    try:
        yield
    finally:
        _SHADOWS.reset(token)


def _shadow(nchw: jax.Array) -> jax.Array | None:
    # The NHWC form an op here remembered for this very [N, C, H, W] array, if any.
    source, nhwc = (_SHADOWS.get() or {}).get(id(nchw), (None, None))
    return nhwc if source is nchw else None


def _channels_last(nchw: jax.Array) -> jax.Array:
    # The NHWC form of an [N, C, H, W] array: its shadow if an op here made it, else a transpose.
    nhwc = _shadow(nchw)
    return nhwc if nhwc is not None else jnp.transpose(nchw, (0, 2, 3, 1))


def _channels_first(nhwc: jax.Array) -> jax.Array:
    # The [N, C, H, W] result torch expects, its NHWC form remembered for the next op.
    nchw = jnp.transpose(nhwc, (0, 3, 1, 2))
    table = _SHADOWS.get()
    if table is not None:
        table[id(nchw)] = (nchw, nhwc)
    return nchw


def elementwise(function: Callable[[jax.Array], jax.Array], nchw: jax.Array) -> jax.Array:
    """``function`` of an elementwise kind (a ReLU) on ``nchw``, applied to its NHWC shadow if it has one."""
    nhwc = _shadow(nchw)
    return function(nchw) if nhwc is None else _channels_first(function(nhwc))


def channels_last_kernel(weight: jax.Array) -> jax.Array:
    """``weight [O, I, kH, kW]`` as ``[kH, kW, I, O]``: the hoisted kernel while
    :func:`channels_last_kernels` holds it, else transposed here."""
    return _kernels(weight, 1)[0]


def _kernels(weight: jax.Array, groups: int) -> tuple[jax.Array, jax.Array | None]:
    # The weight channels-last, and its flipped form: hoisted where it is a prepared parameter (the
    # flipped one for one group only), else computed here.
    prepared = _KERNELS.get()
    if prepared is not None:
        for path, (kernel, flipped) in prepared.kernels.items():
            if prepared.params[path] is weight:
                return kernel, flipped if groups == 1 else None
    return jnp.transpose(weight, (2, 3, 1, 0)), None


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

    # Each op under both names: torchax looks its own up by the overload packet, others by the overload.
    for op in (torch.ops.aten.convolution, torch.ops.aten.conv2d):
        for name in (op, op.default):
            env.override_op_definition(name, convolution)
    for name in (torch.ops.aten.max_pool2d_with_indices, torch.ops.aten.max_pool2d_with_indices.default):
        env.override_op_definition(name, max_pool)
    env.override_op_definition(  # torchax takes F.max_pool2d whole, before it becomes an aten op
        torch.nn.functional.max_pool2d, functools.partial(interop.call_jax, _functional_max_pool)
    )
    relu = functools.partial(interop.call_jax, functools.partial(elementwise, jax.nn.relu))
    for name in (torch.ops.aten.relu, torch.ops.aten.relu.default):  # relu_ (in place) calls the first
        env.override_op_definition(name, relu)
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
        _channels_last(input),
        *_kernels(weight, groups),
        stride=_pair(stride),
        padding=((pad_y, pad_y), (pad_x, pad_x)),
        dilation=_pair(dilation),
        groups=groups,
    )
    if bias is not None:
        out = out + bias
    return _channels_first(out)


def _max_pool(
    input: jax.Array,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """aten's ``max_pool2d_with_indices`` for ``[N, C, H, W]``: the maximum computed channels-last (a 2x2
    window by the built-ins' :func:`~filterviz.networks.layers.max_pool2x2`, whose gradient XLA fuses),
    the indices torchax's or, for 2x2, computed here (XLA drops them where nothing reads them)."""
    from torchax.ops import jaten

    window = _pair(kernel_size)
    strides = _pair(stride) if stride not in (None, [], ()) else window
    plain = input.ndim == 4 and not ceil_mode and _pair(dilation) == (1, 1) and _pair(padding) == (0, 0)
    if plain and window == strides == (2, 2):
        return _max_pool2x2_with_indices(input)
    torchax_own = jaten._aten_max_pool2d_with_indices(
        input, kernel_size, stride, padding, dilation, ceil_mode
    )
    if input.ndim != 4 or ceil_mode:
        return torchax_own
    out = jax.lax.reduce_window(
        _channels_last(input),
        -jnp.inf,
        jax.lax.max,
        (1, *window, 1),
        (1, *strides, 1),
        [(0, 0), *[(side, side) for side in _pair(padding)], (0, 0)],
        window_dilation=(1, *_pair(dilation), 1),
    )
    return _channels_first(out), torchax_own[1]


def _functional_max_pool(
    input: jax.Array,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    # torch.nn.functional.max_pool2d, as _max_pool computes it (with sizes as aten gives them: lists).
    window = list(_pair(kernel_size))
    strides = window if stride is None or stride in ([], ()) else list(_pair(stride))
    sizes = (window, strides, list(_pair(padding)), list(_pair(dilation)))
    output, indices = _max_pool(input, *sizes, ceil_mode)
    return (output, indices) if return_indices else output


def _max_pool2x2_with_indices(input: jax.Array) -> tuple[jax.Array, jax.Array]:
    # A 2x2, stride-2 max pool of [N, C, H, W], and torch's indices: each maximum's flat offset in its
    # H x W plane (the first of tied maxima, as torch's CPU kernel).
    from filterviz.networks.layers import max_pool2x2

    nhwc = _channels_last(input)
    batch, height, width, channels = nhwc.shape
    rows, columns = height // 2, width // 2
    windows = nhwc[:, : 2 * rows, : 2 * columns].reshape(batch, rows, 2, columns, 2, channels)
    flat = jnp.transpose(windows, (0, 1, 3, 2, 4, 5)).reshape(batch, rows, columns, 4, channels)
    best = jnp.argmax(flat, axis=3)  # [N, rows, columns, C]: 2 * dy + dx
    row = 2 * jnp.arange(rows)[:, None, None] + best // 2
    column = 2 * jnp.arange(columns)[None, :, None] + best % 2
    indices = jnp.transpose(row * width + column, (0, 3, 1, 2))  # int32: JAX's default integer
    return _channels_first(max_pool2x2(nhwc)), indices


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
