"""Settings checked before any work, the arithmetic precisions, and the memory model that sizes chunks.

Every user-facing function checks its arguments here first, so bad input is a :class:`SettingError`
(or another :class:`FilterVizError`) with the value that would work, never a failure deep in XLA.

Precision: ``"float32"`` (full float32 convolutions on every device), ``"tf32"`` (float32 data with
TensorFloat-32 matrix math where the device has it: NVIDIA GPUs since Ampere; float32 elsewhere) and
``"bfloat16"`` (network and gradient in bfloat16, the image kept and updated in float32).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from filterviz.core.network import Network
from filterviz.errors import FilterIndexError, SettingError

PRECISIONS: tuple[str, ...] = ("float32", "tf32", "bfloat16")
"""The arithmetic an ascent may use; see the module docstring."""

# Per precision: the name jax.default_matmul_precision takes (it sets the convolutions' precision too)
# and the type the network and its gradient are computed in.
_MATMUL_PRECISION = {"float32": "float32", "tf32": "tensorfloat32", "bfloat16": "bfloat16"}
_COMPUTE_DTYPE = {"float32": jnp.float32, "tf32": jnp.float32, "bfloat16": jnp.bfloat16}


def check_seed(seed: object) -> int:
    """``seed`` if it is a whole number in ``0 .. 2**63 - 1``; else :class:`SettingError`."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**63:
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


LARGEST_COUNT = 2**31 - 1
"""Counts run as int32 on the device (a loop's steps, an index): beyond this they would wrap."""


def check_count(value: object, what: str, *, minimum: int = 1, maximum: int = LARGEST_COUNT) -> int:
    """``value`` if it is a whole number from ``minimum`` to ``maximum``; else :class:`SettingError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise SettingError(f"{what} must be a whole number of at least {minimum}, got {value!r}")
    if int(value) > maximum:
        raise SettingError(f"{what} must be at most {maximum:,}, got {int(value):,}")
    return int(value)


def check_precision(precision: object) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; else :class:`SettingError` listing them."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise SettingError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def compute_dtype(precision: str) -> jnp.dtype:
    """The type the network and its gradient run in under ``precision``."""
    return _COMPUTE_DTYPE[check_precision(precision)]


def matmul_precision(precision: str) -> contextlib.AbstractContextManager[Any]:
    """Context setting the precision of every convolution traced inside it, forward and backward."""
    return jax.default_matmul_precision(_MATMUL_PRECISION[check_precision(precision)])


def check_filters(
    network: Network, layer: str, filters: int | Sequence[int] | np.ndarray | jax.Array
) -> np.ndarray:
    """``filters`` as ``int32[N]``, each checked to be a filter of ``layer`` (raises FilterIndexError)."""
    spec = network.layer(layer)
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


# ----------------------------------------------------------------------------------------------------
# The memory model: how many filters fit a device, and which image sizes fit at all.

# Per-filter memory of a step is dominated by the activations kept for the backward pass; count them
# (elements up to the target layer) and allow for the gradients and temporaries alongside.
_BYTES_PER_ACTIVATION = 4 * 3
_CPU_MAX_BATCH = 1  # On CPU one filter per call is fastest (measured in bench/): batching only adds memory.
_ACCELERATOR_MEMORY_FRACTION = 0.4
_ACCELERATOR_MAX_BATCH = 256


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
    network: Network,
    layer: str,
    height: int,
    width: int,
    *,
    copies: int = 1,
    device: jax.Device | None = None,
) -> None:
    """Raise :class:`SettingError`, before any work, if a ``height x width`` image cannot be ascended at
    ``layer``: smaller than the layer needs, or more than the device's memory holds for one filter
    (``copies`` images of it), by the memory model that sizes the chunks. Both messages give the size
    that would work."""
    spec = network.layer(layer)
    minimum = network.minimum_size(spec.name)
    if height < minimum or width < minimum:
        raise SettingError(
            f"{height}x{width} is too small for {spec.name}: {network.name} leaves nothing of it there; "
            f"use at least {minimum}x{minimum}"
        )
    available = device_memory(device)

    def need(h: int, w: int) -> int:
        return network.activation_elements(spec.name, h, w) * _BYTES_PER_ACTIVATION * copies

    try:
        needed = need(height, width)
    except SettingError as error:  # a model that runs at some sizes only (a Dense behind the layer)
        raise SettingError(
            f"{spec.name} cannot be drawn at {height}x{width}: {error}; {minimum}x{minimum} works"
        ) from None
    if needed > available:
        scale = math.sqrt(available / needed)
        fits = (max(minimum, int(height * scale)), max(minimum, int(width * scale)))
        while need(*fits) > available and min(fits) > minimum:
            fits = (max(minimum, int(fits[0] * 0.95)), max(minimum, int(fits[1] * 0.95)))
        where = "this machine's memory" if (device or jax.devices()[0]).platform == "cpu" else "the device"
        raise SettingError(
            f"{height}x{width} at {spec.name} needs about {needed / 2**30:,.1f} GiB "
            f"for one filter, more than the {available / 2**30:,.1f} GiB of {where}; the largest that "
            f"fits is about {fits[0]}x{fits[1]}"
        )


def default_batch_size(
    network: Network, layer: str, height: int, width: int, device: jax.Device | None = None
) -> int:
    """Filters per compiled chunk for ``layer`` at ``height x width``, chosen from the device's memory.

    On accelerators: as many as fit in 40% of the device memory (at most 256). On CPU: 1, since XLA's
    CPU convolutions run no faster on a batch (measured in ``bench/``).
    """
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return _CPU_MAX_BATCH
    per_filter = network.activation_elements(layer, height, width) * _BYTES_PER_ACTIVATION
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


@jax.jit  # one program for the whole tree, not one per tensor shape
def _all_finite(arrays: list[Any]) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(array)) for array in arrays]))


def _on_host(leaf: object) -> bool:
    return not isinstance(leaf, jax.Array) or all(device.platform == "cpu" for device in leaf.devices())


def _finite(leaves: list[Any]) -> bool:
    # Leaves in host memory checked by NumPy where they lie (milliseconds, nothing to compile: a first call
    # waits less); an accelerator's by one program for all of them (no copy to the host).
    on_device = [leaf for leaf in leaves if not _on_host(leaf)]
    if not all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves if _on_host(leaf)):
        return False
    return not on_device or bool(_all_finite(on_device))


def check_params(network: Network, params: object) -> None:
    """Raise :class:`SettingError` before any work if ``params`` cannot be ``network``'s: not a mapping, a
    tensor missing or of another shape (another network's weights), or a value that is not finite."""
    expected = network.parameter_shapes or {}
    if params is None or (expected and not isinstance(params, Mapping)):
        raise SettingError(
            f"params must be {network.name}'s parameters (filterviz.load_weights), "
            f"got {type(params).__name__}"
        )
    for group, names in expected.items():
        layer = params.get(group) if isinstance(params, Mapping) else None
        for name, shape in names.items():
            value = layer.get(name) if isinstance(layer, Mapping) else None
            found = tuple(np.shape(value)) if value is not None else None
            if found != tuple(shape):
                what = "missing" if found is None else f"of shape {found}, not {tuple(shape)}"
                raise SettingError(
                    f"params do not fit {network.name}: {group}/{name} is {what} (another network's weights?)"
                )
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise SettingError(f"params of {network.name} hold no arrays")
    try:
        finite = _finite(leaves)
    except (TypeError, ValueError):
        raise SettingError(f"params of {network.name} must hold arrays of numbers") from None
    if not finite:
        raise SettingError(f"params of {network.name} hold NaN or infinite values; load the weights again")
