"""The host's cost per filter in a sweep, apart from the device: what the writer threads do with each
finished filter (pictures from pixels, PNG encoding, sha256, the atomic write, the manifest line), and
what the atlas does afterwards (each picture read back for the contact sheets).

    PYTHONPATH=src python bench/host_cost.py                  # 128x128, 256 filters, 3 rounds
    PYTHONPATH=src python bench/host_cost.py --size 32 --filters 8 --repeats 1

Milliseconds per filter on one thread, best of ``--repeats``; a sweep spreads the writing over its writer
threads while the device computes the next chunks, so the device is never waiting on it while one thread's
cost per filter stays below the device's time per filter divided by the threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from filterviz.core.methods import notebook_method
from filterviz.io.files import atomic_write, encode_png
from filterviz.sweeps.atlas import contact_sheet, load_pictures
from filterviz.sweeps.manifest import ManifestWriter, digest

STAGES = ("pictures", "png", "sha256", "write", "manifest", "sheet")


def one_round(images: np.ndarray, folder: Path) -> dict[str, float]:
    """Seconds of each stage for every image of ``images float32[N, H, W, 3]``, written into ``folder``."""
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    pictures = notebook_method().to_pictures(images)
    seconds["pictures"] = time.perf_counter() - began
    began = time.perf_counter()
    encoded = [encode_png(picture) for picture in pictures]
    seconds["png"] = time.perf_counter() - began
    began = time.perf_counter()
    sums = [digest(data) for data in encoded]
    seconds["sha256"] = time.perf_counter() - began
    (folder / "layer").mkdir(exist_ok=True)
    entries = [{"layer": "layer", "filter": i, "png": f"layer/{i:04d}.png"} for i in range(len(encoded))]
    began = time.perf_counter()
    for entry, data in zip(entries, encoded, strict=True):
        atomic_write(folder / entry["png"], data, durable=False)
    seconds["write"] = time.perf_counter() - began
    manifest = ManifestWriter(folder / "manifest.jsonl")
    began = time.perf_counter()
    for entry, data, checksum in zip(entries, encoded, sums, strict=True):
        manifest.append({**entry, "activation": 1.0, "bytes": len(data), "sha256": checksum})
    seconds["manifest"] = time.perf_counter() - began
    manifest.close()
    began = time.perf_counter()
    contact_sheet(load_pictures(folder, entries), [str(e["filter"]) for e in entries])
    seconds["sheet"] = time.perf_counter() - began
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--filters", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    # Pictures as an ascent leaves them: noise around mid grey with some structure, not a flat image.
    rng = np.random.default_rng(0)
    images = rng.normal(127.0, 30.0, (args.filters, args.size, args.size, 3)).astype(np.float32)
    best = dict.fromkeys(STAGES, float("inf"))
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            for stage, seconds in one_round(images, Path(folder)).items():
                best[stage] = min(best[stage], seconds)
    per_filter = {stage: best[stage] / args.filters * 1000 for stage in STAGES}
    per_filter["writer total"] = sum(per_filter[stage] for stage in STAGES if stage != "sheet")
    shape = f"{args.filters} filters, {args.size}x{args.size}, best of {args.repeats}"
    print(f"{shape}: ms per filter, one thread\n")
    print("| " + " | ".join(per_filter) + " |")
    print("|" + "---|" * len(per_filter))
    print("| " + " | ".join(f"{value:.3f}" for value in per_filter.values()) + " |")
    if args.json:
        figures = {"size": args.size, "filters": args.filters, **per_filter}
        Path(args.json).write_text(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
