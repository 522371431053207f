"""Gradient ascent on the input image: the pure core, and the chunked, jitted entry point.

The core is written for one filter and one image, ``ascend_one(params, layer, filter_index, image)
-> float32[H, W, 3]``, a ``lax.fori_loop`` over normalised-gradient steps. :func:`ascend` vmaps it
over a chunk of filters and jits the result once per (layer, image shape, chunk size, steps,
precision); filter indices and the step size are traced, so every filter of a layer reuses the same
program.

Precision: ``"float32"`` (full float32 convolutions, the default), ``"tf32"`` (float32 data with
TensorFloat-32 matrix math where the device has it: NVIDIA GPUs since Ampere) and ``"bfloat16"``
(network and gradient in bfloat16, the image kept and updated in float32). On CPU, ``"tf32"`` equals
``"float32"``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from filterviz.errors import FilterIndexError, ImageError, SettingError
from filterviz.images import as_image, check_finite
from filterviz.model import (
    LAYER_NAMES,
    LAYERS,
    Params,
    forward,
    layer_spec,
    output_size,
    with_flipped_kernels,
)
from filterviz.objectives import filter_mean
from filterviz.progress import Progress, advance, count_of, wanted

GRADIENT_EPSILON = 1e-5
"""Added to the gradient's RMS before dividing, as the notebook does."""

PRECISIONS: tuple[str, ...] = ("float32", "tf32", "bfloat16")
"""The arithmetic an ascent may use; see the module docstring."""

