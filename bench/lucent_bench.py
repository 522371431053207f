"""Lucent against filterviz's Lucid method on the same PyTorch model: speed, compile time, activation.

The model is torchvision's VGG16 carrying the real Keras VGG16 weights behind torchvision's input
convention (``torch_reference.torchvision_vgg16``), so both tools take it as a PyTorch user's model:
Lucent (``torch-lucent``) by its hooks, filterviz through ``filterviz.from_torch``. For each layer both
draw the same channels, a batch of them at once (Lucent's ``param.image(batch=B)`` with one channel
objective per batch element; filterviz one compiled, vmapped program), for the same number of steps, at
the same picture size, Lucent not upsampling (``fixed_image_size`` = the picture's size). Each tool keeps
its own defaults otherwise (both are Lucid's recipe: Fourier-decorrelated image, jitter/scale/rotate,
Adam 0.05).

Reported per layer: filter-steps per second for each tool, filterviz's compile time (its first call
less a second call's time), and the final activation: each tool's final picture scored identically, by
torch, as the mean of the target channel's activation on the picture as is. Each tool's work is counted
too (``step_flops``): both see the picture at about ``size + 12`` pixels after Lucid's transforms (pad 12,
jitter 8, scale, rotate, jitter 4); filterviz's traced forward stops at the target and its backward
computes input gradients only; Lucent's forward runs the whole model (every conv, the classifier) and
its backward stops at the target. Achieved FLOP/s is set against the CPU's measured matmul peak.

    PYTHONPATH=src:bench python bench/lucent_bench.py --weights W.h5 --json bench/results/lucent_cpu.json

With ``--cpu-devices 0`` the CPU's cores are devices and filterviz's batch is split over them, one
single-threaded share per core (``filterviz.render`` splits over every device of the process); Lucent
runs on torch's threads either way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import ascent_step_flops
from scoring import scores, torch_layer

LAYERS = ("block3_conv3", "block4_conv3", "block5_conv3")
TRANSFORMED_MARGIN = 12  # pad 12 on each side, less the jitters' crops of 8 and 4


def lucent_run(
    module, layer_index: int, channels: list[int], size: int, steps: int
) -> tuple[np.ndarray, float]:
    import torch
    from lucent.optvis import objectives, param, render

    torch.manual_seed(0)
    objective = sum(objectives.channel(f"features_{layer_index}", c, batch=i) for i, c in enumerate(channels))
    began = time.perf_counter()
    images = render.render_vis(
        module, objective, param_f=lambda: param.image(size, batch=len(channels)), thresholds=(steps,),
        show_image=False, progress=False, fixed_image_size=size,
    )  # fmt: skip
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return np.asarray(images[-1]), time.perf_counter() - began


def filterviz_run(
    network, params, layer_index: int, channels: list[int], size: int, steps: int, seed: int, precision: str
):
    import filterviz

    began = time.perf_counter()
    drawn = filterviz.render(
        params, filterviz.channel(f"features.{layer_index}", channels), network=network, method="lucid",
        size=size, steps=steps, seed=seed, batch_size=len(channels), progress=False, precision=precision,
    )  # fmt: skip
    pictures = np.asarray(drawn.pictures, np.float32).reshape(len(channels), size, size, 3)
    return (pictures / 255.0 if pictures.max() > 1.5 else pictures), time.perf_counter() - began


def builtin_run(params, layer: str, channels: list[int], size: int, steps: int, seed: int, precision: str):
    """The same drawing by filterviz's built-in VGG16: its seconds."""
    import filterviz

    began = time.perf_counter()
    filterviz.render(
        params, filterviz.channel(layer, channels), method="lucid", size=size, steps=steps, seed=seed,
        batch_size=len(channels), progress=False, precision=precision,
    )  # fmt: skip
    return time.perf_counter() - began


