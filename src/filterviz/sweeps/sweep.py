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
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from filterviz.core.checks import check_count, check_filters, check_precision, check_seed, check_step_size
from filterviz.core.engine import check_method_size
from filterviz.core.methods import Method, Optimizer, get_method
from filterviz.core.network import Network, Params
from filterviz.core.parameterizations import Pixels
from filterviz.core.pictures import check_finite, random_image
from filterviz.draw.notebook import notebook_method
from filterviz.errors import ImageError, OutputError, SettingError, SweepError
from filterviz.io.files import atomic_write, encode_npy, encode_png
from filterviz.networks import get_network
from filterviz.progress import Progress, wanted
from filterviz.sweeps.folder import (
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
from filterviz.sweeps.multihost import agree, barrier
from filterviz.sweeps.sharding import ShardedAscent

_FORMAT = 2  # 2: manifest lines record each file's size and sha256
# Chunks dispatched ahead of the one being written: enough that the device always has queued work
# while the host encodes PNGs, few enough to bound the host memory held by finished images.
_CHUNKS_IN_FLIGHT = 2
# At most this many programs of a sweep compile at once.
_COMPILE_THREADS = 8
_SAFE_LAYER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


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
    network: str = "vgg16"

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


def plan_filters(
    network: Network,
    layers: Iterable[str] | str | None = None,
    filters: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """``[(layer, int32[N]), ...]``: the filters a sweep covers, each checked.

    ``layers`` defaults to the network's visual layers (VGG16's 13 conv layers), and may be one name;
    ``filters`` to all of each layer, or one sequence for every layer, or a ``{layer: sequence}``
    mapping (layers it leaves out get all their filters).
    """
    if isinstance(layers, str):
        layers = [layers]  # one layer by name, not its letters
    try:
        names = [network.layer(name).name for name in (network.visual_layers if layers is None else layers)]
    except TypeError:
        raise SettingError(f"layers must be a layer name or a list of them, got {layers!r}") from None
    if len(set(names)) != len(names):
        raise SettingError(f"a layer is named twice in {names}")
    for name in names:
        if not _SAFE_LAYER.fullmatch(name):
            raise SettingError(f"layer {name!r} cannot name a folder of pictures; sweep other layers")
    if isinstance(filters, Mapping) and set(filters) - set(names):
        extra = ", ".join(sorted(map(str, set(filters) - set(names))))
        raise SettingError(f"filters are given for {extra}, which the sweep does not cover")
    plan = []
    for name in names:
        chosen = filters.get(name) if isinstance(filters, Mapping) else filters
        indices = (
            np.arange(network.layer(name).channels)
            if chosen is None
            else check_filters(network, name, chosen)
        )
        plan.append((name, np.unique(indices).astype(np.int32)))
    return plan


def _start_digest(image: np.ndarray) -> str:
    return "image sha256:" + hashlib.sha256(np.ascontiguousarray(image, "<f4").tobytes()).hexdigest()


def _prepare_folder(
    folder: Path, settings: SweepSettings, network: Network, overwrite: bool, lock: FolderLock
) -> None:
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
    if agree(np.array([problem is not None]))[0]:
        lock.__exit__(None, None, None)
        raise problem or SweepError("another process of this sweep could not use its folder")
    barrier("filterviz sweep folder ready")
    if first:
        # The layer table travels with the sweep, so the folder is checked and shown without the network.
        layers = {layer.name: layer.channels for layer in network.layers}
        record = {"format": _FORMAT, "settings": dataclasses.asdict(settings), "layers": layers}
        atomic_write(folder / SETTINGS_FILE, (json.dumps(record, indent=2) + "\n").encode())
        for stale in stale_temporaries(folder, network.layer_names):  # what a killed run left half-written
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
    network: Network | str = "vgg16",
) -> SweepResult:
    """Ascend and save every planned filter, sharded over ``mesh``; resumes what a folder already holds.

    Args:
      params: the network's parameters from :func:`filterviz.load_weights`.
      folder: output folder (created if needed); see the module docstring for its layout.
      layers, filters: what to draw; see :func:`plan_filters` (default: the network's visual layers,
        for VGG16 all 4,224 conv filters).
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
      progress: show a progress bar (default: on a terminal or in a notebook, and not in CI).
      writer_threads: host threads encoding and writing PNGs while the devices compute.
      network: ``"vgg16"`` (default), another built-in, or a network of your own; recorded with its
        weights' digest, so a resume with another is refused.

    Returns:
      A :class:`SweepResult` for this process.

    Raises:
      UnknownLayerError, FilterIndexError, SettingError, ImageError: bad arguments, before any work.
      SweepError: ``folder`` holds a sweep with other settings.
      OutputError: the folder or a file cannot be written; everything finished before stays.
    """
    began = time.perf_counter()
    folder = Path(folder)
    network = get_network(network)
    plan = plan_filters(network, layers, filters)
    check_precision(precision)
    seed = check_seed(seed)
    chosen = _sweep_method(method, steps, step_size, precision, network)
    notebook = chosen.name == "notebook"
    steps, step_size = chosen.steps, float(chosen.optimizer.learning_rate)
    if batch_size is not None:
        check_count(batch_size, "batch_size")
    check_count(writer_threads, "writer_threads")
    if start is not None and not isinstance(chosen.parameterization, Pixels):
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
    deepest = max((layer for layer, _ in plan), key=network.order, default=None)
    if deepest is not None:  # before anything is allocated: too small, or too large for the device
        check_method_size(network, chosen, deepest, height, width)
    if start is None:
        # The notebook's filters share one noise start; other methods draw each filter's own.
        start_image = np.asarray(random_image(jax.random.key(seed), height, width)) if notebook else None
        start_name = "noise"
    else:
        start_name = _start_digest(start_image)
    from filterviz.networks.weights import content_digest

    settings = SweepSettings(
        height=height,
        width=width,
        steps=steps,
        step_size=float(step_size),
        seed=seed,
        start=start_name,
        precision=precision,
        raw=raw,
        weights=content_digest(params, network),
        method=chosen.name,
        # The notebook's settings are the fields above (as sweep folders have always recorded them).
        method_settings="" if notebook else json.dumps(chosen.describe(), sort_keys=True),
        network=network.name,
    )
    lock = FolderLock(folder, active=jax.process_index() == 0)
    _prepare_folder(folder, settings, network, overwrite, lock)
    with lock:  # taken by _prepare_folder; released when the sweep ends, however it ends
        # What is left: filters without a whole picture in the manifest, in any process's view of the folder.
        scan = scan_manifest(folder)
        finished = {(entry["layer"], int(entry["filter"])) for entry in scan.entries}
        done_flags = np.array([(layer, int(f)) in finished for layer, indices in plan for f in indices], bool)
        done_flags = agree(done_flags)
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
        if agree(np.array([problem is not None]))[0]:
            raise problem or SweepError("another process of this sweep found files it must not replace")

        ascent = ShardedAscent(
            network,
            params,
            chosen,
            start_image,
            size=(height, width),
            seed=seed,
            mesh=mesh,
            batch_size=batch_size,
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
        to_pictures = chosen.to_pictures
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
        barrier("filterviz sweep done")
        skipped = int(done_flags.sum())
        return SweepResult(folder, written, skipped, time.perf_counter() - began, tuple(scan.problems))


def _sweep_method(
    method: str | Method, steps: int | None, step_size: float | None, precision: str, network: Network
) -> Method:
    """The method a sweep runs, with these settings, its preprocessing resolved for ``network``."""
    notebook = method == "notebook" or (isinstance(method, Method) and method.name == "notebook")
    if notebook and (not isinstance(method, Method) or method == get_method("notebook")):
        return notebook_method(
            20 if steps is None else check_count(steps, "steps", minimum=0),
            1.0 if step_size is None else check_step_size(step_size),
            precision,
        )
    chosen = get_method(method, precision=precision)
    if not isinstance(chosen.optimizer, Optimizer):
        # An optax object has no stable description for sweep.json, so a resume could not be checked.
        raise SettingError(
            "a sweep records its settings: give the optimizer as filterviz.Optimizer(name, rate)"
        )
    if steps is not None:
        chosen = get_method(chosen, steps=steps)
    if step_size is not None:
        optimizer = dataclasses.replace(chosen.optimizer, learning_rate=check_step_size(step_size))
        chosen = get_method(chosen, optimizer=optimizer)
    if chosen.images_per_filter != 1:
        raise SettingError("a sweep draws one picture per filter: images_per_filter must be 1")
    return chosen.resolved(network)
