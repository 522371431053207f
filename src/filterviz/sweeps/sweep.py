"""Sweeps: a picture of every chosen filter of every chosen layer, sharded over devices and hosts.

A sweep writes into one folder (:mod:`filterviz.sweeps.layout` says what it may hold,
:mod:`filterviz.sweeps.folder` and :mod:`filterviz.sweeps.manifest` how it is checked)::

    sweep.json                    the settings the pictures were made with
    manifest.jsonl                one JSON line per finished filter, with its picture's size and sha256
                                  (``manifest.p<i>.jsonl`` per process when several share the work)
    block4_conv1/0007.png         each filter's picture (``0007.npy``: the float32 image, on request)
    sheets/block4_conv1.png       a contact sheet per layer      (written by filterviz.sweeps.atlas)
    index.html                    the atlas page                 (written by filterviz.sweeps.atlas)

Sharding: the filters of a layer form one axis split over a :class:`jax.sharding.Mesh` of every device
of every process (``jax.distributed.initialize`` joins hosts into one runtime); a ``shard_map`` runs the
vmapped ascent on each device's share with no collectives, and each process writes the pictures of the
shards its own devices hold. So every filter is computed and written exactly once, whatever the number of
devices or processes.

Safety: one process writes a folder at a time (an OS lock; a second sweep is refused). Every file
appears by rename, complete or not at all; a manifest line is written only after its picture, in one
``write`` call, so a killed sweep leaves at worst a line without its newline, which the next start cuts
off. Starting again with the same settings skips every filter whose picture is whole (size and checksum)
and redoes the rest; other settings, or a manifest without its settings record, are refused
(:class:`SweepError`) unless ``overwrite`` clears the folder's sweep first, which deletes only what
the sweep wrote. A sweep never replaces a file it did not write.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from filterviz.core.checks import check_count
from filterviz.core.methods import Method
from filterviz.core.network import Network, Params
from filterviz.deprecation import renamed
from filterviz.errors import SweepError
from filterviz.io.files import atomic_write, encode_npy, encode_png, output_path
from filterviz.jobs.folder import FolderLock
from filterviz.jobs.multihost import agree, barrier
from filterviz.networks import get_network
from filterviz.progress import Progress, wanted
from filterviz.sweeps.filter_chunks import ShardedAscent
from filterviz.sweeps.folder import check_targets, prepare_folder
from filterviz.sweeps.layout import picture_path
from filterviz.sweeps.manifest import ManifestScan, ManifestWriter, digest, finite_or_text, scan_manifest
from filterviz.sweeps.plan import SweepPlan, plan_sweep

# Chunks dispatched ahead of the one being written: enough that the device always has queued work
# while the host encodes PNGs, few enough to bound the host memory held by finished images.
_CHUNKS_IN_FLIGHT = 2
# At most this many programs of a sweep compile at once.
_COMPILE_THREADS = 8


class SweepResult(NamedTuple):
    """What one call of :func:`sweep` did, for this process."""

    folder: Path
    written: int  # filters computed and written by this process in this call
    skipped: int  # filters of the plan already finished by an earlier call (any process)
    seconds: float
    problems: tuple[str, ...] = ()  # damaged manifest lines or pictures found, whose filters were redone


@renamed(folder="out")
def sweep(
    params: Params,
    out: str | os.PathLike[str],
    *,
    layers: Iterable[str] | None = None,
    filters: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    network: Network | str = "vgg16",
    method: str | Method = "notebook",
    size: int | tuple[int, int] = (128, 128),
    seed: int = 0,
    start: np.ndarray | None = None,
    raw: bool = False,
    batch_size: int | None = None,
    overwrite: bool = False,
    mesh: Mesh | None = None,
    progress: bool | None = None,
    writer_threads: int = 4,
    **settings: Any,
) -> SweepResult:
    """Ascend and save every planned filter, sharded over ``mesh``; resumes what a folder already holds.

    Args:
      params: the network's parameters from :func:`filterviz.load_weights`.
      out: the sweep's folder (created if needed); see the module docstring for its layout.
      layers: the layers to draw (default: the network's visual layers, for VGG16 all 13 conv layers).
      filters: the filters of each (default all: for VGG16 4,224); one sequence for every layer, or a
        ``{layer: sequence}`` mapping (see :func:`filterviz.sweeps.plan.plan_filters`).
      network: ``"vgg16"`` (default), another built-in, or a network of your own; recorded with its
        weights' digest, so a resume with another is refused.
      method: ``"notebook"`` (the default), ``"lucid"``, ``"maco"``, ``"octaves"`` or a
        :class:`filterviz.core.methods.Method`.
      size: ``H`` or ``(H, W)`` of the pictures; ignored when ``start`` is given.
      seed: seed of the noise start, shared by every filter as in the notebook; with another method,
        filter ``i`` uses ``fold_in(key(seed), i)`` for its start and transforms.
      start: a start image ``float32[H, W, 3]`` (0-255, e.g. a photo) instead of noise (pixel methods).
      raw: also save each ascended float32 image as ``.npy``.
      batch_size: filters per device per compiled chunk (default from the device's memory).
      overwrite: clear a previous sweep with other settings from ``folder`` instead of refusing.
      mesh: devices to shard over (default every device of every process).
      progress: show a progress bar (default: on a terminal or in a notebook, and not in CI).
      writer_threads: host threads encoding and writing PNGs while the devices compute.
      **settings: the method's settings (:func:`filterviz.get_method`), e.g. ``steps``, ``step_size``,
        ``precision``; the notebook's default to 20 steps of 1.0, as :func:`filterviz.ascend`.

    Returns:
      A :class:`SweepResult` for this process.

    Raises:
      UnknownLayerError, FilterIndexError, SettingError, ImageError: bad arguments, before any work.
      SweepError: ``out`` holds a sweep with other settings.
      OutputError: the folder or a file cannot be written; everything finished before stays.
    """
    began = time.perf_counter()
    folder = output_path(out)
    network = get_network(network)
    plan = plan_sweep(
        params, network, layers=layers, filters=filters, size=size, seed=seed, start=start, method=method,
        raw=raw, settings=settings,
    )  # fmt: skip
    if batch_size is not None:
        check_count(batch_size, "batch_size")
    check_count(writer_threads, "writer_threads")
    lock = FolderLock(folder, active=jax.process_index() == 0)
    prepare_folder(folder, plan.settings, network, overwrite, lock)
    with lock:  # taken by prepare_folder; released when the sweep ends, however it ends
        scan = scan_manifest(folder)
        pending, skipped = _pending(plan, scan)
        _refuse_foreign_targets(folder, pending, raw, scan)
        recorded = plan.settings
        ascent = ShardedAscent(
            network, params, plan.method, plan.start, size=(recorded.height, recorded.width),
            seed=recorded.seed, mesh=mesh, batch_size=batch_size,
        )  # fmt: skip
        mine = sum(ascent.my_count(layer, len(indices)) for layer, indices in pending)
        writer = _RowWriter(folder, plan, Progress(mine, "filter", enabled=wanted(progress)))
        try:
            written = _run(ascent, pending, writer, folder, writer_threads)
        finally:
            writer.manifest.close()
            writer.bar.close()
        barrier("filterviz sweep done")
        return SweepResult(folder, written, skipped, time.perf_counter() - began, tuple(scan.problems))


def _pending(plan: SweepPlan, scan: ManifestScan) -> tuple[list[tuple[str, np.ndarray]], int]:
    """The filters without a whole picture in any process's view of the manifest, and how many have one."""
    finished = {(entry["layer"], int(entry["filter"])) for entry in scan.entries}
    done = agree(
        np.array([(layer, int(f)) in finished for layer, indices in plan.filters for f in indices], bool)
    )
    pending, offset = [], 0
    for layer, indices in plan.filters:
        left = indices[~done[offset : offset + len(indices)]]
        offset += len(indices)
        if len(left):
            pending.append((layer, left))
    return pending, int(done.sum())


def _refuse_foreign_targets(
    folder: Path, pending: list[tuple[str, np.ndarray]], raw: bool, scan: ManifestScan
) -> None:
    """:func:`check_targets` on every process; all stop if any one must."""
    problem = None
    try:
        check_targets(folder, pending, raw, scan.named)
    except SweepError as error:
        problem = error
    if agree(np.array([problem is not None]))[0]:
        raise problem or SweepError("another process of this sweep found files it must not replace")


class _RowWriter:
    """Writes finished filters: each picture (and ``.npy``), then its manifest line; thread-safe."""

    def __init__(self, folder: Path, plan: SweepPlan, bar: Progress):
        self.folder, self.bar, self.raw = folder, bar, plan.settings.raw
        self.to_pictures = plan.method.to_pictures
        name = "manifest.jsonl" if jax.process_count() == 1 else f"manifest.p{jax.process_index()}.jsonl"
        self.manifest = ManifestWriter(folder / name)
        # Each manifest line repeats the settings that made its picture (the weights' digest and the raw
        # flag stay in sweep.json).
        unrepeated = ("raw", "weights", "method_settings")
        self.common = {k: v for k, v in dataclasses.asdict(plan.settings).items() if k not in unrepeated}

    def __call__(self, layer: str, filters: list[int], images: Any, achieved: Any) -> int:
        images, achieved = np.asarray(images), np.asarray(achieved)  # waits for the device
        alpha = images[..., 3] if images.shape[-1] == 4 else None  # a method's transparency
        pictures = self.to_pictures(images[..., :3], alpha)
        for row, filter_index in enumerate(filters):
            entry = {
                "layer": layer,
                "filter": filter_index,
                "activation": finite_or_text(float(achieved[row])),
            }
            entry.update(self._write(picture_path(layer, filter_index), encode_png(pictures[row])))
            if self.raw:
                raw = encode_npy(images[row, ..., :3])
                saved = self._write(picture_path(layer, filter_index, ".npy"), raw)
                entry.update(raw=saved["png"], raw_bytes=saved["bytes"], raw_sha256=saved["sha256"])
            self.manifest.append({**entry, **self.common})
            self.bar.update()
        return len(filters)

    def _write(self, relative: str, data: bytes) -> dict[str, Any]:
        atomic_write(self.folder / relative, data, durable=False)
        return {"png": relative, "bytes": len(data), "sha256": digest(data)}


def _run(
    ascent: ShardedAscent,
    pending: list[tuple[str, np.ndarray]],
    writer: _RowWriter,
    folder: Path,
    writer_threads: int,
) -> int:
    """The scheduler: chunks dispatched to the devices, their rows written on host threads while the
    devices compute the next ones, later layers compiled ahead; returns the filters written."""
    # Later layers compile on spare host cores while the devices run the earlier ones.
    compile_threads = max(1, min(len(pending), (os.cpu_count() or 2) // 2, _COMPILE_THREADS))
    compiler = ascent.compile_ahead([(layer, len(indices)) for layer, indices in pending], compile_threads)
    pool = concurrent.futures.ThreadPoolExecutor(writer_threads, thread_name_prefix="filterviz-writer")
    in_flight: collections.deque[list[concurrent.futures.Future[int]]] = collections.deque()
    written = 0
    try:
        for futures in _dispatch(ascent, pending, writer, pool, folder):
            in_flight.append(futures)
            while len(in_flight) > _CHUNKS_IN_FLIGHT:
                written += sum(future.result() for future in in_flight.popleft())
        while in_flight:
            written += sum(future.result() for future in in_flight.popleft())
    except KeyboardInterrupt:
        pool.shutdown(wait=True)  # write what the devices already computed: no lost work
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # a writer failed (disk full): stop soon
        raise
    finally:
        compiler.shutdown(wait=False, cancel_futures=True)
        pool.shutdown(wait=True)
    return written


def _dispatch(
    ascent: ShardedAscent,
    pending: list[tuple[str, np.ndarray]],
    writer: _RowWriter,
    pool: concurrent.futures.ThreadPoolExecutor,
    folder: Path,
) -> Iterator[list[concurrent.futures.Future[int]]]:
    """Each chunk's rows handed to the writers, one future per device of this process."""
    for layer, indices in pending:
        writer.bar.describe(layer)
        (folder / layer).mkdir(exist_ok=True)
        with writer.bar.waiting(f"compiling {layer}"):  # run() then takes the compiled program
            ascent.program(layer, ascent.chunk_size(layer, len(indices)))
        for chunk in ascent.run(layer, indices):
            # JAX dispatched the chunk asynchronously, so the device computes the next chunks while these
            # are written.
            rows = chunk.local_rows()
            yield [
                pool.submit(writer, layer, filters, images, achieved) for filters, images, achieved in rows
            ]
