"""Filter-steps per second of the engine against the alternatives, measured in one run on the same work.

For the ``notebook`` method (the notebook's ascent: raw pixels, normalised gradient steps):

  engine     filterviz.ascend: a batch of filters through one jitted, vmapped lax.fori_loop
  floor      the bare XLA floor: the same math hand-written in plain JAX (VGG only): a fori_loop of
             jax.grad of the one-channel head, vmapped, with none of the engine's layers around it
  full       the engine without the one-channel fast path (every channel of the target layer)
  default    the engine with JAX's own convolution gradient instead of conv2d's
  loop       one filter at a time, one jitted step per call, the loop in Python (the notebook's structure)
  torch      the same ascent in PyTorch on the same weights and start, batched like `engine`
  torch-1    PyTorch, one filter at a time

For the ``lucid`` method (Fourier image, transforms, Adam): ``engine`` (filterviz.render), ``full`` and
``torch`` (the same work as a Lucent user writes it, bench/torch_reference.py).

Every contender runs the same filters from the same start for the same steps; the table gives
filter-steps/s, ratios, and the engine's achieved FLOP/s against the device's measured matmul peak.

    PYTHONPATH=src python bench/ascent_bench.py                                  # VGG16, notebook
    PYTHONPATH=src python bench/ascent_bench.py --network resnet50 --methods notebook,lucid

With ``--baseline-src TREE/src`` it measures steady speed before and after instead: the engine of this
tree and of another (an earlier commit's worktree), each in a worker process of its own
(``engine_worker.py``), the two answering in turn on the same work, so both see the same load.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import filterviz
from filterviz.core.checks import compute_dtype, default_batch_size, matmul_precision
from filterviz.core.network import Network
from filterviz.draw.rendering import render_pixels
from filterviz.networks import resnet, vgg
from flops import is_plain_vgg, step_flops
from measures import measure_peak_flops, time_interleaved
from parity import displacement_correlation

CONTENDERS = ("engine", "floor", "full", "default", "loop", "torch", "torch-1")
LUCID_CONTENDERS = ("engine", "full", "torch")
DEFAULT_LAYERS = {
    "vgg16": "block1_conv2,block3_conv1,block4_conv1,block5_conv3",
    "vgg19": "block1_conv2,block3_conv1,block4_conv1,block5_conv4",
    "resnet50": "conv2_block3_out,conv3_block4_out,conv4_block6_out,conv5_block3_out",
}


# ----------------------------------------------------------------------------------------------------
# The contenders.


def quietly(function, *args, **kwargs):
    with open(os.devnull, "w") as nowhere, contextlib.redirect_stderr(nowhere):  # a bar, drawn unseen
        return function(*args, **kwargs)


def run_engine(network, params, layer, filters, start, steps, batch_size):
    images = quietly(
        filterviz.ascend,
        params,
        layer,
        filters,
        start,
        steps=steps,
        batch_size=batch_size,
        progress=False,
        network=network,
    )
    return np.asarray(images)


def without_fast_path(network: Network) -> Network:
    """``network`` computing every channel of the target layer (the engine's plain path)."""
    return dataclasses.replace(network, channel=None, channel_layers=frozenset())


def make_floor(network: Network, params, layer: str, batch_size: int):
    """The bare XLA floor for a VGG: the notebook's ascent written directly in JAX, using the model's
    own pieces (its conv2d and its one-channel head) and nothing of the engine."""
    prepared = network.prepared(params, jnp.float32)

    def one(filter_index, image, steps):
        def mean_activation(x):
            return jnp.mean(network.channel(prepared, x[None], layer, filter_index))

        def step(_, x):
            gradient = jax.grad(mean_activation)(x)
            return x + gradient / (jnp.sqrt(jnp.mean(jnp.square(gradient))) + 1e-5)

        return lax.fori_loop(0, steps, step, image)

    program = jax.jit(jax.vmap(one, in_axes=(0, None, None)), static_argnums=2)

    def run(filters, start, steps):
        parts = []
        with matmul_precision("float32"):
            for begin in range(0, len(filters), batch_size):
                chunk = filters[begin : begin + batch_size]
                indices = jnp.asarray(chunk + [chunk[-1]] * (batch_size - len(chunk)), jnp.int32)
                parts.append(program(indices, jnp.asarray(start), steps)[: len(chunk)])
        return np.asarray(jnp.concatenate(parts))

    return run


def make_default_gradient(network: Network, params, layer: str, batch_size: int):
    """The engine's program, traced with JAX's own convolution gradient rule (conv2d swapped for a plain
    ``lax`` convolution in the built-in networks)."""
    # A network of its own, so jit cannot reuse the programs it compiled for the real one.
    plain = dataclasses.replace(network)

    def plain_conv2d(images, kernel, flipped_kernel=None, *, stride=1, padding="SAME"):
        dimensions = ("NHWC", "HWIO", "NHWC")
        return lax.conv_general_dilated(
            images, kernel, (stride, stride), padding, dimension_numbers=dimensions
        )

    def run(filters, start, steps):
        with contextlib.ExitStack() as stack:
            for module in (vgg, resnet):
                stack.callback(setattr, module, "conv2d", module.conv2d)
                module.conv2d = plain_conv2d
            return run_engine(plain, params, layer, filters, start, steps, batch_size)

    return run


def make_loop(network: Network, params, layer: str, precision: str = "float32"):
    """The notebook's structure: a jitted step, called once per step per filter from Python."""
    prepared = network.prepared(params, compute_dtype(precision))
    dtype = compute_dtype(precision)

    @jax.jit
    def step(image, filter_index):
        def mean_activation(x):
            return jnp.mean(network.apply(prepared, x[None].astype(dtype), [layer])[layer][..., filter_index])

        with matmul_precision(precision):
            gradient = jax.grad(mean_activation)(image).astype(jnp.float32)
        return image + gradient / (jnp.sqrt(jnp.mean(jnp.square(gradient))) + 1e-5)

    def run(filters, start, steps):
        results = []
        for filter_index in filters:
            image = jnp.asarray(start)
            for _ in range(steps):
                image = step(image, filter_index)
            results.append(np.asarray(image))
        return np.stack(results)

    return run


# ----------------------------------------------------------------------------------------------------
# The table.


def format_row(row) -> str:
    order = LUCID_CONTENDERS if row["method"] == "lucid" else CONTENDERS
    return (
        f"{row['method']} {row['layer']}: "
        + ", ".join(f"{name} {row[name]:.2f}" for name in order if name in row)
        + " filter-steps/s"
    )


def markdown_table(rows, peak) -> str:
    present = [name for name in CONTENDERS if any(name in row for row in rows)]
    header = ["method", "layer", "chunk"] + [f"{m} (filter-steps/s)" for m in present]
    header += [f"engine / {m}" for m in present[1:]] + ["GFLOP/filter-step", "engine GFLOP/s", "of peak"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["method"], row["layer"], str(row["batch_size"])]
        cells += [f"{row[m]:.2f}" if m in row else "-" for m in present]
        cells += [f"{row['engine'] / row[m]:.2f}x" if m in row else "-" for m in present[1:]]
        cells += [
            f"{row['flops_per_filter_step'] / 1e9:.2f}",
            f"{row['gflops']:.1f}",
            f"{row['gflops'] * 1e9 / peak:.0%}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--network", default="vgg16", help="vgg16, vgg19 or resnet50")
    parser.add_argument("--methods", default="notebook", help="notebook, lucid or both, comma-separated")
    parser.add_argument("--layers", default=None, help="default: one layer per stage of the network")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lucid-steps", type=int, default=None, help="default: --steps")
    parser.add_argument("--filters", type=int, default=8, help="filters per layer")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="filters per chunk (default: filterviz's)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contender (best is kept)")
    parser.add_argument(
        "--skip", default="", help="contenders to skip, comma-separated: " + ",".join(CONTENDERS)
    )
    parser.add_argument(
        "--weights", default=None, help="VGG16's weights (default: found as load_weights finds them)"
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--baseline-src", default=None, help="another tree's src: time its engine against this one's"
    )
    args = parser.parse_args(argv)
    if args.baseline_src:
        return before_and_after(args)

    network = filterviz.network(args.network)
    skip = set(filter(None, args.skip.split(",")))
    if network.name == "vgg16":
        params = filterviz.load_weights(args.weights)
        weights = "ImageNet weights"
    else:  # only VGG16's real weights are here; speed does not depend on the values
        params = network.init(jax.random.key(0))
        weights = "random weights"
    if not is_plain_vgg(network):
        skip.add("floor")
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
    print(
        f"{network.name} ({weights}), size {args.size}x{args.size}, {args.steps} steps, "
        f"{args.filters} filters per layer\n"
    )

    start = np.asarray(filterviz.random_image(jax.random.key(0), args.size, args.size))
    rows = []
    layers = (args.layers or DEFAULT_LAYERS.get(network.name, network.visual_layers[-1])).split(",")
    for method in args.methods.split(","):
        for layer in layers:
            rows.append(measure(network, params, layer, method, start, args, skip, peaks))
            print(format_row(rows[-1]), flush=True)

    print()
    print(f"measured float32 matmul peak, best over the run: {max(peaks) / 1e9:.1f} GFLOP/s\n")
    print(markdown_table(rows, max(peaks)))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": device.device_kind,
                    "network": network.name,
                    "peak_flops": max(peaks),
                    "settings": vars(args),
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0


