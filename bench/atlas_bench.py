"""The activation atlas's stages, timed: collecting vectors, the UMAP layout, and drawing the cells, batched
(``chunk`` cells per call of one compiled program) against one cell at a time, and the layout at the
vector counts of larger atlases.

The network is VGG16 (the real weights with ``--weights``), the layer block4_conv3; the photos are
synthetic JPEGs (smooth random colour, as costly to decode as photos). Drawing times each way on the same
cells (their means from the collected vectors), after an untimed compiling call, with the Lucid method at
the given steps and icon size, and reports cells per second.

    PYTHONPATH=src:bench python bench/atlas_bench.py --json bench/results/atlas_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def layout_scaling(vectors: np.ndarray, counts: list[int]) -> dict[str, float]:
    """Seconds of the seeded UMAP layout at each count of vectors: the collected ones drawn again with
    10% noise (numba's compiling already done by an earlier layout)."""
    from filterviz.activation_atlases.atlas import umap_layout

    generator = np.random.default_rng(0)
    scale = 0.1 * vectors.std(axis=0)
    seconds = {}
    for count in counts:
        drawn = vectors[generator.integers(0, len(vectors), count)]
        noisy = np.maximum(drawn + generator.normal(size=drawn.shape) * scale, 0).astype(np.float32)
        began = time.perf_counter()
        umap_layout(noisy, seed=0)
        seconds[str(count)] = time.perf_counter() - began
        print(f"layout of {count:,} vectors: {seconds[str(count)]:.1f} s", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=os.environ.get("FILTERVIZ_WEIGHTS"))
    parser.add_argument("--layer", default="block4_conv3")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--positions", type=int, default=4)
    parser.add_argument("--cells", type=int, default=16, help="cells drawn each way")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--icon-size", type=int, default=64)
    parser.add_argument(
        "--layout-vectors",
        default="2000,10000,40000",
        help="vector counts the layout is timed at (the GPU target's 10,000 photos give 40,000)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import filterviz
    from examples_bench import make_photos
    from filterviz.activation_atlases.atlas import render_icons, umap_layout
    from filterviz.activation_atlases.cells import grid_cells
    from filterviz.activation_atlases.vectors import collect
    from filterviz.jobs.streaming import Reading

    network = filterviz.network("vgg16")
    params = filterviz.load_weights(args.weights) if args.weights else network.init(jax.random.key(0))
    work = Path(tempfile.mkdtemp(prefix="atlas-bench-"))
    (work / "photos").mkdir()
    make_photos(work / "photos", args.images, 300, 400)
    paths = sorted(path.name for path in (work / "photos").iterdir())
    reading = Reading(32, 224, "crop", os.cpu_count() or 1)
    timing = {}

    def collected() -> tuple[np.ndarray, ...]:
        return collect(
            network,
            params,
            args.layer,
            work / "photos",
            paths,
            reading,
            count=args.positions,
            seed=0,
            progress_file=None,
            settings={},
            shown=False,
            save_seconds=1e9,
        )

    collected()  # compiles
    began = time.perf_counter()
    vectors, _, _ = collected()
    timing["collect_s"] = time.perf_counter() - began
    began = time.perf_counter()
    layout = umap_layout(vectors, seed=0)
    timing["layout_s"] = time.perf_counter() - began
    timing["layout_s_by_vectors"] = layout_scaling(vectors, [int(n) for n in args.layout_vectors.split(",")])
    grid = 1
    while grid < 64 and len(grid_cells(vectors, layout, grid * 2, 1).counts) <= args.cells:
        grid *= 2
    cells = grid_cells(vectors, layout, grid * 2, 1)
    keep = np.arange(min(args.cells, len(cells.counts)))
    cells = cells._replace(
        rows=cells.rows[keep],
        columns=cells.columns[keep],
        counts=cells.counts[keep],
        means=cells.means[keep],
        members=[cells.members[i] for i in keep],
    )
    method = filterviz.get_method("lucid", steps=args.steps)

    def draw(folder: Path, chunk: int) -> None:
        render_icons(
            params, network, args.layer, [cells], method, folder, size=args.icon_size, seed=0, chunk=chunk,
            shown=False,
        )  # fmt: skip

    for label, chunk in (("batched", len(keep)), ("one_at_a_time", 1)):
        draw(work / f"{label}-warm", chunk)  # compiles
        began = time.perf_counter()
        draw(work / label, chunk)
        timing[f"{label}_cells_per_s"] = len(keep) / (time.perf_counter() - began)
    report = {
        "device": jax.devices()[0].device_kind,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "settings": {
            "layer": args.layer,
            "images": args.images,
            "positions": args.positions,
            "vectors": len(vectors),
            "cells": len(keep),
            "steps": args.steps,
            "icon_size": args.icon_size,
            "weights": "real" if args.weights else "random",
        },
        **timing,
        "collect_images_per_s": args.images / timing["collect_s"],
        "batched_speedup": timing["batched_cells_per_s"] / timing["one_at_a_time_cells_per_s"],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
