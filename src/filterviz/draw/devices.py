"""A chunk of objectives split over this process's devices (the GPUs of a host, a TPU's chips, CPU cores
made devices by :func:`filterviz.runtime.split_cpu_into_devices`), each rendering its share with the
engine's one vmapped program and no communication, as a sweep splits its filters."""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from filterviz.core.engine import Ascent, Drawn, Tunables, render_and_measure
from filterviz.core.network import Params
from filterviz.core.objectives import Objective

AXIS = "objectives"
"""The mesh axis a chunk's objectives are split over."""


def objective_mesh(count: int) -> Mesh | None:
    """A mesh of as many of this process's devices as there are ``count`` objectives, or None for one."""
    devices = jax.local_devices()[: max(1, count)]
    return Mesh(np.asarray(devices), (AXIS,)) if len(devices) > 1 else None


def chunk_size(per_device: int, count: int, mesh: Mesh | None) -> int:
    """Objectives per compiled call: ``per_device`` on each device, no more than ``count`` needs, and a
    multiple of the device count."""
    devices = mesh.size if mesh is not None else 1
    return min(per_device, -(-count // devices)) * devices


@functools.partial(jax.jit, static_argnames=("ascent", "mesh"))
def render_on_devices(
    ascent: Ascent,
    params: Params,
    objective: Objective,
    start: jax.Array | None,
    keys: jax.Array,
    tunables: Tunables,
    *,
    mesh: Mesh,
) -> Drawn:
    """:func:`filterviz.core.engine.render_and_measure` of a chunk of ``B`` objectives (``B`` a multiple
    of ``mesh.size``), each device rendering ``B / mesh.size`` of them; the results are split likewise.

    A shared start image (``[H, W, 3]``) goes in as one copy per device, split like the objectives: in
    ``shard_map`` a replicated input is device-invariant, and a gradient reaching it would be summed over
    the devices, mixing every objective's into each."""
    split = PartitionSpec(AXIS)
    objective_specs = jax.tree.map(
        lambda axis: PartitionSpec() if axis is None else split, objective.batch_axes(),
        is_leaf=lambda axis: axis is None,
    )  # fmt: skip
    shared_start = start is not None and start.ndim == 3
    if shared_start:
        copies = jax.numpy.broadcast_to(start, (mesh.size, *start.shape))
        start = jax.lax.with_sharding_constraint(copies, NamedSharding(mesh, split))
    starts = () if start is None else (start,)

    def render_share(params: Params, objective: Objective, keys: jax.Array, tunables: Tunables, *start):
        first = start[0] if start else None
        if shared_start:
            first = first[0]
        return render_and_measure(ascent, params, objective, first, keys, tunables)

    in_specs = (PartitionSpec(), objective_specs, split, PartitionSpec(), *(split for _ in starts))
    share = jax.shard_map(render_share, mesh=mesh, in_specs=in_specs, out_specs=split)
    return share(params, objective, keys, tunables, *starts)
