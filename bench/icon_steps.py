"""How many Lucid steps an activation atlas's icons need: the default is chosen here, by measurement.

The icons are drawn as the atlas draws them: each cell's mean activation vector as a ``direction``
objective, Lucid's method, at the icon size. The cells come from real photos (scikit-image's samples,
fitted to 224x224) at block4_conv3 of VGG16 with the real weights: every position's vector, grouped into
``--cells`` cells along the vectors' first principal component (the atlas's UMAP grid needs more photos
than ship here; a cell is a mean of similar vectors either way). For each step count the same cells
are drawn from the same seeded starts, and reported: the mean achieved objective against the longest
run's, each icon's correlation with its longest-run picture, and seconds per icon.

    PYTHONPATH=src python bench/icon_steps.py --json bench/results/icon_steps_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from measures import sample_photos

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field")


def cell_means(params, layer: str, cells: int) -> np.ndarray:
    """``float32[cells, C]``: means of the photos' vectors, grouped along their first principal axis."""
    import filterviz

    maps = np.asarray(filterviz.activations(params, sample_photos(PHOTOS), layer))
    vectors = maps.reshape(-1, maps.shape[-1])
    centred = vectors - vectors.mean(axis=0)
    axis = np.linalg.svd(centred[::7], full_matrices=False)[2][0]
    order = np.argsort(centred @ axis)
    return np.asarray([vectors[group].mean(axis=0) for group in np.array_split(order, cells)], np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=os.environ.get("FILTERVIZ_WEIGHTS"))
    parser.add_argument("--layer", default="block4_conv3")
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", default="32,64,128,256,512")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import filterviz

    params = filterviz.load_weights(args.weights)
    means = cell_means(params, args.layer, args.cells)
    objective = filterviz.direction(args.layer, means)
    runs = {}
    for steps in sorted(int(s) for s in args.steps.split(",")):
        draw = dict(method="lucid", size=args.size, steps=steps, batch_size=args.cells, progress=False)
        filterviz.render(params, objective, **{**draw, "steps": 1})  # the program, compiled
        began = time.perf_counter()
        drawn = filterviz.render(params, objective, **draw)
        seconds = time.perf_counter() - began
        runs[steps] = (np.asarray(drawn.activations), np.asarray(drawn.pictures, np.float32), seconds)
    longest = max(runs)
    reference, reference_pictures, _ = runs[longest]
    rows = []
    for steps, (achieved, pictures, seconds) in runs.items():
        correlation = [
            float(np.corrcoef(picture.ravel(), other.ravel())[0, 1])
            for picture, other in zip(pictures, reference_pictures, strict=True)
        ]
        rows.append({
            "steps": steps,
            "achieved_vs_longest": float(np.mean(achieved) / np.mean(reference)),
            "worst_icon_vs_longest": float(np.min(achieved / reference)),
            "correlation_with_longest": float(np.mean(correlation)),
            "seconds_per_icon": seconds / args.cells,
        })  # fmt: skip
        row = rows[-1]
        print(
            f"{steps:4d} steps: objective {row['achieved_vs_longest']:.2f} of {longest} steps' (worst "
            f"icon {row['worst_icon_vs_longest']:.2f}), picture correlation "
            f"{row['correlation_with_longest']:.2f}, {row['seconds_per_icon']:.2f} s per icon",
            flush=True,
        )
    if args.json:
        report = {
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "rows": rows,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
