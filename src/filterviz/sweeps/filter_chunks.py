"""A sweep's compute: the filters of a layer split over every device of every process, chunk by chunk.

The filters are split along :data:`filterviz.sharding.AXIS` of a mesh (``jax.distributed.initialize``
joins hosts into one runtime); :func:`filterviz.sharding.shard_render` runs the engine's vmapped render
on each device's share with no collectives, and each process reads back the shards its own devices hold.
So every filter is computed exactly once, whatever the number of devices or processes, and a filter's
picture does not depend on which device computed it (its PRNG key comes from its own index).
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from filterviz.core.ascent_checks import default_chunk
from filterviz.core.checks import padded_chunks
from filterviz.core.engine import Ascent, Tunables, filter_keys
from filterviz.core.methods import Method
from filterviz.core.network import Network, Params
from filterviz.core.objectives import channel
from filterviz.sharding import AXIS, chunk_size, device_mesh, global_array, shard_render


@functools.partial(jax.jit, static_argnames=("mesh", "ascent", "layer", "seed"))
def _render_filters(
    params: Params,
    filter_indices: jax.Array,
    start: jax.Array | None,
    *,
    mesh: Mesh,
    ascent: Ascent,
    layer: str,
    seed: int,
) -> tuple[jax.Array, jax.Array]:
    # One program per (mesh, ascent, layer, seed, chunk size). Each filter is keyed by its own index, so
    # its picture does not depend on the chunk or the device that drew it.
    drawn = shard_render(
        ascent, params, channel(layer, filter_indices), start, filter_keys(seed, filter_indices), Tunables(),
        mesh,
    )  # fmt: skip
    pixels = drawn.pixels[:, 0]
    if drawn.alpha is not None:  # the transparency travels as a fourth channel, in [0, 1]
        pixels = jnp.concatenate([pixels, drawn.alpha[:, 0, ..., None]], axis=-1)
    return pixels, drawn.activations


class Chunk(NamedTuple):
    """One compiled call of a :class:`ShardedAscent`: ``filters`` of ``layer`` and their results.

    ``images float32[C, H, W, 3]`` (``[C, H, W, 4]`` with a method's alpha last, in [0, 1]) and
    ``activations float32[C]`` are global arrays split over the mesh; ``C`` is the chunk size, rows
    from ``len(filters)`` on are padding.
    """

    layer: str
    filters: np.ndarray
    images: jax.Array
    activations: jax.Array

    def local_rows(self) -> Iterator[tuple[list[int], jax.Array, jax.Array]]:
        """Per device of this process: ``(filter indices, images, activations)`` of its real rows."""
        activations = {shard.device: shard.data for shard in self.activations.addressable_shards}
        for shard in self.images.addressable_shards:
            first = shard.index[0].start or 0
            rows = min(shard.data.shape[0], max(0, len(self.filters) - first))
            if rows:  # padding filters are computed but never returned
                filters = [int(f) for f in self.filters[first : first + rows]]
                yield filters, shard.data[:rows], activations[shard.device][:rows]


class ShardedAscent:
    """A sweep's rendering: the filters of a layer split over every device of a mesh, chunk by chunk.

    The parameters and the start image (``float32[H, W, 3]``, or None where each filter draws its own)
    are placed on the devices once; :meth:`run` then dispatches one compiled call per chunk of a layer's
    filters, each device rendering ``batch_size`` of them (vmapped) with no communication. Works the
    same with one device, several, or the devices of several processes joined by ``jax.distributed``.
    Each filter is keyed by ``seed`` and its index (:func:`filterviz.core.engine.filter_keys`).
    """

    def __init__(
        self,
        network: Network,
        params: Params,
        method: Method,
        start: np.ndarray | None,
        *,
        size: tuple[int, int],
        seed: int = 0,
        mesh: Mesh | None = None,
        batch_size: int | None = None,
    ):
        self.network, self.method, self.seed = network, method, seed
        self.ascent = Ascent(network, method, size)
        self.mesh = mesh or device_mesh()
        self.batch_size = batch_size
        self.height, self.width = size
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self._split = NamedSharding(self.mesh, PartitionSpec(AXIS))
        self._params = jax.tree.map(lambda array: global_array(array, replicated), params)
        self._start = None
        if start is not None:
            self._start = global_array(np.asarray(start, np.float32), replicated)
        self._programs: dict[tuple[str, int], concurrent.futures.Future[Any]] = {}
        self._programs_lock = threading.Lock()

    @property
    def precision(self) -> str:
        return self.method.precision

    def chunk_size(self, layer: str, count: int) -> int:
        """Filters per compiled call for ``count`` filters of ``layer``: a multiple of the device count."""
        device = self.mesh.devices.flat[0]
        per_device = self.batch_size or default_chunk(
            self.network, self.method, layer, self.height, self.width, device
        )
        return chunk_size(per_device, count, self.mesh.size)

    def my_count(self, layer: str, count: int) -> int:
        """How many of ``count`` filters of ``layer`` this process's devices compute."""
        size = self.chunk_size(layer, count)
        mine = 0
        for begin in range(0, count, size):
            real = min(size, count - begin)
            for index in self._split.addressable_devices_indices_map((size,)).values():
                first, end, _ = (index or (slice(None),))[0].indices(size)
                mine += max(0, min(end, real) - first)
        return mine

    def program(self, layer: str, size: int) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
        """The compiled call for chunks of ``size`` filters of ``layer``: ``int32[size] -> (images, acts)``.

        Compiled once per (layer, size), or loaded from the persistent compilation cache when it is on.
        Safe to call from several threads at once: one compiles, the others wait for it; that is how
        :meth:`compile_ahead` compiles the programs of later layers while the devices run earlier ones.
        """
        key = (self.network.layer(layer).name, size)
        with self._programs_lock:
            found = self._programs.get(key)
            owner = found is None
            pending = self._programs[key] = concurrent.futures.Future() if found is None else found
        if owner:
            try:
                indices = global_array(np.zeros(size, np.int32), self._split)
                lowered = _render_filters.lower(
                    self._params, indices, self._start, mesh=self.mesh, ascent=self.ascent, layer=key[0],
                    seed=self.seed,
                )  # fmt: skip
                pending.set_result(lowered.compile())
            except BaseException as error:
                pending.set_exception(error)
        compiled = pending.result()
        return lambda indices: compiled(self._params, indices, self._start)

    def compile_ahead(
        self, plan: Iterable[tuple[str, int]], threads: int
    ) -> concurrent.futures.ThreadPoolExecutor:
        """Start compiling, on ``threads`` host threads, the program of each ``(layer, filter count)``.

        Returns the executor; shut it down when done (``cancel_futures=True`` drops what has not begun).
        XLA compiles on the host, so a sweep's later layers compile while its devices run the earlier
        ones, and on a many-core host several layers compile at once. An error surfaces in :meth:`run`.
        """
        executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="filterviz-compile")
        for layer, count in plan:
            executor.submit(self.program, layer, self.chunk_size(layer, count))
        return executor

    def run(self, layer: str, filters: np.ndarray) -> Iterator[Chunk]:
        """Dispatch the chunks of ``filters`` of ``layer`` one by one (asynchronously, as JAX does)."""
        layer = self.network.layer(layer).name
        filters = np.asarray(filters, np.int32)
        if not len(filters):
            return
        size = self.chunk_size(layer, len(filters))
        program = self.program(layer, size)
        for rows, padded in padded_chunks(len(filters), size):
            images, achieved = program(global_array(filters[padded], self._split))
            yield Chunk(layer, filters[rows], images, achieved)
