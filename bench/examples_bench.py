"""Images per second of the dataset-examples pass, against a plain PyTorch loop doing the same work and
against the host's decode rate, measured in one run.

Contenders, on the same folder of JPEGs (made here: smooth random photos of 300x400):

  engine     filterviz.examples: decoding threads a batch ahead, the batch through the network to the
             deepest chosen layer, every filter's top-k and statistics merged on the device
  torch      a plain PyTorch loop: decode a batch (the same fit), forward to the deepest chosen layer
             keeping each chosen layer's output, per-filter max and its position, the running
             top-k by torch.topk over the kept hits and the batch's (no statistics)
  decode     the host side alone: the decoding threads and the fit, no network (the bound on the host)
  decode-1   the same on one thread

    PYTHONPATH=src python bench/examples_bench.py                        # 48 images, 224x224, 13 conv layers
    PYTHONPATH=src python bench/examples_bench.py --images 16 --size 64 --layers block1_conv1,block2_conv1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
import numpy as np

import filterviz
from filterviz.core.network import preprocess
from filterviz.io.photos import find_images, load_fitted
from filterviz.jobs.streaming import Reading, host_batches
from flops import forward_flops
from measures import measure_peak_flops, time_interleaved


def make_photos(folder: Path, count: int, height: int = 300, width: int = 400, first: int = 0) -> Path:
    """``count`` JPEGs of smooth random colour (cheap to make, as costly to decode as a photo), named
    from ``first`` on (each run of names its own random stream, so processes can share the work)."""
    from PIL import Image

    rng = np.random.default_rng(first)
    for index in range(first, first + count):
        coarse = rng.uniform(0, 255, (height // 20 + 1, width // 20 + 1, 3)).astype(np.uint8)
        picture = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        noisy = np.asarray(picture, np.float32) + rng.normal(0, 8, (height, width, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"{index:05d}.jpg", quality=90)
    return folder


def decode_only(network, folder: Path, paths: list[str], size: int, batch_size: int, workers: int):
    """The decoding threads and the fit alone, as the pass runs them, without the network."""
    reading = Reading(batch_size, size, "crop", workers)

    def run():
        for _ in host_batches(folder, paths, reading, 0):
            pass

    return run


def torch_loop(
    network, params, folder: Path, paths: list[str], layers: list[str], size: int, k: int, batch: int
):
    """The same pass as a PyTorch user writes it; returns each layer's (scores, images) of the top-k."""
    import torch

    from torch_reference import torch_network

    deepest = network.sorted(layers)[-1]
    module = torch_network(network, params, deepest)
    names = [spec.name for spec in network.layers[: network.order(deepest) + 1]]
    wanted = {index: name for index, name in enumerate(names) if name in layers}
    # torch_network's Sequential interleaves ReLUs after convolutions: find each named layer's output.
    outputs_at = {}
    position = 0
    for index, name in enumerate(names):
        position += 2 if network.layer(name).kind == "Conv2D" else 1
        if index in wanted:
            outputs_at[position - 1] = name

    def run():
        top = {}
        with torch.no_grad():
            for start in range(0, len(paths), batch):
                chunk = paths[start : start + batch]
                pixels = np.asarray([load_fitted(folder / p, size) for p in chunk], np.float32)
                x = torch.from_numpy(
                    np.array(preprocess(pixels, network.preprocessing)).transpose(0, 3, 1, 2)
                )
                indices = torch.arange(start, start + len(chunk))
                for position, layer_module in enumerate(module):
                    x = layer_module(x)
                    if position in outputs_at:
                        name = outputs_at[position]
                        scores, places = x.flatten(2).max(dim=2)  # [B, C]: a hit's score and position
                        scores, places = scores.T, places.T
                        images = indices.expand_as(scores)
                        if name in top:
                            scores = torch.cat([top[name][0], scores], dim=1)
                            images = torch.cat([top[name][1], images], dim=1)
                            places = torch.cat([top[name][2], places], dim=1)
                        best, where = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                        top[name] = (best, torch.gather(images, 1, where), torch.gather(places, 1, where))
        return {name: tuple(part.numpy() for part in value) for name, value in top.items()}

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--layers", default=None, help="comma-separated (default: every conv layer)")
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip", default="", help="contenders to skip: torch, decode-1")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    network = filterviz.network("vgg16")
    params = filterviz.load_weights(args.weights)
    layers = args.layers.split(",") if args.layers else list(network.visual_layers)
    skip = set(filter(None, args.skip.split(",")))
    workers = os.cpu_count() or 1
    if "torch" not in skip:
        try:
            import torch
        except ImportError:
            print(
                "torch is not installed: skipping the PyTorch loop (pip install '.[bench]')", file=sys.stderr
            )
            skip.add("torch")
    with tempfile.TemporaryDirectory() as temporary:
        folder = make_photos(Path(temporary), args.images)
        paths = find_images(folder)
        runners = {
            "engine": lambda: filterviz.examples(
                params,
                folder,
                layers,
                count=args.k,
                image_size=args.size,
                image_batch_size=args.batch_size,
                progress=False,
            ),
            "decode": decode_only(network, folder, paths, args.size, args.batch_size, workers),
        }
        if "decode-1" not in skip:
            runners["decode-1"] = decode_only(network, folder, paths, args.size, args.batch_size, 1)
        if "torch" not in skip:
            torch.set_num_threads(workers)
            runners["torch"] = torch_loop(
                network, params, folder, paths, layers, args.size, args.k, args.batch_size
            )
        peak = measure_peak_flops()
        seconds, results = time_interleaved(runners, args.repeats)

    rates = {name: args.images / value for name, value in seconds.items()}
    flops = float(forward_flops(network, network.sorted(layers)[-1], args.size, args.size))
    row = {
        "images": args.images,
        "size": args.size,
        "layers": len(layers),
        "k": args.k,
        "batch_size": args.batch_size,
        "device": jax.devices()[0].device_kind,
        "cpus": workers,
        "peak_flops": peak,
        "forward_gflops_per_image": flops / 1e9,
        **{f"{name}_images_per_second": rate for name, rate in rates.items()},
        "engine_fraction_of_peak": rates["engine"] * flops / peak,
    }
    if "torch" in results:
        # The same work: each filter's best image is the same, wherever it is one (a filter silent on
        # every image ties them all at 0, and a near tie may go either way in float rounding).
        agree = compared = 0
        for record in results["engine"].records:
            first, second = (hit["activation"] for hit in record["hits"][:2])
            if first > 0 and first - second > 1e-4 * first:
                theirs = results["torch"][record["layer"]][1][record["filter"]]
                compared += 1
                agree += paths.index(record["hits"][0]["image"]) == int(theirs[0])
        row["torch_best_image_agreement"] = agree / max(compared, 1)
        row["filters_compared"] = compared
    print(
        f"device: {row['device']}, {workers} CPUs, {platform.processor() or platform.machine()}; "
        f"{args.images} JPEGs 300x400 -> {args.size}x{args.size}, {len(layers)} layers of VGG16, "
        f"top-{args.k}, batches of {args.batch_size}; float32 matmul peak {peak / 1e9:.1f} GFLOP/s"
    )
    print("\n| contender | images/s | engine / contender |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.2f} | {rates['engine'] / rate:.2f}x |")
    print(
        f"\nforward: {flops / 1e9:.2f} GFLOP per image; engine {rates['engine'] * flops / 1e9:.1f} GFLOP/s, "
        f"{100 * row['engine_fraction_of_peak']:.0f}% of peak"
    )
    if "torch_best_image_agreement" in row:
        print(
            f"best image of the {row['filters_compared']} filters with one, engine and torch agreeing: "
            f"{100 * row['torch_best_image_agreement']:.1f}%"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
