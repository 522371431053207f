"""Work split over devices, in one place for :func:`filterviz.render`, sweeps and the passes over photos.

One mesh axis (:data:`AXIS`) over the devices: a chunk of objectives (or a sweep's filters, or a batch of
photos) is split along it, each device computing its share with the engine's one vmapped program and no
communication. The devices are this process's (the GPUs of a host, a TPU's chips, CPU cores made
devices by :func:`filterviz.runtime.split_cpu_into_devices`) or, for sweeps and passes over photos,
every process's, joined by ``jax.distributed``.

Two rules live here and nowhere else:

- **chunk size** (:func:`chunk_size`): a multiple of the device count, no more per device than the work
  needs, so a few objectives on many devices are not padded to a full chunk each;
- **a shared start image goes in as one copy per device** (:func:`render_sharded`): inside
  ``shard_map`` a replicated input is device-invariant, and a gradient reaching it would be summed over
  the devices, mixing every objective's gradient into each.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from filterviz.core import segments
from filterviz.core.engine import Ascent, AscentState, Drawn, Tunables, render_and_measure
from filterviz.core.network import Params
from filterviz.core.objectives import Objective

AXIS = "batch"
"""The one mesh axis objectives, filters and photos are split over."""


def device_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def local_mesh(count: int) -> Mesh | None:
    """A mesh of as many of this process's devices as there are ``count`` objectives, or None for one."""
    devices = jax.local_devices()[: max(1, count)]
    return device_mesh(devices) if len(devices) > 1 else None