# Per precision: the name jax.default_matmul_precision takes (it sets the convolutions' precision too)
# and the type the network and its gradient are computed in.
_MATMUL_PRECISION = {"float32": "float32", "tf32": "tensorfloat32", "bfloat16": "bfloat16"}
_COMPUTE_DTYPE = {"float32": jnp.float32, "tf32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_seed(seed: object) -> int:
    """``seed`` if it is a whole number in ``0 .. 2**63 - 1``; else :class:`SettingError`."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise SettingError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    return int(seed)


def check_step_size(step_size: object, what: str = "step size") -> float:
    """``step_size`` as a float if it is finite and positive; else :class:`SettingError`."""
    try:
        value = float(step_size)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SettingError(f"{what} must be a number, got {step_size!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingError(f"{what} must be a finite number above 0, got {step_size!r}")
    return value


def check_count(value: object, what: str, *, minimum: int = 1) -> int:
    """``value`` if it is a whole number of at least ``minimum``; else :class:`SettingError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise SettingError(f"{what} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; else :class:`SettingError` listing them."""
    if precision not in PRECISIONS:
        raise SettingError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def prepare_params(params: Params, precision: str) -> Params:
    """``params`` with flipped kernels, cast to ``precision``'s compute type: once, outside a loop of steps.

    XLA would otherwise flip and cast the kernels again at every step.
    """
    dtype = compute_dtype(precision)
    return jax.tree.map(lambda array: array.astype(dtype), with_flipped_kernels(params))


def compute_dtype(precision: str) -> jnp.dtype:
    """The type the network and its gradient run in under ``precision``."""
    return _COMPUTE_DTYPE[check_precision(precision)]


def matmul_precision(precision: str) -> jax.default_matmul_precision:
    """Context setting the precision of every convolution traced inside it, forward and backward."""
    return jax.default_matmul_precision(_MATMUL_PRECISION[check_precision(precision)])


def normalized_ascent_step(gradient: jax.Array, image: jax.Array, step_size: jax.Array | float) -> jax.Array:
    """The notebook's update, ``image + step_size * gradient / (RMS(gradient) + 1e-5)``; ``[H, W, 3]``."""
    rms = jnp.sqrt(jnp.mean(jnp.square(gradient)))
    return image + step_size * gradient / (rms + GRADIENT_EPSILON)


@dataclasses.dataclass(frozen=True)
class StepReport:
    """How a compiled loop tells the host how far it has come: it runs as ``segments`` loops in a row
    and after each calls ``callback(steps done)`` on the host (static: equal reports share one program).
    """

    callback: Callable[[int], None]
    segments: int = 10


State = TypeVar("State")


def _report(report: StepReport, steps: int, state: State) -> State:
    # The host callback reads one value of the state, so it runs after the segment that made it; the
    # state then takes a zero from it, so the next segment runs after it and nothing is pruned. Under
    # vmap it runs once for the whole batch and counts each element's steps.
    leaves, tree = jax.tree.flatten(state)
    position = next(i for i, leaf in enumerate(leaves) if jnp.issubdtype(leaf.dtype, jnp.floating))
    marker = leaves[position].reshape(-1)[0].astype(jnp.float32)

    def on_host(values: np.ndarray) -> np.ndarray:
        report.callback(steps * int(np.size(values)))
        return np.zeros(np.shape(values), np.float32)

    zero = jax.pure_callback(
        on_host, jax.ShapeDtypeStruct((), jnp.float32), marker, vmap_method="expand_dims"
    )
    leaves[position] = leaves[position] + zero.astype(leaves[position].dtype)
    return jax.tree.unflatten(tree, leaves)


def run_steps(
    steps: int, step: Callable[[Any, State], State], state: State, report: StepReport | None
) -> State:
    """``state = step(i, state)`` for ``i`` in ``range(steps)``, in ``lax.fori_loop``; with ``report``, as a
    few loops in a row with a report to the host after each (nothing crosses to the host inside one)."""
    if report is None or steps == 0:
        return lax.fori_loop(0, steps, step, state)
    size = -(-steps // max(1, min(report.segments, steps)))
    for begin in range(0, steps, size):
        end = min(begin + size, steps)
        state = _report(report, end - begin, lax.fori_loop(begin, end, step, state))
    return state


def ascend_one(
    params: Params,
    layer: str,
    filter_index: jax.Array | int,
    image: jax.Array,
    *,
    steps: int,
    step_size: jax.Array | float,
    precision: str = "float32",
    report: StepReport | None = None,
) -> jax.Array:
    """``steps`` normalised-gradient steps on ``image float32[H, W, 3]`` raising one filter's mean.

    The image stays float32 whatever ``precision`` (one of :data:`PRECISIONS`) the network runs in.
    ``report`` has the loop tell the host how many steps it has done (see :func:`run_steps`).
    """
    dtype = compute_dtype(precision)
    gradient_of = jax.grad(filter_mean, argnums=3)
    prepared = prepare_params(params, precision)

    def step(_: jax.Array, current: jax.Array) -> jax.Array:
        gradient = gradient_of(prepared, layer, filter_index, current.astype(dtype))
        return normalized_ascent_step(gradient.astype(jnp.float32), current, step_size)

    with matmul_precision(precision):
        return run_steps(steps, step, image, report)


@functools.partial(jax.jit, static_argnames=("layer", "steps", "precision", "report"))
def ascend_batch(
    params: Params,
    layer: str,
    filter_indices: jax.Array,
    images: jax.Array,
    step_size: jax.Array | float,
    steps: int,
    precision: str = "float32",
    report: StepReport | None = None,
) -> jax.Array:
    """:func:`ascend_one` vmapped over ``filter_indices int32[B]`` and ``images float32[B, H, W, 3]``."""
    one = functools.partial(
        ascend_one, params, layer, steps=steps, step_size=step_size, precision=precision, report=report
    )
    return jax.vmap(one)(filter_indices, images)


def ascend_and_measure(
    params: Params,
    layer: str,
    filter_indices: jax.Array,
    start: jax.Array,
    step_size: jax.Array | float,
    *,
    steps: int,
    precision: str = "float32",
) -> tuple[jax.Array, jax.Array]:
    """Ascend every filter of ``filter_indices int32[B]`` from one shared ``start float32[H, W, 3]``.

    Returns ``(images float32[B, H, W, 3], activations float32[B])``: the ascended images and each
    filter's mean activation on its own image, measured in float32 whatever ``precision`` the ascent
    used, so rankings from different precisions compare. Not jitted: sweeps wrap it in their sharded jit.
    """
    one = functools.partial(ascend_one, params, layer, steps=steps, step_size=step_size, precision=precision)
    images = jax.vmap(one, in_axes=(0, None))(filter_indices, start)
    return images, filter_means(params, layer, filter_indices, images)


def filter_means(params: Params, layer: str, filter_indices: jax.Array, images: jax.Array) -> jax.Array:
    """Each filter's mean activation on its own image, in float32: ``int32[B], float32[B, H, W, 3] ->
    float32[B]`` (the achieved activation that ranks filters). Not jitted; see :func:`achieved`."""
    with jax.default_matmul_precision("float32"):
        return jax.vmap(functools.partial(filter_mean, params, layer))(filter_indices, images)


_filter_means = jax.jit(filter_means, static_argnames=("layer",))


def achieved(
    params: Params, layer: str, filters: int | Sequence[int] | np.ndarray, images: jax.Array | np.ndarray
) -> np.ndarray:
    """The mean activation each filter of ``filters [N]`` reaches on its image ``images [N, H, W, 3]``
    (e.g. :func:`ascend`'s result), in float32: ``-> float32[N]``. Zero means the filter never fired.
    Runs in chunks sized from the device's memory."""
    layer = layer_spec(layer).name
    indices = check_filters(layer, filters)
    images = _check_image(images, len(indices))
    if images.ndim != 4:
        raise ImageError(None, f"images must be [N, H, W, 3], one per filter, got {tuple(images.shape)}")
    check_image_size(layer, images.shape[1], images.shape[2])
    chunk = max(1, min(len(indices), default_batch_size(layer, images.shape[1], images.shape[2])))
    values = [
        _filter_means(params, layer, jnp.asarray(indices[padded]), images[padded])[: len(rows)]
        for rows, padded in padded_chunks(len(indices), chunk)
    ]
    return np.asarray(jnp.concatenate(values)) if values else np.zeros(0, np.float32)


# ----------------------------------------------------------------------------------------------------
# The public entry point: checks, chunking, default chunk size.

# Per-filter memory of a step is dominated by the activations kept for the backward pass; count them
# (elements up to the target layer) and allow for the gradients and temporaries alongside.
_BYTES_PER_ACTIVATION = 4 * 3
_CPU_MAX_BATCH = 1  # On CPU one filter per call is fastest (measured in bench/): batching only adds memory.
_ACCELERATOR_MEMORY_FRACTION = 0.4
_ACCELERATOR_MAX_BATCH = 256


def activation_elements(layer: str, height: int, width: int) -> int:
    """Number of activation values one image produces up to and including ``layer`` (a memory estimate)."""
    total = height * width * 3
    for spec in LAYERS[: LAYER_NAMES.index(layer_spec(layer).name) + 1]:
        h, w = output_size(spec.name, height, width)
        total += h * w * spec.channels
    return total


def minimum_size(layer: str) -> int:
    """The smallest height and width ``layer`` gives an output for: 2 to the power of its poolings."""
    return 2 ** layer_spec(layer).pools_before_output


def device_memory(device: jax.Device | None = None) -> int:
    """Bytes a computation may use on ``device``: an accelerator's limit, or the host's physical memory."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        return int((device.memory_stats() or {}).get("bytes_limit", 16 << 30))
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every system reports it
        return 16 << 30


def check_image_size(
    layer: str, height: int, width: int, *, copies: int = 1, device: jax.Device | None = None
) -> None:
    """Raise :class:`SettingError`, before any work, if a ``height x width`` image cannot be ascended at
    ``layer``: smaller than :func:`minimum_size`, or more than the device's memory holds for one filter
    (``copies`` images of it), by the memory model that sizes the chunks. Both messages give the size that
    would work."""
    spec = layer_spec(layer)
    minimum = minimum_size(spec.name)
    if height < minimum or width < minimum:
        raise SettingError(
            f"{height}x{width} is too small for {spec.name}: its {spec.pools_before_output} "
            f"poolings leave nothing of it; use at least {minimum}x{minimum}"
        )
    available = device_memory(device)

    def need(h: int, w: int) -> int:
        return activation_elements(spec.name, h, w) * _BYTES_PER_ACTIVATION * copies

    if need(height, width) > available:
        scale = math.sqrt(available / need(height, width))
        fits = (max(minimum, int(height * scale)), max(minimum, int(width * scale)))
        while need(*fits) > available and min(fits) > minimum:
            fits = (max(minimum, int(fits[0] * 0.95)), max(minimum, int(fits[1] * 0.95)))
        where = "this machine's memory" if (device or jax.devices()[0]).platform == "cpu" else "the device"
        raise SettingError(
            f"{height}x{width} at {spec.name} needs about {need(height, width) / 2**30:,.1f} GiB "
            f"for one filter, more than the {available / 2**30:,.1f} GiB of {where}; the largest that "
            f"fits is about {fits[0]}x{fits[1]}"
        )


def default_batch_size(layer: str, height: int, width: int, device: jax.Device | None = None) -> int:
    """Filters per compiled chunk for ``layer`` at ``height x width``, chosen from the device's memory.

    On accelerators: as many as fit in 40% of the device memory (at most 256). On CPU: 1, since XLA's
    CPU convolutions run no faster on a batch (measured in ``bench/``).
    """
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return _CPU_MAX_BATCH
    per_filter = activation_elements(layer, height, width) * _BYTES_PER_ACTIVATION
    budget = int(device_memory(device) * _ACCELERATOR_MEMORY_FRACTION)
    return max(1, min(_ACCELERATOR_MAX_BATCH, budget // per_filter))


def padded_chunks(count: int, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Rows ``0..count-1`` in chunks of ``size``: ``(rows int[n], padded int[size])`` per chunk.

    ``padded`` repeats the chunk's last row up to ``size``, so the last chunk reuses the compiled program
    of the others; callers keep the first ``len(rows)`` results.
    """
    for begin in range(0, count, size):
        rows = np.arange(begin, min(begin + size, count))
        yield rows, np.concatenate([rows, np.repeat(rows[-1:], size - len(rows))])


def check_filters(layer: str, filters: int | Sequence[int] | np.ndarray | jax.Array) -> np.ndarray:
    """``filters`` as ``int32[N]``, each checked to be a filter of ``layer`` (raises FilterIndexError)."""
    spec = layer_spec(layer)
    try:
        indices = np.atleast_1d(np.asarray(filters))
    except (TypeError, ValueError):
        indices = np.asarray([None])
    if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
        raise SettingError(f"filters must be a filter index or a 1-D sequence of them, got {filters!r}")
    for index in indices:
        if not 0 <= index < spec.channels:
            raise FilterIndexError(spec.name, int(index), spec.channels)
    return indices.astype(np.int32)


def _check_image(image: jax.Array | np.ndarray, count: int) -> jax.Array:
    # A shared start stays [H, W, 3] and is broadcast one chunk at a time, so a sweep over thousands of
    # filters never holds thousands of copies of it.
    try:
        shape = tuple(np.shape(image))
    except (TypeError, ValueError):
        shape = ()
    if (len(shape) == 3 and shape[-1] == 3) or (len(shape) == 4 and shape[-1] == 3 and shape[0] == count):
        try:
            array = jnp.asarray(image, jnp.float32)
        except (TypeError, ValueError):
            raise ImageError(None, f"start image must be numbers, got {type(image).__name__}") from None
        check_finite(array, "the start image")
        return array
    raise ImageError(
        None, f"start image must be [H, W, 3] or [{count}, H, W, 3] (one per filter), got {shape}"
    )


def ascend(
    params: Params,
    layer: str,
    filters: int | Sequence[int] | np.ndarray | jax.Array,
    image: jax.Array | np.ndarray,
    *,
    steps: int = 20,
    step_size: float = 1.0,
    batch_size: int | None = None,
    precision: str = "float32",
    progress: bool | None = None,
) -> jax.Array:
    """Gradient ascent that makes each filter of ``filters`` fire as strongly as possible.

    For each filter: the loss is the filter's mean activation over the image, its gradient with respect
    to the image is divided by its RMS + 1e-5, and ``image += step_size * gradient``, ``steps`` times,
    inside one ``lax.fori_loop``. Filters run ``batch_size`` at a time through one vmapped, jitted
    program (the last chunk is padded, so the program is reused); memory stays bounded for any number.

    Args:
      params: VGG16 parameters from :func:`filterviz.load_weights`.
      layer: a layer name, e.g. ``"block4_conv1"`` (pool layers have filters too).
      filters: one filter index or a sequence of them, ``N`` in all.
      image: the start, ``float32[H, W, 3]`` shared by all filters or ``float32[N, H, W, 3]``.
      steps: ascent steps per filter.
      step_size: pixels moved per step, in units of the normalised gradient.
      batch_size: filters per compiled chunk; default from the device's memory.
      precision: ``"float32"``, ``"tf32"`` or ``"bfloat16"`` (see the module docstring).
      progress: show a bar of the steps done, rate and time left (default: on a terminal or in a
        notebook, not in CI; see :mod:`filterviz.progress`).

    Returns:
      ``float32[N, H, W, 3]``: the ascended images, in the order of ``filters``.

    Raises:
      UnknownLayerError, FilterIndexError, ImageError: bad layer, filter or image shape.
      SettingError: negative steps, batch size below 1, unknown precision.

    >>> import jax, filterviz
    >>> params = filterviz.init_params(jax.random.key(0))
    >>> start = filterviz.random_image(jax.random.key(1), 32, 32)
    >>> filterviz.ascend(params, "block1_conv1", [0, 5, 7], start, steps=3).shape
    (3, 32, 32, 3)
    """
    layer = layer_spec(layer).name
    indices = check_filters(layer, filters)
    check_precision(precision)
    steps = check_count(steps, "steps", minimum=0)
    step_size = check_step_size(step_size)
    if batch_size is not None:
        check_count(batch_size, "batch_size")
    starts = _check_image(image, len(indices))
    shared = starts.ndim == 3
    height, width = starts.shape[-3:-1]
    check_image_size(layer, height, width)
    if not len(indices):
        return jnp.zeros((0, height, width, 3), jnp.float32)
    chunk = min(batch_size or default_batch_size(layer, height, width), len(indices))
    results = []
    described = f"{layer}, {count_of(len(indices), 'filter')}"
    with Progress(len(indices) * steps, "step", described, enabled=wanted(progress)) as bar:
        report = StepReport(advance) if bar.enabled else None
        # Dispatch every chunk before reading any back: JAX queues them, so the device never idles on Python.
        for rows, padded in padded_chunks(len(indices), chunk):
            if shared:
                chunk_starts = jnp.broadcast_to(starts, (chunk, height, width, 3))
            else:
                chunk_starts = starts[padded]
            ascended = ascend_batch(
                params, layer, jnp.asarray(indices[padded]), chunk_starts, step_size, steps, precision, report
            )
            results.append(ascended[: len(rows)])
        images = results[0] if len(results) == 1 else jnp.concatenate(results)
        if bar.enabled:
            images.block_until_ready()  # the bar closes once the device has reported every step
    return images


@functools.partial(jax.jit, static_argnames=("layer", "precision"))
def _activations(params: Params, images: jax.Array, layer: str, precision: str) -> jax.Array:
    with matmul_precision(precision):
        prepared = jax.tree.map(lambda array: array.astype(compute_dtype(precision)), params)
        outputs = forward(prepared, images.astype(compute_dtype(precision)), [layer])[layer]
    return outputs.astype(jnp.float32)


def activations(
    params: Params, images: jax.Array | np.ndarray, layer: str, *, precision: str = "float32"
) -> jax.Array:
    """The activations of ``layer``: ``float32[N, H, W, 3] -> float32[N, h, w, C]`` (jitted per layer/shape).

    A single ``[H, W, 3]`` image is treated as a batch of one. ``precision`` as :func:`ascend`'s; the
    default is full float32 on every device (a GPU's own default for float32 convolutions is TF32,
    whose relative error grows to about 1e-3 by block5).
    """
    layer = layer_spec(layer).name
    check_precision(precision)
    try:
        images = jnp.asarray(images, jnp.float32)
    except (TypeError, ValueError):
        raise ImageError(None, f"images must be an array of numbers, got {type(images).__name__}") from None
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ImageError(None, f"images must be [N, H, W, 3], got {tuple(images.shape)}")
    check_image_size(layer, images.shape[1], images.shape[2])
    return _activations(params, images, layer, precision)


def layer_image(
    params: Params,
    layer: str,
    filter_index: int,
    image: jax.Array | np.ndarray,
    *,
    steps: int = 20,
    step_size: float = 1.0,
    precision: str = "float32",
) -> np.ndarray:
    """The notebook's function: one filter's picture ``uint8[H, W, 3]``, ascended from ``image [H, W, 3]``."""
    ascended = ascend(
        params, layer, [filter_index], image, steps=steps, step_size=step_size, precision=precision
    )
    return as_image(ascended[0])
