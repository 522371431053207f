"""Peak memory of a whole concept pass against the number of vectors: flat, or growing with the dataset?

Each size runs ``filterviz.concepts`` end to end (collect, fit, measures, usage, patches, pictures) in a
fresh process, on random photos at block1_conv2 (every one of its 224 x 224 positions is a vector of 64
channels, so 2 photos give 1e5 vectors and 20 give 1e6), read 2 photos per batch: what a batch holds
is the same for every size, so any growth is the dataset's. A thread samples the process's anonymous
resident memory (``RssAnon``: what the process itself holds, not the file pages of the vector shards it
maps) every 20 ms; the report gives its peak per size.

    PYTHONPATH=src python bench/concepts_memory.py --vectors 100000,1000000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

POSITIONS = 224 * 224
"""Vectors block1_conv2 gives per 224 x 224 photo."""


def anonymous_megabytes() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


def one_size(vectors: int, weights: str | None) -> dict:
    """One concept pass over ``ceil(vectors / POSITIONS)`` random photos, its peak anonymous memory."""
    import numpy as np
    from PIL import Image

    import filterviz

    params = filterviz.load_weights(weights)
    peak, done = [anonymous_megabytes()], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak.append(anonymous_megabytes())

    with tempfile.TemporaryDirectory() as folder:
        photos = Path(folder) / "photos"
        photos.mkdir()
        rng = np.random.default_rng(0)
        for index in range(math.ceil(vectors / POSITIONS)):
            pixels = rng.uniform(0, 255, (224, 224, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(photos / f"{index}.png")
        baseline = anonymous_megabytes()
        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        began = time.perf_counter()
        found = filterviz.concepts(
            params, photos, "block1_conv2", out=Path(folder) / "out", concepts=16, active=4, fit_steps=200,
            fit_batch_size=4096, stability=False, method="notebook", steps=2, size=32, progress=False,
            image_batch_size=2,  # a batch's maps (2 photos: 25 MB) held at once, whatever the dataset
        )  # fmt: skip
        seconds = time.perf_counter() - began
        done.set()
        watcher.join()
        collected = int(json.loads((Path(found.page).parent / "concepts.json").read_text())["vectors"])
    return {
        "vectors": collected,
        "peak_anonymous_mb": max(peak),
        "before_pass_mb": baseline,
        "growth_mb": max(peak) - baseline,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vectors", default="100000,1000000", help="dataset sizes, comma-separated")
    parser.add_argument("--weights", default=os.environ.get("FILTERVIZ_WEIGHTS"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a worker: one size, in this process
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one_size(args.one, args.weights)))
        return 0
    rows = []
    for size in (int(value) for value in args.vectors.split(",")):
        command = [sys.executable, __file__, "--one", str(size)] + (
            ["--weights", args.weights] if args.weights else []
        )
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"the pass over {size:,} vectors failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(
            f"{row['vectors']:>9,} vectors: peak {row['peak_anonymous_mb']:7.0f} MB anonymous "
            f"({row['growth_mb']:+6.0f} MB over the process before the pass), {row['seconds']:5.1f} s",
            flush=True,
        )
    if args.json:
        report = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "rows": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
