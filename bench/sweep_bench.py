"""The sweep's speed, layer by layer, and the full VGG16 atlas (4,224 conv filters), measured in one run.

Per layer, the same filters from the same noise start, methods taking turns (best of --repeats):

  sweep-<precision>  the sweep's compute: filterviz.sweeps.filter_chunks.ShardedAscent over every device
                     (no file I/O)
  loop               one filter at a time, one jitted step per call, the loop in Python (the notebook)
  torch              the same ascent in PyTorch, as in bench/ascent_bench.py, batched like the sweep

Per layer: filter-steps/s, achieved FLOP/s of the float32 sweep against the device's measured float32
matmul peak (MFU), the speed-up over the loop and PyTorch, and each precision's pictures against
float32's (correlation of the pixel displacement). The full-atlas line adds the layers up, weighting each
by its filter count. With --full the whole atlas is also swept for real, into a temporary folder, twice:
the first run compiles (and fills the compilation cache), the second takes its programs from the cache,
so its wall time is the device time plus the host's share.

    PYTHONPATH=src python bench/sweep_bench.py                                  # CPU: 2 filters a layer
    PYTHONPATH=src python bench/sweep_bench.py --sample all --precisions float32,tf32,bfloat16 --full
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
import numpy as np

import filterviz
from ascent_bench import make_loop
from filterviz.core.methods import notebook_method
from filterviz.runtime import split_cpu_into_devices
from filterviz.sweeps.filter_chunks import ShardedAscent
from flops import ascent_step_flops
from measures import measure_peak_flops, time_interleaved
from parity import displacement_correlation
from torch_reference import notebook_ascent

VGG16 = filterviz.network("vgg16")


def sweep_runner(ascent: ShardedAscent, layer: str, filters: np.ndarray):
    def run():
        parts = []
        for chunk in ascent.run(layer, filters):
            parts.append(np.asarray(chunk.images)[: len(chunk.filters)])
        return np.concatenate(parts)

    return run


def full_sweep(params, args, precision: str, folder: Path) -> float:
    began = time.perf_counter()
    filterviz.sweep(
        params,
        folder,
        layers=args.layers.split(","),
        size=(args.size, args.size),
        steps=args.steps,
        precision=precision,
        progress=False,
    )
    return time.perf_counter() - began


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", default=",".join(VGG16.visual_layers))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sample", default="2", help="filters timed per layer, or 'all' (default 2)")
    parser.add_argument(
        "--loop-sample", type=int, default=2, help="filters the loop and PyTorch time (default 2)"
    )
    parser.add_argument("--precisions", default="float32,bfloat16", help="sweep precisions to time")
    parser.add_argument("--skip", default="", help="methods to skip: loop,torch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--full", action="store_true", help="also sweep every filter of --layers for real, twice"
    )
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--cpu-devices", type=int, default=1, help="CPU cores as devices, as 'filterviz sweep' does (0: all)"
    )
    args = parser.parse_args(argv)
    if args.cpu_devices != 1:
        split_cpu_into_devices(args.cpu_devices or None)  # before JAX starts its backends

    filterviz.enable_compilation_cache(tempfile.mkdtemp(prefix="filterviz-bench-cache-"))
    params = filterviz.load_weights(args.weights)
    precisions = args.precisions.split(",")
    skip = set(filter(None, args.skip.split(",")))
    if "torch" not in skip:
        try:
            import torch
        except ImportError:
            print("torch is not installed: no PyTorch column (pip install '.[bench]')", file=sys.stderr)
            skip.add("torch")
    device = jax.devices()[0]
    peaks = [measure_peak_flops()]
    print(
        f"device: {jax.device_count()} x {device.device_kind} ({device.platform}), jax {jax.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
        + ("" if "torch" in skip else f"; PyTorch {torch.__version__}")
    )
    print(f"float32 matmul peak at the start: {peaks[0] / 1e9:.1f} GFLOP/s")
    print(f"size {args.size}x{args.size}, {args.steps} steps, sample {args.sample} filters a layer\n")

    start = np.asarray(filterviz.random_image(jax.random.key(0), args.size, args.size))
    size = (args.size, args.size)
    ascents = {
        p: ShardedAscent(VGG16, params, notebook_method(args.steps, precision=p), start, size=size)
        for p in precisions
    }
    rows = []
    for layer in args.layers.split(","):
        channels = VGG16.layer(layer).channels
        count = channels if args.sample == "all" else min(channels, int(args.sample))
        filters = np.arange(count, dtype=np.int32)
        few = list(range(min(count, args.loop_sample)))
        runners = {f"sweep-{p}": sweep_runner(ascents[p], layer, filters) for p in precisions}
        work = {name: count * args.steps for name in runners}
        if "loop" not in skip:
            loop = make_loop(VGG16, params, layer)
            runners["loop"] = lambda: loop(few, start, args.steps)
            work["loop"] = len(few) * args.steps
        if "torch" not in skip:
            torch_ascent = notebook_ascent(VGG16, params, layer)
            chunk = ascents[precisions[0]].chunk_size(layer, len(few))
            runners["torch"] = lambda: torch_ascent(few, start, args.steps, chunk)
            work["torch"] = len(few) * args.steps
        runners["peak"] = lambda: peaks.append(measure_peak_flops(repeats=3))
        seconds, results = time_interleaved(runners, args.repeats)
        del runners["peak"]
        reference = results[f"sweep-{precisions[0]}"]
        row = {
            "layer": layer,
            "channels": channels,
            "timed": count,
            "chunk": ascents[precisions[0]].chunk_size(layer, count),
            "flops_per_filter_step": ascent_step_flops(VGG16, layer, args.size, args.size),
        }
        for name in runners:
            row[name] = work[name] / seconds[name]
            rows_compared = len(results[name])
            row[f"{name}_agreement"] = displacement_correlation(
                results[name], reference[:rows_compared], start
            )
        row["gflops"] = row["flops_per_filter_step"] * row[f"sweep-{precisions[0]}"] / 1e9
        rows.append(row)
        print(
            f"{layer}: "
            + ", ".join(
                f"{name} {row[name]:.2f} (agreement {row[name + '_agreement']:.4f})" for name in runners
            )
            + " filter-steps/s",
            flush=True,
        )

    peak = max(peaks)
    methods = [name for name in rows[0] if name.startswith("sweep-") or name in ("loop", "torch")]
    methods = [m for m in methods if not m.endswith("_agreement")]
    atlas = {m: sum(row["channels"] * args.steps / row[m] for row in rows) for m in methods}
    full = {}
    if args.full:
        for precision in precisions:
            with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
                full[precision] = (
                    full_sweep(params, args, precision, Path(first)),
                    full_sweep(params, args, precision, Path(second)),
                )
                print(f"full sweep {precision}: {full[precision][0]:.1f} s, again {full[precision][1]:.1f} s")
    print(f"\nfloat32 matmul peak, best over the run: {peak / 1e9:.1f} GFLOP/s\n")
    print(markdown(rows, methods, peak, precisions[0]))
    print()
    for m in methods:
        line = f"full atlas ({sum(r['channels'] for r in rows)} filters), {m}: {atlas[m]:.1f} s"
        if m != f"sweep-{precisions[0]}":
            line += f" ({atlas[m] / atlas[f'sweep-{precisions[0]}']:.2f}x the {precisions[0]} sweep's time)"
        print(
            line
            + (
                ", estimated from the per-layer rates"
                if args.sample != "all" or m in ("loop", "torch")
                else ""
            )
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": device.device_kind,
                    "devices": jax.device_count(),
                    "peak_flops": peak,
                    "rows": rows,
                    "atlas_seconds": atlas,
                    "full_sweep_seconds": full,
                    "args": vars(args),
                },
                indent=2,
            )
        )
    return 0


def markdown(rows, methods, peak, base) -> str:
    base = f"sweep-{base}"
    header = ["layer", "chunk"] + methods + [f"{base} / {m}" for m in methods if m != base]
    header += ["GFLOP/filter-step", f"{base} GFLOP/s", "MFU"]
    header += [f"{m} vs {base} (corr.)" for m in methods if m.startswith("sweep-") and m != base]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["layer"], str(row["chunk"])] + [f"{row[m]:.2f}" for m in methods]
        cells += [f"{row[base] / row[m]:.2f}x" for m in methods if m != base]
        cells += [
            f"{row['flops_per_filter_step'] / 1e9:.2f}",
            f"{row['gflops']:.1f}",
            f"{row['gflops'] * 1e9 / peak:.0%}",
        ]
        cells += [f"{row[m + '_agreement']:.4f}" for m in methods if m.startswith("sweep-") and m != base]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