def chunk_size(per_device: int, count: int, devices: int) -> int:
    """Items per compiled call: ``per_device`` on each of ``devices``, no more than ``count`` needs, and
    a multiple of the device count.

    >>> chunk_size(256, 5, 4), chunk_size(2, 100, 4), chunk_size(8, 3, 1)
    (8, 8, 3)
    """
    return min(per_device, -(-count // devices)) * devices


def global_array(value: Any, sharding: NamedSharding) -> jax.Array:
    """A global array of a host value every process holds; each places the parts its devices hold."""
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def batch_sharding(batch_size: int) -> tuple[NamedSharding, NamedSharding, int]:
    """How a global batch of photos is split over every device of every process, in process order (each
    process's rows are one contiguous run): ``(split, replicated, photos per global batch)``."""
    devices = sorted(jax.devices(), key=lambda device: (device.process_index, device.id))
    mesh = device_mesh(devices)
    per_device = -(-batch_size // len(devices))  # a whole share for every device
    return (
        NamedSharding(mesh, PartitionSpec(AXIS)),
        NamedSharding(mesh, PartitionSpec()),
        per_device * len(devices),
    )


def _objective_specs(objective: Objective) -> Any:
    # Each leaf of a batched objective split over the mesh; an unbatched leaf replicated.
    return jax.tree.map(
        lambda axis: PartitionSpec() if axis is None else PartitionSpec(AXIS), objective.batch_axes(),
        is_leaf=lambda axis: axis is None,
    )  # fmt: skip


def _device_starts(start: jax.Array | None, mesh: Mesh) -> tuple[tuple[jax.Array, ...], bool]:
    # The start as shard_map's inputs, and whether it is shared: a shared one as one copy per device
    # (the module's rule), none as no input.
    if start is None:
        return (), False
    if start.ndim == 4:
        return (start,), False
    copies = jax.numpy.broadcast_to(start, (mesh.size, *start.shape))
    return (jax.lax.with_sharding_constraint(copies, NamedSharding(mesh, PartitionSpec(AXIS))),), True


def _share_start(start: tuple[jax.Array, ...], shared: bool) -> jax.Array | None:
    # Inside shard_map: this device's start (its copy of a shared one, or its objectives' own).
    return (start[0][0] if shared else start[0]) if start else None


def shard_render(
    ascent: Ascent,
    params: Params,
    objective: Objective,
    start: jax.Array | None,
    keys: jax.Array,
    tunables: Tunables,
    mesh: Mesh,
) -> Drawn:
    """:func:`filterviz.core.engine.render_and_measure` of ``B`` objectives (``B`` a multiple of
    ``mesh.size``), each device rendering ``B / mesh.size``; the results are split likewise. Call it
    inside ``jit``. ``start`` is None, ``[H, W, 3]`` shared (copied per device, see the module's rule)
    or ``[B, H, W, 3]``, one per objective."""
    split = PartitionSpec(AXIS)
    starts, shared = _device_starts(start, mesh)

    def render_share(params: Params, objective: Objective, keys: jax.Array, tunables: Tunables, *start):
        return render_and_measure(ascent, params, objective, _share_start(start, shared), keys, tunables)

    in_specs = (
        PartitionSpec(),
        _objective_specs(objective),
        split,
        PartitionSpec(),
        *(split for _ in starts),
    )
    share = jax.shard_map(render_share, mesh=mesh, in_specs=in_specs, out_specs=split)
    return share(params, objective, keys, tunables, *starts)


render_sharded = functools.partial(jax.jit, static_argnames=("ascent", "mesh"))(shard_render)
""":func:`shard_render`, jitted: the program :func:`filterviz.render` runs over several devices."""

# ----------------------------------------------------------------------------------------------------
# The segmented ascent (filterviz.core.segments) over a mesh: the same four programs, each device
# running its share of the objectives, so a watched render on several devices moves its bar too.

_sharded = functools.partial(jax.jit, static_argnames=("ascent", "mesh"))
_sharded_stage = functools.partial(jax.jit, static_argnames=("ascent", "stage", "mesh"))


@_sharded
def begin_sharded(
    ascent: Ascent, start: jax.Array | None, keys: jax.Array, tunables: Tunables, *, mesh: Mesh
) -> tuple[AscentState, jax.Array]:
    """:func:`filterviz.core.segments.begin_batch`, split over ``mesh``."""
    starts, shared = _device_starts(start, mesh)

    def share(keys: jax.Array, tunables: Tunables, *start: jax.Array) -> tuple[AscentState, jax.Array]:
        return segments.begin_batch(ascent, _share_start(start, shared), keys, tunables)

    split = PartitionSpec(AXIS)
    in_specs = (split, PartitionSpec(), *(split for _ in starts))
    return jax.shard_map(share, mesh=mesh, in_specs=in_specs, out_specs=split)(keys, tunables, *starts)


@functools.partial(jax.jit, static_argnames=("ascent", "stage", "frame", "mesh"))
def advance_sharded(
    ascent: Ascent,
    params: Params,
    objective: Objective,
    state: AscentState,
    steps: jax.Array,
    tunables: Tunables,
    stage: int = 0,
    frame: bool = False,
    *,
    mesh: Mesh,
) -> AscentState | tuple[AscentState, jax.Array]:
    """:func:`filterviz.core.segments.advance_batch`, split over ``mesh``."""

    def share(params: Params, objective: Objective, state: AscentState, steps: jax.Array, tunables: Tunables):
        return segments.advance_batch(ascent, params, objective, state, steps, tunables, stage, frame)

    split, whole = PartitionSpec(AXIS), PartitionSpec()
    in_specs = (whole, _objective_specs(objective), split, whole, whole)
    share_map = jax.shard_map(share, mesh=mesh, in_specs=in_specs, out_specs=split)
    return share_map(params, objective, state, steps, tunables)


@_sharded_stage
def next_stage_sharded(
    ascent: Ascent,
    state: AscentState,
    keys: jax.Array,
    start: jax.Array | None,
    stage: int,
    tunables: Tunables,
    *,
    mesh: Mesh,
) -> AscentState:
    """:func:`filterviz.core.segments.next_stage_batch`, split over ``mesh``."""
    starts, shared = _device_starts(start, mesh)

    def share(state: AscentState, keys: jax.Array, tunables: Tunables, *start: jax.Array) -> AscentState:
        return segments.next_stage_batch(ascent, state, keys, _share_start(start, shared), stage, tunables)

    split = PartitionSpec(AXIS)
    in_specs = (split, split, PartitionSpec(), *(split for _ in starts))
    share_map = jax.shard_map(share, mesh=mesh, in_specs=in_specs, out_specs=split)
    return share_map(state, keys, tunables, *starts)


@_sharded
def finish_sharded(
    ascent: Ascent,
    params: Params,
    objective: Objective,
    state: AscentState,
    start: jax.Array | None = None,
    *,
    mesh: Mesh,
) -> Drawn:
    """:func:`filterviz.core.segments.finish_batch`, split over ``mesh``."""
    starts, shared = _device_starts(start, mesh)

    def share(params: Params, objective: Objective, state: AscentState, *start: jax.Array) -> Drawn:
        return segments.finish_batch(ascent, params, objective, state, _share_start(start, shared))

    split = PartitionSpec(AXIS)
    in_specs = (PartitionSpec(), _objective_specs(objective), split, *(split for _ in starts))
    share_map = jax.shard_map(share, mesh=mesh, in_specs=in_specs, out_specs=split)
    return share_map(params, objective, state, *starts)
