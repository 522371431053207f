"""Dataset examples: the image patches of a folder that excite each filter most, found in one pass.

Every image of a folder (JPEG or PNG, any size, searched recursively, so an ImageNet-style tree of class
folders works) is decoded on host threads while the device works, fitted to ``size x size`` and fed
through the network once per batch. Each filter of each chosen layer keeps its top-k hits and its
activation statistics on the device (:mod:`filterviz.core.hits`); nothing per image travels back. At the end
each hit's receptive field is cropped from its image and saved, and ``examples.jsonl`` gets one line
per (layer, filter)::

    {"layer": "block1_conv1", "filter": 3, "hits": [{"image": "cats/1.jpg", "y": 10, "x": 4,
     "activation": 812.5, "crop": "examples/block1_conv1/0003_0.png"}, ...], "images": 50,
     "mean": 402.1, "spatial_mean": 80.2, "fired": 0.98, "histogram": [...]}

``image`` is relative to the folder, ``y`` and ``x`` the position in the layer's activation map,
``crop`` relative to the output folder; ``mean`` is the mean of the per-image maxima, ``spatial_mean``
of the per-image spatial means, ``fired`` the fraction of images where the filter's maximum is above 0,
``histogram`` counts the per-image maxima in :data:`filterviz.core.hits.HISTOGRAM_EDGES`' bins.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from filterviz.core.checks import check_count, check_image_size, check_params, device_memory
from filterviz.core.hits import (
    EMPTY,
    RANKINGS,
    Statistics,
    TopK,
    empty_statistics,
    empty_top_k,
    image_responses,
    merge,
    update_statistics,
)
from filterviz.core.network import Network, Params, preprocess
from filterviz.dataset_examples.results import (
    ExamplesPass,
    check_output,
    hit_records,
    write_results,
)
from filterviz.deprecation import renamed
from filterviz.errors import ImageError, SettingError, SweepError
from filterviz.io.files import output_path
from filterviz.io.photos import IMAGE_SUFFIXES, check_fit, find_images, images_digest
from filterviz.jobs.folder import FolderLock, load_progress, save_progress
from filterviz.jobs.multihost import barrier, check_same_progress, gather, host_copy, together
from filterviz.jobs.streaming import Reading, stream
from filterviz.networks import get_network
from filterviz.networks.weights import content_digest
from filterviz.progress import count_of, wanted
from filterviz.sharding import batch_sharding, global_array
from filterviz.sweeps.atlas import EXAMPLES_FILE, EXAMPLES_FOLDER, write_atlas
from filterviz.sweeps.folder import read_settings_record
from filterviz.sweeps.layout import select_layers

PROGRESS_NAME = "examples.progress.npz"


class Examples(NamedTuple):
    """What :func:`examples` found: ``records`` (one dict per (layer, filter), as in ``examples.jsonl``),
    ``images`` (relative paths, in stream order), ``skipped`` (``(path, reason)`` of unreadable images)."""

    records: list[dict[str, Any]]
    images: list[str]
    skipped: list[tuple[str, str]]


@partial(jax.jit, static_argnames=("network", "layers", "ranking", "replicated"), donate_argnames=("state",))
def _scan(
    network: Network,
    params: Params,
    state: dict[str, tuple[TopK, Statistics]],
    pixels: jax.Array,
    indices: jax.Array,
    layers: tuple[str, ...],
    ranking: str,
    replicated: NamedSharding,
) -> dict[str, tuple[TopK, Statistics]]:
    # One batch through the network to the deepest layer asked for; every layer's top-k and statistics
    # updated on the device, and left whole on every device (`replicated`), where the next batch and the
    # host read them.
    activations = network.apply(params, preprocess(pixels.astype(jnp.float32), network.preprocessing), layers)
    updated = {}
    for layer in layers:
        top, statistics = state[layer]
        responses = image_responses(activations[layer])
        updated[layer] = (
            merge(top, responses.scores(ranking), indices, responses.positions),
            update_statistics(statistics, responses, indices != EMPTY),
        )
    return jax.lax.with_sharding_constraint(updated, replicated)


@renamed(folder="images", k="count", size="image_size", batch_size="image_batch_size")
def examples(
    params: Params,
    images: str | os.PathLike[str],
    layers: Sequence[str] | str | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    network: str | Network = "vgg16",
    count: int = 9,
    image_size: int = 224,
    fit: str = "crop",
    ranking: str = "max",
    image_batch_size: int = 32,
    workers: int | None = None,
    progress: bool | None = None,
    save_seconds: float = 30.0,
) -> Examples:
    """The ``count`` image patches of ``images`` that excite each filter of ``layers`` most.

    Args:
      params: the network's parameters (:func:`filterviz.load_weights`).
      images: a folder of JPEG/PNG images, searched recursively.
      layers: layer names (default: every layer a sweep draws, e.g. VGG16's 13 conv layers).
      out: a folder to write ``examples.jsonl`` and the crops (``examples/<layer>/<filter>_<rank>.png``)
        to; None writes nothing.
      network: a built-in network's name or a :class:`~filterviz.core.network.Network`.
      count: hits kept per filter.
      image_size: images are fitted to ``image_size x image_size`` (``fit``: ``crop`` or ``resize``).
      ranking: ``max`` (a filter's maximum over positions) or ``mean`` (its spatial mean).
      image_batch_size: images per compiled call; workers: decoding threads (default: the CPU count).
      progress: show a bar of the images done (default: on a terminal or in a notebook).
      save_seconds: with ``out``, how often the running state is saved there (``examples.progress.npz``):
        run the same call again after a kill and it goes on from the last save, losing nothing.

    The images of each batch are split over every device; with several processes joined by
    ``jax.distributed`` (call it with the same arguments in each, ``out`` a folder they share), over
    every device of every process, each process decoding only its own share; every process returns the
    same result, and process 0 writes it. Returns an :class:`Examples`. Unreadable images are skipped
    and listed, never fatal. A second run into the same ``out`` while one is writing it is refused.
    """
    net = get_network(network)
    names = net.sorted(select_layers(net, layers))
    check_params(net, params)
    for label, value, low in (
        ("count", count, 1),
        ("image_size", image_size, net.minimum_size(names[-1])),
        ("image_batch_size", image_batch_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SettingError(f"{label} must be a whole number of at least {low}, got {value!r}")
    _check_memory(net, names, image_size, image_batch_size, count)
    check_fit(fit)
    if ranking not in RANKINGS:
        raise SettingError(f"unknown ranking {ranking!r}; choose one of {', '.join(RANKINGS)}")
    root = Path(images)
    out_folder = output_path(out) if out is not None else None
    paths = find_images(root, leave_out=out_folder / EXAMPLES_FOLDER if out_folder is not None else None)
    if not paths:
        raise ImageError(root, f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
    workers = (os.cpu_count() or 1) if workers is None else check_count(workers, "workers", maximum=1024)
    weights = content_digest(params, net) if out_folder is not None else ""
    chosen = ExamplesPass(net, names, count, image_size, fit, ranking, image_batch_size, workers, weights)
    first = jax.process_index() == 0
    with contextlib.ExitStack() as stack:
        # Every process checks the folder; process 0 holds the lock and writes. All stop if one must.
        if out_folder is not None:
            with together(out_folder):
                check_output(out_folder, names)
                _check_sweep_folder(out_folder, chosen)
                out_folder.mkdir(parents=True, exist_ok=True)
                stack.enter_context(FolderLock(out_folder, "examples", active=first))
        state, skipped = _scan_folder(chosen, params, root, paths, out_folder, progress, save_seconds)
        records, crops = hit_records(chosen, params, paths, state)
        if out_folder is not None and first:
            write_results(root, out_folder / EXAMPLES_FILE, records, crops, chosen, wanted(progress))
            (out_folder / PROGRESS_NAME).unlink(missing_ok=True)  # finished: the saved progress is spent
    if out_folder is not None and first and read_settings_record(out_folder) is not None:
        write_atlas(out_folder)  # a sweep's folder: its atlas shows the examples beside the pictures
    barrier("filterviz examples written")
    return Examples(records, paths, skipped)


def _check_memory(net: Network, names: tuple[str, ...], size: int, batch_size: int, k: int) -> None:
    # Before any work: one image fits, a batch fits, and the hits kept (k per filter) fit, each with the
    # largest that would.
    check_image_size(net, names[-1], size, size)
    available = device_memory()
    per_image = net.activation_elements(names[-1], size, size) * 4
    if per_image * batch_size > available:
        raise SettingError(
            f"image_batch_size {batch_size:,} of {size}x{size} images needs about "
            f"{per_image * batch_size / 2**30:,.1f} GiB, more than the {available / 2**30:,.1f} GiB here; "
            f"the largest that fits is about {max(1, available // per_image):,}"
        )
    per_hit = sum(net.layer(name).channels for name in names) * 16 * 2  # score, image, y, x; merged in twos
    if per_hit * k > available // 4:
        largest = max(1, available // 4 // per_hit)
        raise SettingError(
            f"count {k:,} keeps about {per_hit * k / 2**30:,.1f} GiB of hits, more than a quarter of the "
            f"{available / 2**30:,.1f} GiB here; the largest that fits is about {largest:,}"
        )


def _resume_settings(chosen: ExamplesPass, root: Path, paths: list[str]) -> dict[str, Any]:
    """What saved progress must match to be taken up again: network, weights, settings, images."""
    return {
        "network": chosen.network.name,
        "weights": chosen.weights,
        "layers": list(chosen.layers),
        "k": chosen.k,
        "size": chosen.size,
        "fit": chosen.fit,
        "ranking": chosen.ranking,
        "images": images_digest(root, paths),
    }


def _check_sweep_folder(out: Path, chosen: ExamplesPass) -> None:
    # Examples written into a sweep's folder appear beside its pictures: they must be of the same network
    # and weights.
    settings = read_settings_record(out)
    if settings is None:
        return
    mine = {"network": chosen.network.name, "weights": chosen.weights}
    for key, value in mine.items():
        if settings.get(key) and settings[key] != value:
            raise SweepError(
                f"{out} holds a sweep of other {'weights' if key == 'weights' else 'network'} "
                f"({settings[key]!r}, these are {value!r}); write these examples to another --out"
            )


def _scan_folder(
    chosen: ExamplesPass,
    params: Params,
    root: Path,
    paths: list[str],
    out_folder: Path | None,
    progress: bool | None,
    save_seconds: float,
) -> tuple[dict[str, tuple[TopK, Statistics]], list[tuple[str, str]]]:
    # Every image not yet done through the network, streamed over every device of every process; the
    # running state, replicated, is the same everywhere. Process 0 saves it to the output folder every
    # `save_seconds`, and a resume takes it up there, maybe with another number of processes.
    net, names, k = chosen.network, chosen.layers, chosen.k
    empty = {
        name: (empty_top_k(net.layer(name).channels, k), empty_statistics(net.layer(name).channels))
        for name in names
    }
    settings = _resume_settings(chosen, root, paths) if out_folder is not None else {}
    progress_path = out_folder / PROGRESS_NAME if out_folder is not None else None
    earlier: list[tuple] = []
    state, done = jax.device_get(empty), 0
    if progress_path is not None and progress_path.exists():
        state, done, earlier = load_progress(progress_path, settings, empty)
    check_same_progress(done, out_folder)
    replicated = batch_sharding(chosen.batch_size)[1]
    state = jax.tree.map(lambda leaf: global_array(leaf, replicated), state)
    prepared = jax.tree.map(lambda leaf: global_array(leaf, replicated), net.prepared(params, jnp.float32))
    skipped: list[tuple[str, str]] = []

    def save(done: int) -> None:
        every_skipped = earlier + gather(skipped)  # a collective: on every process
        if jax.process_index() == 0 and progress_path is not None:
            save_progress(progress_path, settings, host_copy(state), done, every_skipped)

    batches = stream(
        root, paths, Reading(chosen.batch_size, chosen.size, chosen.fit, chosen.workers), done=done,
        title=f"examples of {count_of(len(names), 'layer')}", shown=wanted(progress),
        save=save if progress_path is not None else None, save_seconds=save_seconds,
    )  # fmt: skip
    for pixels, indices, unreadable in batches:
        state = _scan(net, prepared, state, pixels, indices, names, chosen.ranking, replicated)
        skipped += unreadable
    return host_copy(state), earlier + [tuple(item) for item in gather(skipped)]
