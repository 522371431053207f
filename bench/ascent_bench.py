"""Filter-steps per second of the ascent, four ways, measured in one run on the same work.

  vmapped    filterviz.ascend: a batch of filters through one jitted, vmapped lax.fori_loop
  progress   the same with its progress bar: the loop in 10 segments, each reporting to the host
  loop       one filter at a time, one jitted step per call, the loop in Python (the notebook's structure)
  default    filterviz.ascend with JAX's own convolution gradient instead of conv3x3's (to show why it exists)
  torch      the same ascent in PyTorch on the same weights and start, batched like `vmapped`
  torch-1    PyTorch, one filter at a time

Every method runs the same filters from the same start for the same steps; the table gives filter-steps/s,
ratios, and the vmapped ascent's achieved FLOP/s against the device's measured matmul peak.

    PYTHONPATH=src python bench/ascent_bench.py                      # CPU defaults
    PYTHONPATH=src python bench/ascent_bench.py --filters 256 --steps 20 --skip default   # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
import jax.numpy as jnp
import numpy as np

import filterviz
from filterviz import model as model_module
from filterviz.ascent import (
    ascend_batch,
    compute_dtype,
    matmul_precision,
    normalized_ascent_step,
    prepare_params,
)
from filterviz.objectives import filter_mean
from flops import ascent_step_flops

METHODS = ("vmapped", "progress", "loop", "default", "torch", "torch-1")


def measure_peak_flops(size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a float32 ``size x size`` matmul on the default device (the best of ``repeats``)."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - began)
    return 2 * size**3 / best


def time_interleaved(runners: dict, repeats: int) -> tuple[dict, dict]:
    """Best seconds and result of each runner; after one untimed warm-up each, the runners take turns
    ``repeats`` times, so every method sees the same background noise of a shared machine."""
    results = {name: run() for name, run in runners.items()}
    best = dict.fromkeys(runners, float("inf"))
    for _ in range(repeats):
        for name, run in runners.items():
            began = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - began)
    return best, results


def run_vmapped(params, layer, filters, start, steps, batch_size, progress=False):
    with open(os.devnull, "w") as nowhere, contextlib.redirect_stderr(nowhere):  # the bar, drawn unseen
        images = filterviz.ascend(
            params, layer, filters, start, steps=steps, batch_size=batch_size, progress=progress
        )
        return np.asarray(images)


def make_default_gradient(params, layer, batch_size):
    """filterviz.ascend's chunked program, but traced with JAX's own convolution gradient rule."""

    def distinct(params, layer, filter_indices, images, step_size, steps):
        # A function of its own: jit would otherwise reuse the trace it cached for ascend_batch.
        return ascend_batch.__wrapped__(params, layer, filter_indices, images, step_size, steps)

    program = jax.jit(distinct, static_argnames=("layer", "steps"))

    def run(filters, start, steps):
        original = model_module.conv3x3
        # JAX's own gradient rule; only the first (tracing) call sees the swap.
        model_module.conv3x3 = lambda images, kernel, flipped=None: model_module._conv_same(images, kernel)
        try:
            parts = []
            for begin in range(0, len(filters), batch_size):
                indices = jnp.asarray(filters[begin : begin + batch_size], jnp.int32)
                starts = jnp.broadcast_to(jnp.asarray(start), (len(indices), *np.shape(start)))
                parts.append(program(params, layer, indices, starts, 1.0, steps))
            return np.asarray(jnp.concatenate(parts))
        finally:
            model_module.conv3x3 = original

    return run


def make_loop(params, layer, precision="float32"):
    """The notebook's structure: a jitted step, called once per step per filter from Python."""
    prepared = prepare_params(params, precision)
    dtype = compute_dtype(precision)

    @jax.jit
    def step(prepared, image, filter_index):
        with matmul_precision(precision):
            gradient = jax.grad(filter_mean, argnums=3)(prepared, layer, filter_index, image.astype(dtype))
        return normalized_ascent_step(gradient.astype(jnp.float32), image, 1.0)

    def run(filters, start, steps):
        results = []
        for filter_index in filters:
            image = jnp.asarray(start)
            for _ in range(steps):
                image = step(prepared, image, filter_index)
            results.append(np.asarray(image))
        return np.stack(results)

    return run


def make_torch(params, layer, precision="float32"):
    """The same ascent in PyTorch (CUDA when it has it): ``batched(filters, start, steps, batch_size)``.

    ``precision`` as filterviz's: ``float32`` (no TF32 anywhere), ``tf32`` (TF32 convolutions and
    matmuls, CUDA only) or ``bfloat16`` (autocast; the image stays float32).
    """
    import torch

    layers = []
    for spec in model_module.LAYERS[: model_module.LAYER_NAMES.index(layer) + 1]:
        if spec.kind == "conv":
            kernel = np.asarray(params[spec.name]["kernel"])
            conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], 3, padding=1)
            conv.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
            conv.bias.data = torch.from_numpy(np.asarray(params[spec.name]["bias"]).copy())
            layers += [conv, torch.nn.ReLU()]
        else:
            layers.append(torch.nn.MaxPool2d(2))
    network = torch.nn.Sequential(*layers).eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    network = network.to(device)
    tf32 = precision == "tf32"

    def ascend(filters, starts, steps):
        images = torch.from_numpy(np.ascontiguousarray(starts.transpose(0, 3, 1, 2))).to(device)
        which = torch.as_tensor(filters, device=device)
        rows = torch.arange(len(filters), device=device)
        for _ in range(steps):
            images.requires_grad_(True)
            with torch.autocast(device, torch.bfloat16, enabled=precision == "bfloat16"):
                loss = network(images)[rows, which].float().mean(dim=(1, 2)).sum()
            (gradient,) = torch.autograd.grad(loss, images)
            rms = gradient.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
            images = (images + gradient / (rms + 1e-5)).detach()
        if device == "cuda":
            torch.cuda.synchronize()
        return images.cpu().numpy().transpose(0, 2, 3, 1)

    def batched(filters, start, steps, batch_size):
        # TF32 is a process-wide switch in PyTorch: set it for this call only.
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            starts = np.repeat(np.asarray(start)[None], len(filters), axis=0)
            parts = [
                ascend(filters[i : i + batch_size], starts[i : i + batch_size], steps)
                for i in range(0, len(filters), batch_size)
            ]
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        return np.concatenate(parts)

    return batched


