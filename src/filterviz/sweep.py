"""Sweeps: a picture of every chosen filter of every chosen layer, sharded over devices and hosts.

A sweep writes into one folder (:mod:`filterviz.sweep_folder` says what it may hold and how it is
checked)::

    sweep.json                    the settings the pictures were made with
    manifest.jsonl                one JSON line per finished filter, with its picture's size and sha256
                                  (``manifest.p<i>.jsonl`` per process when several share the work)
    block4_conv1/0007.png         each filter's picture (``0007.npy``: the float32 image, on request)
    sheets/block4_conv1.png       a contact sheet per layer      (written by filterviz.atlas)
    index.html                    the atlas page                 (written by filterviz.atlas)

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
import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from filterviz.ascent import (
    ascend_and_measure,
    check_count,
    check_filters,
    check_image_size,
    check_precision,
    check_seed,
    check_step_size,
    default_batch_size,
    padded_chunks,
)
from filterviz.errors import ImageError, OutputError, SettingError, SweepError
from filterviz.images import as_image, atomic_write, check_finite, encode_npy, encode_png, random_image
from filterviz.methods import Method, Optimizer, check_method_size, get_method, render_filters
from filterviz.model import CONV_LAYERS, LAYER_NAMES, Params, layer_spec
from filterviz.param import Pixels
from filterviz.progress import Progress, wanted
from filterviz.sweep_folder import (
    LOCK_FILE,
    SETTINGS_FILE,
    FolderLock,
    ManifestWriter,
    clear_sweep,
    digest,
    finite_or_text,
    foreign_files,
    layer_folder_problem,
    manifest_files,
    picture_path,
    read_settings_record,
    scan_manifest,
    stale_temporaries,
)

FILTER_AXIS = "filters"
"""Name of the mesh axis the filters are split over."""

_FORMAT = 2  # 2: manifest lines record each file's size and sha256
# Chunks dispatched ahead of the one being written: enough that the device always has queued work
# while the host encodes PNGs, few enough to bound the host memory held by finished images.
_CHUNKS_IN_FLIGHT = 2
# At most this many programs of a sweep compile at once.
_COMPILE_THREADS = 8


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """Everything that decides a sweep's pictures; a folder's sweep only continues with equal settings.

    ``start`` is ``"noise"`` (the notebook's grey noise from ``seed``) or ``"image sha256:<hex>"`` for a
    given start image; ``weights`` is :func:`filterviz.weights.content_digest` of the parameters.
    ``method`` names the method; for any but the notebook's, ``method_settings`` holds all its settings
    (``steps`` and ``step_size`` are then its steps and learning rate).
    """

    height: int = 128
    width: int = 128
    steps: int = 20
    step_size: float = 1.0
    seed: int = 0
    start: str = "noise"
    precision: str = "float32"
    raw: bool = False
    weights: str = ""
    method: str = "notebook"
    method_settings: str = ""

    def differences(self, other: SweepSettings) -> list[str]:
        """``["steps: 20 here, 10 asked", ...]`` for each field that differs from ``other``."""
        found = [
            f"{field.name}: {getattr(self, field.name)!r} in the folder, {getattr(other, field.name)!r} asked"
            for field in dataclasses.fields(self)
            if field.name != "method_settings" and getattr(self, field.name) != getattr(other, field.name)
        ]
        if self.method == other.method and self.method_settings != other.method_settings:
            # Name the method's settings that differ rather than print both in full.
            mine, theirs = (
                json.loads(text or "{}") for text in (self.method_settings, other.method_settings)
            )
            found += [
                f"{self.method} {key}: {mine.get(key)!r} in the folder, {theirs.get(key)!r} asked"
                for key in sorted(set(mine) | set(theirs))
                if mine.get(key) != theirs.get(key) and key != "steps"
            ]
        return found


class SweepResult(NamedTuple):
    """What one call of :func:`sweep` did, for this process."""

    folder: Path
    written: int  # filters computed and written by this process in this call
    skipped: int  # filters of the plan already finished by an earlier call (any process)
    seconds: float
    problems: tuple[str, ...] = ()  # damaged manifest lines or pictures found, whose filters were redone


# ----------------------------------------------------------------------------------------------------
# Sharding over devices and processes.


def filter_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``"filters"`` over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (FILTER_AXIS,))


def _global_array(value: Any, sharding: NamedSharding) -> jax.Array:
    # Every process holds the same host value; each places the parts its own devices hold.
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


@functools.cache
def _sharded_ascent(mesh: Mesh, layer: str, steps: int, precision: str) -> Callable[..., Any]:
    # One jitted program per (mesh, layer, steps, precision); jit adds one per chunk and image shape.
    # shard_map makes each device run the vmapped ascent on its own filters: no collectives, no
    # resharding decisions left to the compiler.
    #
    # The start image comes as one copy per device, split like the filters, not replicated: inside
    # shard_map a replicated input is typed device-invariant, and the gradient of a device-varying loss
    # with respect to it is summed over devices, which would mix every filter's gradient into each.
    def ascend_shard(params: Params, filter_indices: jax.Array, start: jax.Array, step_size: jax.Array):
        return ascend_and_measure(
            params, layer, filter_indices, start[0], step_size, steps=steps, precision=precision
        )

    split, whole = PartitionSpec(FILTER_AXIS), PartitionSpec()
    return jax.jit(
        jax.shard_map(
            ascend_shard, mesh=mesh, in_specs=(whole, split, split, whole), out_specs=(split, split)
        )
    )


@functools.cache
def _sharded_render(
    mesh: Mesh, layer: str, method: Method, size: tuple[int, int], seed: int, with_start: bool
) -> Callable[..., Any]:
    # As _sharded_ascent, for any other method: each filter's key comes from its own index, so the
    # split over devices does not change a picture. A start image comes split, one copy per device.
    def render_shard(params: Params, filter_indices: jax.Array, *start: jax.Array):
        first = start[0][0] if start else None
        return render_filters(params, layer, filter_indices, first, seed, method=method, size=size)

    split, whole = PartitionSpec(FILTER_AXIS), PartitionSpec()
    in_specs = (whole, split, split) if with_start else (whole, split)
    return jax.jit(jax.shard_map(render_shard, mesh=mesh, in_specs=in_specs, out_specs=(split, split)))


def _agree(flags: np.ndarray) -> np.ndarray:
    """Element-wise OR of a boolean array over all processes (itself with one process)."""
    if jax.process_count() == 1:
        return flags
    return np.asarray(multihost_utils.process_allgather(flags.astype(np.int32))).any(axis=0)


class Chunk(NamedTuple):
    """One compiled call of a :class:`ShardedAscent`: ``filters`` of ``layer`` and their results.

    ``images float32[C, H, W, 3]`` and ``activations float32[C]`` are global arrays split over the
    mesh; ``C`` is the chunk size, rows from ``len(filters)`` on are padding.
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
    """The ascent of a sweep: filters split over every device of a mesh, chunk by chunk.

    The parameters, the shared start ``float32[H, W, 3]`` and the step size are placed on the devices
    once; :meth:`run` then dispatches one compiled call per chunk of a layer's filters, each device
    ascending ``batch_size`` of them (vmapped) with no communication. Works the same with one device,
    several, or the devices of several processes joined by ``jax.distributed``.

    With a ``method`` other than the notebook's (:mod:`filterviz.methods`), each filter is rendered by
    :func:`filterviz.methods.render_filters` instead, keyed by ``seed`` and its index; ``start`` may then
    be None (each filter draws its own start) and only ``size`` is read from it.
    """

    def __init__(
        self,
        params: Params,
        start: np.ndarray | None,
        *,
        steps: int,
        step_size: float = 1.0,
        precision: str = "float32",
        mesh: Mesh | None = None,
        batch_size: int | None = None,
        method: Method | None = None,
        size: tuple[int, int] | None = None,
        seed: int = 0,
    ):
        self.mesh = mesh or filter_mesh()
        self.steps, self.precision, self.batch_size = steps, check_precision(precision), batch_size
        self.method, self.seed = method, seed
        self.height, self.width = np.shape(start)[:2] if start is not None else size
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self._split = NamedSharding(self.mesh, PartitionSpec(FILTER_AXIS))
        self._params = jax.tree.map(lambda array: _global_array(array, replicated), params)
        self._start = None
        if start is not None:
            copies = np.broadcast_to(np.asarray(start, np.float32), (self.mesh.size, *np.shape(start)))
            self._start = _global_array(copies, self._split)
        self._step_size = _global_array(np.float32(step_size), replicated)
        self._programs: dict[tuple[str, int], concurrent.futures.Future[Any]] = {}
        self._programs_lock = threading.Lock()

    def chunk_size(self, layer: str, count: int) -> int:
        """Filters per compiled call for ``count`` filters of ``layer``: a multiple of the device count."""
        devices = self.mesh.size
        # A method's every filter runs K images times its transform copies through the network.
        per_image = self.method.images_per_filter * self.method.transform_copies if self.method else 1
        per_device = self.batch_size or max(
            1, default_batch_size(layer, self.height, self.width, self.mesh.devices.flat[0]) // per_image
        )
        # No more per device than the layer needs: a few filters on many devices are not padded to 256 each.
        return min(per_device, -(-count // devices)) * devices

    def my_count(self, layer: str, count: int) -> int:
        """How many of ``count`` filters of ``layer`` this process's devices compute."""
        size = self.chunk_size(layer, count)
        mine = 0
        for begin in range(0, count, size):
            real = min(size, count - begin)
            for index in self._split.addressable_devices_indices_map((size,)).values():
                first, end, _ = index[0].indices(size)
                mine += max(0, min(end, real) - first)
        return mine

    def _inputs(self) -> tuple[jax.Array, ...]:
        # What every call takes after the filter indices.
        if self.method is None:
            return (self._start, self._step_size)
        return () if self._start is None else (self._start,)

    def program(self, layer: str, size: int) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
        """The compiled call for chunks of ``size`` filters of ``layer``: ``int32[size] -> (images, acts)``.

        Compiled once per (layer, size), or loaded from the persistent compilation cache when it is on.
        Safe to call from several threads at once: one compiles, the others wait for it; that is how
        :meth:`compile_ahead` compiles the programs of later layers while the devices run earlier ones.
        """
        key = (layer_spec(layer).name, size)
        with self._programs_lock:
            pending = self._programs.get(key)
            owner = pending is None
            if owner:
                pending = self._programs[key] = concurrent.futures.Future()
        if owner:
            try:
                if self.method is None:
                    jitted = _sharded_ascent(self.mesh, key[0], self.steps, self.precision)
                else:
                    shape = (self.height, self.width)
                    jitted = _sharded_render(
                        self.mesh, key[0], self.method, shape, self.seed, self._start is not None
                    )
                indices = _global_array(np.zeros(size, np.int32), self._split)
                pending.set_result(jitted.lower(self._params, indices, *self._inputs()).compile())
            except BaseException as error:
                pending.set_exception(error)
        compiled = pending.result()
        inputs = self._inputs()
        return lambda indices: compiled(self._params, indices, *inputs)

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
        layer = layer_spec(layer).name
        filters = np.asarray(filters, np.int32)
        if not len(filters):
            return
        size = self.chunk_size(layer, len(filters))
        program = self.program(layer, size)
        for rows, padded in padded_chunks(len(filters), size):
            images, achieved = program(_global_array(filters[padded], self._split))
            yield Chunk(layer, filters[rows], images, achieved)


# ----------------------------------------------------------------------------------------------------
# The sweep.


def plan_filters(
    layers: Iterable[str] | None = None, filters: Sequence[int] | Mapping[str, Sequence[int]] | None = None
) -> list[tuple[str, np.ndarray]]:
    """``[(layer, int32[N]), ...]``: the filters a sweep covers, each checked.

    ``layers`` defaults to the 13 conv layers; ``filters`` to all of each layer, or one sequence for
    every layer, or a ``{layer: sequence}`` mapping (layers it leaves out get all their filters).
    """
    if isinstance(layers, str):
        layers = [layers]  # one layer by name, not its letters
    try:
        names = [layer_spec(name).name for name in (CONV_LAYERS if layers is None else layers)]
    except TypeError:
        raise SettingError(f"layers must be a layer name or a list of them, got {layers!r}") from None
    if len(set(names)) != len(names):
        raise SettingError(f"a layer is named twice in {names}")
    if isinstance(filters, Mapping) and set(filters) - set(names):
        extra = ", ".join(sorted(map(str, set(filters) - set(names))))
        raise SettingError(f"filters are given for {extra}, which the sweep does not cover")
    plan = []
    for name in names:
        chosen = filters.get(name) if isinstance(filters, Mapping) else filters
        indices = np.arange(layer_spec(name).channels) if chosen is None else check_filters(name, chosen)
        plan.append((name, np.unique(indices).astype(np.int32)))
    return plan


def _start_digest(image: np.ndarray) -> str:
    return "image sha256:" + hashlib.sha256(np.ascontiguousarray(image, "<f4").tobytes()).hexdigest()


def _prepare_folder(folder: Path, settings: SweepSettings, overwrite: bool, lock: FolderLock) -> None:
    """Create the folder, lock it, check it holds a sweep with these settings (or clear it, with
    ``overwrite``); every process must agree before any starts. Process 0 takes the lock and writes."""
    problem = None
    first = jax.process_index() == 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if folder.is_symlink() or not folder.is_dir():
            raise OutputError(folder, "is not a folder")
        if not os.access(folder, os.W_OK):
            raise OutputError(folder, "folder is not writable")
        lock.__enter__()  # process 0 only (the others' lock is inactive)
        if first and overwrite:
            if read_settings_record(folder) is not None or manifest_files(folder):
                clear_sweep(folder)
            elif set(os.listdir(folder)) - {LOCK_FILE}:
                raise SweepError(
                    f"{folder} is not a filterviz sweep (no {SETTINGS_FILE}, no manifest), so there is "
                    "nothing to overwrite; overwrite clears only filterviz's own sweeps: use another folder"
                )
        if not overwrite or not first:
            recorded = read_settings_record(folder)
            if recorded is None and manifest_files(folder) and not overwrite:
                raise SweepError(
                    f"{folder} has a manifest but no {SETTINGS_FILE}, so the settings its pictures were made "
                    f"with are unknown; put {SETTINGS_FILE} back, or start again with --overwrite "
                    "(overwrite=True)"
                )
            if recorded is not None and not overwrite:
                try:
                    previous = SweepSettings(**recorded)
                except TypeError:
                    raise SweepError(
                        f"{folder / SETTINGS_FILE} is not a filterviz sweep settings file; use another folder"
                    ) from None
                differences = previous.differences(settings)
                if differences:
                    raise SweepError(
                        f"{folder} holds a sweep made with other settings ({'; '.join(differences)}); "
                        "use another folder, or start it again with --overwrite (overwrite=True)"
                    )
    except (OSError, SweepError) as error:
        problem = error if isinstance(error, SweepError | OutputError) else OutputError(folder, str(error))
    # Every process must stop if any one must, or the others would wait for it forever.
    if _agree(np.array([problem is not None]))[0]:
        lock.__exit__(None, None, None)
        raise problem or SweepError("another process of this sweep could not use its folder")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("filterviz sweep folder ready")
    if first:
        record = {"format": _FORMAT, "settings": dataclasses.asdict(settings)}
        atomic_write(folder / SETTINGS_FILE, (json.dumps(record, indent=2) + "\n").encode())
        for stale in stale_temporaries(folder, LAYER_NAMES):  # what a killed run left half-written
            stale.unlink(missing_ok=True)


def _check_targets(folder: Path, pending: list[tuple[str, np.ndarray]], raw: bool, named: set[str]) -> None:
    """Refuse, before any work, to write where the folder holds something filterviz did not write."""
    for layer, _ in pending:
        problem = layer_folder_problem(folder, layer)
        if problem:
            raise SweepError(problem)
    targets = [
        picture_path(layer, int(index), suffix)
        for layer, indices in pending
        for index in indices
        for suffix in ((".png", ".npy") if raw else (".png",))
    ]
    foreign = foreign_files(folder, targets, named)
    if not foreign:
        # A link where the manifest had a picture is damage, to be redone: remove the link (never what
        # it points to), so the new picture is written in the folder.
        for relative in targets:
            if relative in named and (folder / relative).is_symlink():
                (folder / relative).unlink()
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise SweepError(
            f"{folder} holds files filterviz did not write where this sweep would write its pictures "
            f"({shown}); move them away or use another folder"
        )


def sweep(
    params: Params,
    folder: str | os.PathLike[str],
    *,
    layers: Iterable[str] | None = None,
    filters: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    size: tuple[int, int] = (128, 128),
    steps: int | None = None,
    step_size: float | None = None,
    seed: int = 0,
    start: np.ndarray | None = None,
    precision: str = "float32",
    method: str | Method = "notebook",
    raw: bool = False,
    batch_size: int | None = None,
    overwrite: bool = False,
    mesh: Mesh | None = None,
    progress: bool | None = None,
    writer_threads: int = 4,
) -> SweepResult:
    """Ascend and save every planned filter, sharded over ``mesh``; resumes what a folder already holds.

    Args:
      params: VGG16 parameters from :func:`filterviz.load_weights`.
      folder: output folder (created if needed); see the module docstring for its layout.
      layers, filters: what to draw; see :func:`plan_filters` (default: all 4,224 conv filters).
      size: ``(height, width)`` of the pictures; ignored when ``start`` is given.
      steps, step_size, precision: as :func:`filterviz.ascend` (default 20 and 1.0); with another
        method, its steps and learning rate (default the method's own).
      seed: seed of the noise start, shared by every filter as in the notebook; with another method,
        filter ``i`` uses ``fold_in(key(seed), i)`` for its start and transforms.
      start: a start image ``float32[H, W, 3]`` (0-255, e.g. a photo) instead of noise (pixel methods).
      method: ``"notebook"`` (the default), ``"lucid"``, ``"maco"``, ``"octaves"`` or a
        :class:`filterviz.Method`; see :mod:`filterviz.methods`.
      raw: also save each ascended float32 image as ``.npy``.
      batch_size: filters per device per compiled chunk (default from the device's memory).
      overwrite: clear a previous sweep with other settings from ``folder`` instead of refusing.
      mesh: devices to shard over (default :func:`filter_mesh`: every device of every process).
      progress: show a progress bar (default: when stderr is a terminal and not in CI).
      writer_threads: host threads encoding and writing PNGs while the devices compute.

    Returns:
      A :class:`SweepResult` for this process.

    Raises:
      UnknownLayerError, FilterIndexError, SettingError, ImageError: bad arguments, before any work.
      SweepError: ``folder`` holds a sweep with other settings.
      OutputError: the folder or a file cannot be written; everything finished before stays.
    """
    began = time.perf_counter()
    folder = Path(folder)
    plan = plan_filters(layers, filters)
    check_precision(precision)
    seed = check_seed(seed)
    chosen = _sweep_method(method, steps, step_size, precision)
    if chosen is not None:
        steps, step_size = chosen.steps, _learning_rate(chosen)
    steps = check_count(20 if steps is None else steps, "steps", minimum=0)
    step_size = check_step_size(1.0 if step_size is None else step_size)
    if batch_size is not None:
        check_count(batch_size, "batch_size")
    check_count(writer_threads, "writer_threads")
    if start is not None and chosen is not None and not isinstance(chosen.parameterization, Pixels):
        raise SettingError(f"a start image needs a pixel method; {chosen.name} optimises a spectrum")
    if start is None:
        try:
            height, width = (check_count(side, "each side of size") for side in size)
        except (TypeError, ValueError):
            raise SettingError(f"size must be (height, width), got {size!r}") from None
    else:
        try:
            start_image = np.asarray(start, np.float32)
        except (TypeError, ValueError):
            raise ImageError(None, f"start image must be numbers, got {type(start).__name__}") from None
        if start_image.ndim != 3 or start_image.shape[-1] != 3:
            raise ImageError(None, f"start image must be [H, W, 3], got {start_image.shape}")
        check_finite(start_image, "the start image")
        height, width = start_image.shape[:2]
    deepest = max((layer for layer, _ in plan), key=LAYER_NAMES.index, default=None)
    if deepest is not None:  # before anything is allocated: too small, or too large for the device
        if chosen is None:
            check_image_size(deepest, height, width)
        else:
            check_method_size(chosen, deepest, height, width)
    if start is None:
        # The notebook's filters share one noise start; other methods draw each filter's own.
        start_image = (
            np.asarray(random_image(jax.random.key(seed), height, width)) if chosen is None else None
        )
        start_name = "noise"
    else:
        start_name = _start_digest(start_image)
    from filterviz.weights import content_digest

    settings = SweepSettings(
        height=height,
        width=width,
        steps=steps,
        step_size=float(step_size),
        seed=seed,
        start=start_name,
        precision=precision,
        raw=raw,
        weights=content_digest(params),
        method="notebook" if chosen is None else chosen.name,
        method_settings="" if chosen is None else json.dumps(chosen.describe(), sort_keys=True),
    )
    lock = FolderLock(folder, active=jax.process_index() == 0)
    _prepare_folder(folder, settings, overwrite, lock)
    with lock:  # taken by _prepare_folder; released when the sweep ends, however it ends
        # What is left: filters without a whole picture in the manifest, in any process's view of the folder.
        scan = scan_manifest(folder)
        finished = {(entry["layer"], int(entry["filter"])) for entry in scan.entries}
        done_flags = np.array([(layer, int(f)) in finished for layer, indices in plan for f in indices], bool)
        done_flags = _agree(done_flags)
        pending, offset = [], 0
        for layer, indices in plan:
            left = indices[~done_flags[offset : offset + len(indices)]]
            offset += len(indices)
            if len(left):
                pending.append((layer, left))
        problem = None
        try:
            _check_targets(folder, pending, raw, scan.named)
        except SweepError as error:
            problem = error
        if _agree(np.array([problem is not None]))[0]:
            raise problem or SweepError("another process of this sweep found files it must not replace")

        ascent = ShardedAscent(
            params,
            start_image,
            steps=steps,
            step_size=step_size,
            precision=precision,
            mesh=mesh,
            batch_size=batch_size,
            method=chosen,
            size=(height, width),
            seed=seed,
        )
        manifest_name = (
            "manifest.jsonl" if jax.process_count() == 1 else f"manifest.p{jax.process_index()}.jsonl"
        )
        manifest = ManifestWriter(folder / manifest_name)
        # Each manifest line repeats the settings that made its picture (the weights' digest and the raw
        # flag stay in sweep.json).
        common = {
            k: v
            for k, v in dataclasses.asdict(settings).items()
            if k not in ("raw", "weights", "method_settings")
        }
        to_pictures = as_image if chosen is None else chosen.to_pictures
        mine = sum(ascent.my_count(layer, len(indices)) for layer, indices in pending)
        bar = Progress(mine, "filter", enabled=wanted(progress))
        written = 0

        def write_rows(layer: str, filters: list[int], images: Any, achieved: Any) -> int:
            images, achieved = np.asarray(images), np.asarray(achieved)  # waits for the device
            pictures = to_pictures(images)
            for row, filter_index in enumerate(filters):
                entry = {
                    "layer": layer,
                    "filter": filter_index,
                    "activation": finite_or_text(float(achieved[row])),
                }
                picture = encode_png(pictures[row])
                entry.update(png=picture_path(layer, filter_index), bytes=len(picture))
                entry["sha256"] = digest(picture)
                atomic_write(folder / entry["png"], picture, durable=False)
                if raw:
                    array = encode_npy(images[row])
                    entry.update(raw=picture_path(layer, filter_index, ".npy"), raw_bytes=len(array))
                    entry["raw_sha256"] = digest(array)
                    atomic_write(folder / entry["raw"], array, durable=False)
                manifest.append({**entry, **common})
                bar.update()
            return len(filters)

        in_flight: collections.deque[list[concurrent.futures.Future[int]]] = collections.deque()
        # Later layers compile on spare host cores while the devices run the earlier ones.
        compile_threads = max(1, min(len(pending), (os.cpu_count() or 2) // 2, _COMPILE_THREADS))
        plan_left = [(layer, len(indices)) for layer, indices in pending]
        compiler = ascent.compile_ahead(plan_left, compile_threads)
        pool = concurrent.futures.ThreadPoolExecutor(writer_threads, thread_name_prefix="filterviz-writer")
        try:
            for layer, indices in pending:
                bar.describe(layer)
                (folder / layer).mkdir(exist_ok=True)
                for chunk in ascent.run(layer, indices):
                    # Each writer takes the rows of one of this process's devices; JAX dispatched the chunk
                    # asynchronously, so the device computes the next chunks while these are written.
                    futures = [
                        pool.submit(write_rows, layer, filters, images, achieved)
                        for filters, images, achieved in chunk.local_rows()
                    ]
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
            manifest.close()
            bar.close()
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("filterviz sweep done")
        skipped = int(done_flags.sum())
        return SweepResult(folder, written, skipped, time.perf_counter() - began, tuple(scan.problems))


def _sweep_method(
    method: str | Method, steps: int | None, step_size: float | None, precision: str
) -> Method | None:
    """None for the notebook's method (the sweep's fast path), else the method with these settings."""
    if method == "notebook" or (isinstance(method, Method) and method == get_method("notebook")):
        return None
    chosen = get_method(method, precision=precision)
    if not isinstance(chosen.optimizer, Optimizer):
        # An optax object has no stable description for sweep.json, so a resume could not be checked.
        raise SettingError(
            "a sweep records its settings: give the optimizer as filterviz.Optimizer(name, rate)"
        )
    if steps is not None:
        chosen = get_method(chosen, steps=steps)
    if step_size is not None:
        optimizer = dataclasses.replace(chosen.optimizer, learning_rate=float(step_size))
        chosen = get_method(chosen, optimizer=optimizer)
    if chosen.images_per_filter != 1:
        raise SettingError("a sweep draws one picture per filter: images_per_filter must be 1")
    return chosen


def _learning_rate(method: Method) -> float:
    return float(method.optimizer.learning_rate)


CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def split_cpu_into_devices(count: int | None = None) -> int:
    """Ask XLA to present the host's CPU cores as ``count`` devices (default: one per core).

    A sweep then ascends one filter per core at once, each single-threaded, instead of one filter with
    its small convolutions spread over all cores: 10-61% more filters per second on a 2-core CPU
    (BENCHMARKS.md). Only the CPU backend is affected, so it is harmless on a GPU host. It works only
    before JAX starts its backends (call it before anything runs on a device); an ``XLA_FLAGS`` that
    already sets the count is kept. Returns the count asked for.
    """
    count = count or os.cpu_count() or 1
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_DEVICES_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_DEVICES_FLAG}={count}".strip()
    return count


# ----------------------------------------------------------------------------------------------------
# The persistent compilation cache.


def compilation_cache_dir() -> Path:
    """Where filterviz keeps compiled programs: ``$FILTERVIZ_CACHE_DIR``, else ``~/.cache/filterviz/xla``."""
    if os.environ.get("FILTERVIZ_CACHE_DIR"):
        return Path(os.environ["FILTERVIZ_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "filterviz" / "xla"


def enable_compilation_cache(directory: str | os.PathLike[str] | None = None) -> Path:
    """Keep compiled programs on disk, so a second run with the same shapes does not compile again.

    Respects a cache directory already configured for JAX (``JAX_COMPILATION_CACHE_DIR``); otherwise
    uses ``directory`` or :func:`compilation_cache_dir`. Programs are cached however fast they compiled.
    Takes effect for the next compilation, even in a process that has compiled before. Returns the
    directory in use.
    """
    try:
        from jax.experimental.compilation_cache import compilation_cache
    except ImportError:  # not every JAX version has the module; the config setting is enough there
        compilation_cache = None
    configured = getattr(jax.config, "jax_compilation_cache_dir", None)
    if configured and directory is None:
        return Path(configured)
    path = Path(directory) if directory is not None else compilation_cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(path, f"cannot create the compilation cache ({error.strerror or error})") from None
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if configured != str(path):
        # JAX decides once per process whether the cache is on; have it decide again (where this
        # JAX version has the call: newer ones read the setting at each compilation).
        reset = getattr(compilation_cache, "reset_cache", None) if compilation_cache else None
        if reset is not None:
            reset()
        jax.config.update("jax_compilation_cache_dir", str(path))
    return path