def measure(network, params, layer, method, start, args, skip, peaks) -> dict:
    """One row: every contender on ``layer`` with ``method``, interleaved."""
    filters = list(range(args.filters))
    size = args.size
    if method == "lucid":
        copies = filterviz.get_method("lucid").transform_copies
        default = max(1, default_batch_size(network, layer, size + 12, size + 12) // copies)
    else:
        default = default_batch_size(network, layer, size, size)
    batch_size = min(len(filters), args.batch_size or default)
    steps = args.steps if method == "notebook" else (args.lucid_steps or args.steps)
    row = {
        "method": method,
        "layer": layer,
        "batch_size": batch_size,
        "steps": steps,
        "flops_per_filter_step": step_flops(network, params, layer, size, method),
    }
    runners = {}
    if method == "notebook":
        runners["engine"] = lambda: run_engine(network, params, layer, filters, start, steps, batch_size)
        if "floor" not in skip:
            floor = make_floor(network, params, layer, batch_size)
            runners["floor"] = lambda: floor(filters, start, steps)
        if "full" not in skip and layer in network.channel_layers:
            plain = without_fast_path(network)
            runners["full"] = lambda: run_engine(plain, params, layer, filters, start, steps, batch_size)
        if "default" not in skip:
            default_gradient = make_default_gradient(network, params, layer, batch_size)
            runners["default"] = lambda: default_gradient(filters, start, steps)
        if "loop" not in skip:
            loop = make_loop(network, params, layer)
            runners["loop"] = lambda: loop(filters, start, steps)
        if "torch" not in skip or "torch-1" not in skip:
            from torch_reference import notebook_ascent

            torch_batched = notebook_ascent(network, params, layer)
            if "torch" not in skip:
                runners["torch"] = lambda: torch_batched(filters, start, steps, batch_size)
            if "torch-1" not in skip:
                runners["torch-1"] = lambda: torch_batched(filters, start, steps, 1)
    else:
        method_settings = filterviz.get_method("lucid", steps=steps)

        def lucid_with(net):
            return lambda: np.asarray(
                quietly(
                    render_pixels,
                    params,
                    filterviz.channel(layer, filters),
                    network=net,
                    method=method_settings,
                    size=size,
                    batch_size=batch_size,
                )[:, 0]
            )

        runners["engine"] = lucid_with(network)
        if "full" not in skip and layer in network.channel_layers:
            runners["full"] = lucid_with(without_fast_path(network))
        if "torch" not in skip:
            from torch_reference import lucid_ascent

            torch_lucid = lucid_ascent(network, params, layer)
            runners["torch"] = lambda: torch_lucid(filters, size, steps, batch_size)
    # The matmul peak takes its turn with the contenders, so a slow spell of a shared machine cannot
    # make the achieved fraction look better than it is.
    runners["peak"] = lambda: peaks.append(measure_peak_flops(repeats=3))
    seconds, results = time_interleaved(runners, args.repeats)
    del runners["peak"], seconds["peak"], results["peak"]
    work = len(filters) * steps
    for name in runners:
        row[name] = work / seconds[name]
        if method == "notebook":  # the same ascent from the same start: the pictures agree
            row[f"{name}_agreement"] = displacement_correlation(results[name], results["engine"], start)
    row["gflops"] = row["flops_per_filter_step"] * row["engine"] / 1e9
    return row


def before_and_after(args) -> int:
    """Steady filter-steps/s of this tree's engine and the baseline's, their runs taking turns."""
    here = str(Path(__file__).resolve().parents[1] / "src")
    trees = {"before": str(Path(args.baseline_src).resolve()), "after": here}
    worker = str(Path(__file__).resolve().parent / "engine_worker.py")
    command = [sys.executable, worker] + ([args.weights] if args.weights else [])
    workers = {
        name: subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": src},
        )
        for name, src in trees.items()
    }
    network = filterviz.network(args.network)
    rows = []
    for method in args.methods.split(","):
        for layer in (args.layers or DEFAULT_LAYERS[network.name]).split(","):
            steps = args.steps if method == "notebook" else (args.lucid_steps or args.steps)
            request = {"method": method, "layer": layer, "filters": args.filters, "size": args.size,
                       "steps": steps, "batch_size": args.batch_size}  # fmt: skip
            best = dict.fromkeys(workers, float("inf"))
            for _ in range(args.repeats):
                for name, process in workers.items():
                    process.stdin.write(json.dumps(request) + "\n")
                    process.stdin.flush()
                    best[name] = min(best[name], json.loads(process.stdout.readline())["seconds"])
            work = args.filters * steps
            row = {**request, **{name: work / seconds for name, seconds in best.items()}}
            row["after/before"] = row["after"] / row["before"]
            rows.append(row)
            print(f"{method:9} {layer:16} before {row['before']:7.2f}  after {row['after']:7.2f} "
                  f"filter-steps/s  after/before {row['after/before']:.3f}", flush=True)  # fmt: skip
    for process in workers.values():
        process.stdin.close()
        process.wait()
    if args.json:
        report = {
            "device": jax.devices()[0].device_kind,
            "trees": trees,
            "settings": vars(args),
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