def displacement_correlation(a, b, start):
    a, b = (np.asarray(a) - start).ravel(), (np.asarray(b) - start).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", default="block1_conv2,block3_conv1,block4_conv1,block5_conv3")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--filters", type=int, default=8, help="filters per layer")
    parser.add_argument("--batch-size", type=int, default=None, help="vmapped chunk (default: filterviz's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (best is kept)")
    parser.add_argument("--skip", default="", help="methods to skip, comma-separated: " + ",".join(METHODS))
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)

    skip = set(filter(None, args.skip.split(",")))
    params = filterviz.load_weights(args.weights)
    device = jax.devices()[0]
    peaks = [measure_peak_flops()]
    torch_label = "PyTorch (not run)"
    if not {"torch", "torch-1"} <= skip:
        try:
            import torch
        except ImportError:
            print(
                "torch is not installed: skipping the PyTorch rows (pip install '.[bench]')", file=sys.stderr
            )
            skip |= {"torch", "torch-1"}
        else:
            torch_device = "cuda" if torch.cuda.is_available() else "cpu"
            torch_label = f"PyTorch {torch.__version__} ({torch_device}, {torch.get_num_threads()} threads)"
    print(
        f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}; {torch_label}"
    )
    print(f"measured float32 matmul peak at the start: {peaks[0] / 1e9:.1f} GFLOP/s")
    print(f"size {args.size}x{args.size}, {args.steps} steps, {args.filters} filters per layer\n")

    start = np.asarray(filterviz.random_image(jax.random.key(0), args.size, args.size))
    rows = []
    for layer in args.layers.split(","):
        filters = list(range(args.filters))
        batch_size = min(
            len(filters), args.batch_size or filterviz.default_batch_size(layer, args.size, args.size)
        )
        work = len(filters) * args.steps
        row = {
            "layer": layer,
            "batch_size": batch_size,
            "flops_per_filter_step": ascent_step_flops(layer, args.size, args.size),
        }
        runners = {"vmapped": lambda: run_vmapped(params, layer, filters, start, args.steps, batch_size)}
        if "progress" not in skip:
            runners["progress"] = lambda: run_vmapped(
                params, layer, filters, start, args.steps, batch_size, progress=True
            )
        if "loop" not in skip:
            loop = make_loop(params, layer)
            runners["loop"] = lambda: loop(filters, start, args.steps)
        if "default" not in skip:
            default = make_default_gradient(params, layer, batch_size)
            runners["default"] = lambda: default(filters, start, args.steps)
        if "torch" not in skip or "torch-1" not in skip:
            torch_batched = make_torch(params, layer)
            if "torch" not in skip:
                runners["torch"] = lambda: torch_batched(filters, start, args.steps, batch_size)
            if "torch-1" not in skip:
                runners["torch-1"] = lambda: torch_batched(filters, start, args.steps, 1)
        # The matmul peak takes its turn with the methods, so a slow spell of a shared machine cannot
        # make the achieved fraction look better than it is.
        runners["peak"] = lambda: peaks.append(measure_peak_flops(repeats=3))
        seconds, results = time_interleaved(runners, args.repeats)
        del runners["peak"], seconds["peak"], results["peak"]
        for name in runners:
            row[name] = work / seconds[name]
            # Every method did the same work: its pictures match the vmapped ascent's.
            row[f"{name}_agreement"] = displacement_correlation(results[name], results["vmapped"], start)
        row["gflops"] = row["flops_per_filter_step"] * row["vmapped"] / 1e9
        rows.append(row)
        print(format_row(row), flush=True)

    print()
    print(f"measured float32 matmul peak, best over the run: {max(peaks) / 1e9:.1f} GFLOP/s\n")
    print(markdown_table(rows, max(peaks)))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": device.device_kind, "peak_flops": max(peaks), "rows": rows}, indent=2)
        )
    return 0


def format_row(row) -> str:
    parts = [f"{row['layer']}: vmapped {row['vmapped']:.2f}"]
    parts += [f"{method} {row[method]:.2f}" for method in METHODS[1:] if method in row]
    return ", ".join(parts) + " filter-steps/s"


def markdown_table(rows, peak) -> str:
    present = [method for method in METHODS if any(method in row for row in rows)]
    header = ["layer", "chunk"] + [f"{m} (filter-steps/s)" for m in present]
    header += [f"vmapped / {m}" for m in present[1:]] + ["GFLOP/filter-step", "vmapped GFLOP/s", "of peak"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["layer"], str(row["batch_size"])]
        cells += [f"{row[m]:.2f}" if m in row else "-" for m in present]
        cells += [f"{row['vmapped'] / row[m]:.2f}x" if m in row else "-" for m in present[1:]]
        cells += [
            f"{row['flops_per_filter_step'] / 1e9:.2f}",
            f"{row['gflops']:.1f}",
            f"{row['gflops'] * 1e9 / peak:.0%}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
