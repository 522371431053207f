"""Part ``examples``: the dataset-examples pass over a large folder of JPEGs."""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path

from gpu.harness import (
    MAIN_PRECISION,
    Config,
    Part,
    load_part,
)


def make_photo_folder(folder: Path, count: int, height: int, width: int, unique: int = 4096) -> float:
    """``count`` JPEGs in ``folder``: ``unique`` of them made on every CPU, the rest hard links to those
    (as costly to decode, and quick to make); returns the seconds it took."""
    from examples_bench import make_photos

    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    unique = min(unique, count)
    workers = os.cpu_count() or 1
    step = -(-unique // workers)
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        made = [
            pool.submit(make_photos, folder, min(step, unique - first), height, width, first)
            for first in range(0, unique, step)
        ]
        for future in made:
            future.result()
    for index in range(unique, count):
        os.link(folder / f"{index % unique:05d}.jpg", folder / f"{index:05d}.jpg")
    return time.perf_counter() - began


def part_examples(part: Part, config: Config, weights: str) -> None:
    """Decode-only rate (the host's bound), then the pass itself: compiled first on one batch, then
    timed over the whole folder (decoding threads a batch ahead of the device, no crops written)."""
    import jax

    import filterviz
    from examples_bench import decode_only
    from filterviz.io.photos import find_images
    from flops import forward_flops

    network = filterviz.network("vgg16")
    layers = list(config.examples_layers or network.visual_layers)
    size, count, batch = config.examples_size, config.examples_images, config.examples_batch
    photos = part.work / "photos"
    height, width = (375, 500) if size >= 128 else (40, 48)
    part.record(images=count, size=size, layers=len(layers), batch=batch, photo=f"{height}x{width} JPEG")
    made = make_photo_folder(photos, count, height, width)
    warm = part.work / "photos-warm"
    make_photo_folder(warm, batch, height, width)
    part.record(photo_seconds=made, threads=os.cpu_count())
    paths = find_images(photos)
    sample = paths[: config.examples_decode_images]
    decode = decode_only(network, photos, sample, size, batch, os.cpu_count() or 1)
    began = time.perf_counter()
    decode()
    part.record(decode_images_per_second=len(sample) / (time.perf_counter() - began))
    params = filterviz.load_weights(weights)
    filterviz.examples(params, warm, layers, size=size, batch_size=batch, progress=False)
    began = time.perf_counter()
    filterviz.examples(params, warm, layers, size=size, batch_size=batch, progress=False)
    part.record(one_batch_seconds=time.perf_counter() - began)
    began = time.perf_counter()
    found = filterviz.examples(params, photos, layers, size=size, batch_size=batch, progress=False)
    seconds = time.perf_counter() - began
    flops = float(forward_flops(network, network.sorted(layers)[-1], size, size)) * count
    peak = load_part(part.work, "env").get("peaks", {}).get(MAIN_PRECISION)
    full = [record for record in found.records if len(record["hits"]) == 9]
    part.record(
        seconds=seconds,
        images_per_second=count / seconds,
        filters=len(found.records),
        filters_with_9_hits=len(full),
        unreadable=len(found.skipped),
        forward_tflops=flops / seconds / 1e12,
        mfu=flops / seconds / peak if peak else None,
        device=jax.devices()[0].device_kind,
    )
    print(f"examples: {count} images in {seconds:.1f} s ({count / seconds:.0f}/s)", flush=True)