def compare_layer(
    module,
    network,
    torch_params,
    layer: str,
    channels: list[int],
    size: int,
    steps: int,
    peak: float,
    precision: str = "float32",
    builtin_params=None,
) -> dict:
    """Both tools on ``channels`` of ``layer`` (a filterviz VGG16 name) of ``module`` (on any device;
    ``network, torch_params`` its :func:`filterviz.from_torch`; filterviz in ``precision``): one row of
    the report. With ``builtin_params`` (the same weights as filterviz's own VGG16), the same work drawn by
    the built-in network too: the cost of the PyTorch path."""
    from filterviz.networks import VGG16

    index = torch_layer(layer)
    run = (network, torch_params, index, channels, size, steps)
    first_pictures, first = filterviz_run(*run, seed=0, precision=precision)
    _, steady = filterviz_run(*run, seed=1, precision=precision)
    builtin = None
    if builtin_params is not None:
        _ = builtin_run(builtin_params, layer, channels, size, steps, seed=0, precision=precision)
        builtin = builtin_run(builtin_params, layer, channels, size, steps, seed=1, precision=precision)
    lucent_pictures, lucent_seconds = lucent_run(module, index, channels, size, steps)
    filter_steps = len(channels) * steps
    row = {
        "layer": layer,
        "torch_layer": f"features.{index}",
        "filterviz_filter_steps_per_s": filter_steps / steady,
        "lucent_filter_steps_per_s": filter_steps / lucent_seconds,
        "speedup": lucent_seconds / steady,
        "filterviz_compile_s": max(first - steady, 0.0),
        "filterviz_first_call_s": first,
        "builtin_filter_steps_per_s": filter_steps / builtin if builtin else None,
        "torch_path_over_builtin": steady / builtin if builtin else None,  # seconds per step, >1: slower
        "filterviz_activation": scores(module, layer, channels, first_pictures),
        "lucent_activation": scores(module, layer, channels, lucent_pictures),
    }
    for tool in ("filterviz", "lucent"):
        flops = ascent_step_flops(VGG16, layer, size + TRANSFORMED_MARGIN, tool=tool)
        row[f"{tool}_step_gflops"] = flops / 1e9
        row[f"{tool}_gflops_per_s"] = flops * row[f"{tool}_filter_steps_per_s"] / 1e9
        row[f"{tool}_of_peak"] = row[f"{tool}_gflops_per_s"] * 1e9 / peak
    ours, theirs = np.mean(row["filterviz_activation"]), np.mean(row["lucent_activation"])
    row["activation_ratio"] = float(ours / theirs) if theirs > 0 else None  # None: Lucent's stayed dead
    print(
        f"{layer:<13} filterviz {row['filterviz_filter_steps_per_s']:6.2f} filter-steps/s "
        f"(compile {row['filterviz_compile_s']:.1f} s; torch path / built-in "
        f"{row['torch_path_over_builtin'] or float('nan'):.2f}x), "
        f"Lucent {row['lucent_filter_steps_per_s']:6.2f}: "
        f"{row['speedup']:.2f}x; activation {ours:.1f} vs {theirs:.1f}; GFLOP/s "
        f"{row['filterviz_gflops_per_s']:.0f} vs {row['lucent_gflops_per_s']:.0f} (peak {peak / 1e9:.0f})",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=os.environ.get("FILTERVIZ_WEIGHTS"))
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument("--batch", type=int, default=4, help="channels drawn at once by each tool")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument(
        "--cpu-devices", type=int, default=None,
        help="present the CPU as this many devices (0: one per core), filterviz's batch split over them",
    )  # fmt: skip
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.cpu_devices is not None:  # before JAX starts its backends
        from filterviz.runtime import split_cpu_into_devices

        split_cpu_into_devices(args.cpu_devices or None)

    import jax
    import torch

    import filterviz
    from measures import measure_peak_flops
    from torch_reference import torchvision_vgg16

    params = filterviz.load_weights(args.weights)
    peak = measure_peak_flops()
    module = torchvision_vgg16(params)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    network, torch_params = filterviz.from_torch(module, name="torchvision-vgg16")
    channels = list(range(args.batch))
    rows = [
        compare_layer(
            module, network, torch_params, layer, channels, args.size, args.steps, peak, builtin_params=params
        )
        for layer in args.layers.split(",")
    ]
    report = {
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "peak_gflops_per_s": peak / 1e9,
        "devices": jax.device_count(),
        "settings": {"batch": args.batch, "steps": args.steps, "size": args.size, "seed": 0},
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
