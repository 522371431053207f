"""The same filters drawn by three tools on the same weights: Lucent, filterviz's lucid, Horama's MaCo and
filterviz's maco, scored identically at two viewing scales.

The weights are the real ImageNet VGG16, in filterviz's built-in VGG16 and behind torchvision's VGG16
(``torch_reference.torchvision_vgg16``, equal to 2e-7) for the two PyTorch tools. Every tool runs the
same number of steps and its own defaults otherwise:

- Lucent (``render_vis``): a 128-pixel Fourier image, its standard transforms, upsampled to 224 before
  the model (its default for pictures under 224), one filter at a time;
- filterviz ``lucid``, as the preset is (the picture's own scale) and with ``view=224``, all the filters
  of a layer in one program;
- Horama ``maco``: its defaults (1280-pixel image, 6 crops of 25-30% at 224 a step, noise), given the
  same spectrum file as filterviz (it reads ``spectrum_decorrelated.npy`` from its working folder, and
  downloads the published one when it is missing);
- filterviz ``maco``: the preset at ``size=512``, with a spectrum from ``--spectrum`` (or ``imagenet``).

Each final picture (RGB, 0-1) is scored by torch as the target channel's mean activation at a viewing
scale of 128 and of 224 (the picture resized to that side), as is and averaged over 32 random
shift/scale/rotate copies (seeded, the same for every tool). CPU time is per filter. A sheet PNG shows
the pictures side by side, MaCo's over a grey checkerboard through its transparency.

    PYTHONPATH=src:bench python bench/fidelity.py --steps 64 --json bench/results/fidelity_cpu.json \
        --sheet docs/fidelity_sheet.jpg
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from scoring import COPIES, score, torch_layer

sys.path.insert(0, str(Path(__file__).resolve().parent))

FILTERS = (
    ("block3_conv3", 3), ("block3_conv3", 50), ("block4_conv1", 10), ("block4_conv3", 61),
    ("block4_conv3", 100), ("block5_conv1", 5), ("block5_conv3", 20), ("block5_conv3", 200),
)  # fmt: skip
TOOLS = ("lucent", "filterviz-lucid", "filterviz-lucid-224", "horama-maco", "filterviz-maco")
BETWEEN = ("filterviz-lucid-176",)
"""Tools run only when asked for (``--tools``): the lucid preset viewed at 176 with the ``wide``
transforms (its random scale widened to 0.73-1.27), so each step sees the picture at 1.0-1.75 times its
own scale (128 to 224)."""
VIEWS = (128, 224)


def run_lucent(module, layer: str, channel: int, steps: int) -> np.ndarray:
    import torch
    from lucent.optvis import objectives, param, render

    torch.manual_seed(0)
    objective = objectives.channel(f"features_{torch_layer(layer)}", channel)
    images = render.render_vis(
        module, objective, param_f=lambda: param.image(128), thresholds=(steps,), show_image=False,
        progress=False,
    )  # fmt: skip
    return np.asarray(images[-1][0])


def run_horama(module, layer: str, channel: int, steps: int) -> np.ndarray:
    import torch
    from horama import maco

    from filterviz.core.network import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB

    torch.manual_seed(0)
    index = torch_layer(layer)

    def objective(images):  # Horama feeds images in the normalised input space, as the module takes
        rgb = (images * module.std + module.mean) * 255.0
        return module.features[: index + 1](rgb.flip(1) - module.caffe_mean)[:, channel].mean()

    image, alpha = maco(objective, total_steps=steps, device="cpu")  # in the folder holding the spectrum
    rgb = image.detach().permute(1, 2, 0).numpy() * np.array(IMAGENET_STD_RGB) + np.array(IMAGENET_MEAN_RGB)
    alpha = alpha.detach().mean(0).numpy()
    alpha = np.clip(alpha, None, np.percentile(alpha, 80))
    alpha = alpha / max(float(alpha.max()), 1e-30)
    return np.concatenate([np.clip(rgb, 0, 1), alpha[..., None]], -1).astype(np.float32)


def run_filterviz(
    params, layer: str, channels: list[int], steps: int, tool: str, spectrum, maco_size: int = 512
) -> np.ndarray:
    import filterviz
    from filterviz.core.transforms import STANDARD, WIDE
    from filterviz.io.spectrum import maco

    objective = filterviz.channel(layer, channels)
    if tool == "filterviz-maco":
        drawn = filterviz.render(
            params, objective, method=maco(spectrum, steps=steps), size=maco_size, progress=False
        )
    else:
        view = {"filterviz-lucid-224": 224, "filterviz-lucid-176": 176}.get(tool)
        transforms = WIDE if tool == "filterviz-lucid-176" else STANDARD
        drawn = filterviz.render(
            params, objective, method="lucid", size=128, steps=steps, view=view, transforms=transforms,
            progress=False,
        )  # fmt: skip
    return drawn.pictures[:, 0].astype(np.float32) / 255.0


NAMES = {
    "lucent": "Lucent",
    "filterviz-lucid": "filterviz lucid",
    "filterviz-lucid-224": "filterviz lucid, view 224",
    "filterviz-lucid-176": "filterviz lucid, view 176 + wide",
    "horama-maco": "Horama MaCo",
    "filterviz-maco": "filterviz maco",
}
"""Each tool's column heading."""


def _figure(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def tables(report: dict) -> str:
    """A report's scores as Markdown: a table per viewing scale, as is and under transforms, a column per
    tool, and each tool's CPU seconds per filter."""
    tools = list(report["cpu_seconds_per_filter"])
    columns = " | ".join(NAMES[tool] for tool in tools) + " |\n" + "|---" * (len(tools) + 1) + "|"
    parts = []
    for view in VIEWS:
        for suffix, how in (("", "as is"), ("~", f"mean of {COPIES} random transforms")):
            lines = [
                f"| {row['layer']}:{row['filter']} | "
                + " | ".join(_figure(row[f"{tool}@{view}{suffix}"]) for tool in tools)
                + " |"
                for row in report["rows"]
            ]
            parts.append(f"viewed at {view}, {how}:\n\n| filter | {columns}\n" + "\n".join(lines))
    seconds = " | ".join(f"{report['cpu_seconds_per_filter'][tool]:.1f}" for tool in tools)
    parts.append(f"| CPU time | {columns}\n| seconds per filter | {seconds} |")
    return "\n\n".join(parts)


def ahead(report: dict, tool: str, peer: str) -> str:
    """On how many filters ``tool`` scores at least ``peer`` at each viewing scale, under transforms,
    e.g. ``"8 of 8 at 128, 7 of 8 at 224"``."""
    rows = report["rows"]
    counts = [sum(row[f"{tool}@{view}~"] >= row[f"{peer}@{view}~"] for row in rows) for view in VIEWS]
    return ", ".join(f"{count} of {len(rows)} at {view}" for count, view in zip(counts, VIEWS, strict=True))


def quality_section(path: Path) -> str:
    """QUALITY.md's section on the peers, from a report of this bench (empty without one)."""
    if not path.is_file():
        return ""
    report = json.loads(path.read_text())
    tools = list(report["cpu_seconds_per_filter"])
    rows = "; ".join(f"{layer} {channel}" for layer, channel in FILTERS)
    summary = [
        f"{NAMES[tool]} scores at least {NAMES[peer]}'s on {ahead(report, tool, peer)}"
        for tool, peer in (("filterviz-lucid-176", "lucent"), ("filterviz-maco", "horama-maco"))
        if tool in tools and peer in tools
    ]
    return f"""
## Beside Lucent and Horama

![Eight filters of VGG16 by {len(tools)} tools and settings](docs/fidelity_sheet.jpg)

*Rows: {rows}. Columns: {"; ".join(NAMES[tool] for tool in tools)} (the MaCo columns over a grey
checkerboard through their transparency). {report["settings"]["steps"]} steps each, the real ImageNet
weights; made by `bench/fidelity.py`.*

Each picture scored by the target channel's mean activation at two viewing scales, as is and under
{report["settings"]["copies"]} random transforms (`bench/results/fidelity_cpu.json`; BENCHMARKS.md says
what each tool ran, what the scores mean, and which setting to use when). Under transforms,
{"; ".join(summary)}.

{tables(report)}
"""


def sheet(pictures: dict, path: Path, side: int = 160) -> None:
    """Rows of filters, columns of the tools run (in ``pictures``' order); a transparent picture over a
    grey checkerboard."""
    from PIL import Image

    tools = list(pictures)
    rows, columns = len(FILTERS), len(tools)
    canvas = Image.new("RGB", (columns * (side + 4), rows * (side + 4)), "white")
    squares = (np.indices((side, side)).sum(0) // 16 % 2)[..., None]
    checker = (0.6 + 0.2 * squares).astype(np.float32)
    for row, key in enumerate(FILTERS):
        for column, tool in enumerate(tools):
            drawn = Image.fromarray((np.nan_to_num(pictures[tool][key]) * 255).astype(np.uint8))
            picture = np.asarray(drawn.resize((side, side), Image.BILINEAR), np.float32) / 255.0
            if picture.shape[-1] == 4:
                picture = picture[..., :3] * picture[..., 3:] + checker * (1 - picture[..., 3:])
            tile = Image.fromarray((np.clip(picture, 0, 1) * 255).astype(np.uint8))
            canvas.paste(tile, (column * (side + 4), row * (side + 4)))
    canvas.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=os.environ.get("FILTERVIZ_WEIGHTS"))
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--spectrum", default="imagenet", help="filterviz maco's: imagenet, a .npy, or 1/f")
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help=f"comma-separated, of {', '.join(TOOLS + BETWEEN)}"
    )
    parser.add_argument("--maco-size", type=int, default=512, help="filterviz maco's picture size")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--sheet", type=Path)
    args = parser.parse_args(argv)
    args.json, args.sheet = (path.resolve() if path else None for path in (args.json, args.sheet))

    import torch

    import filterviz
    from filterviz.io.spectrum import spectrum_of
    from torch_reference import torchvision_vgg16

    params = filterviz.load_weights(args.weights)
    module = torchvision_vgg16(params)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    tools = args.tools.split(",")
    if set(tools) - set(TOOLS + BETWEEN):
        parser.error(f"unknown tools {', '.join(sorted(set(tools) - set(TOOLS + BETWEEN)))}")
    macos = any(tool.endswith("maco") for tool in tools)  # only they read a spectrum
    spectrum = spectrum_of(None if args.spectrum == "1/f" or not macos else args.spectrum)
    if "horama-maco" in args.tools and spectrum is not None:  # Horama reads its spectrum from its folder
        folder = Path(tempfile.mkdtemp(prefix="fidelity-horama-"))
        np.save(folder / "spectrum_decorrelated.npy", spectrum.magnitude)
        os.chdir(folder)
    pictures = {tool: {} for tool in tools}
    seconds = {tool: 0.0 for tool in tools}
    layers = sorted({layer for layer, _ in FILTERS}, key=[layer for layer, _ in FILTERS].index)
    for tool in tools:
        for layer in layers:
            channels = [channel for name, channel in FILTERS if name == layer]
            began = time.perf_counter()
            if tool.startswith("filterviz"):
                drawn = run_filterviz(params, layer, channels, args.steps, tool, spectrum, args.maco_size)
                pictures[tool].update({(layer, c): drawn[i] for i, c in enumerate(channels)})
            else:
                run = run_lucent if tool == "lucent" else run_horama
                pictures[tool].update({(layer, c): run(module, layer, c, args.steps) for c in channels})
            seconds[tool] += time.perf_counter() - began
            print(f"{tool:<20} {layer}: {time.perf_counter() - began:.1f} s", flush=True)
    rows = []
    for layer, channel in FILTERS:
        row = {"layer": layer, "filter": channel}
        for tool in tools:
            picture = pictures[tool][(layer, channel)]
            for view in VIEWS:
                row[f"{tool}@{view}"] = score(module, layer, channel, picture, view, False)
                row[f"{tool}@{view}~"] = score(module, layer, channel, picture, view, True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {
        "device": "cpu",
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            name: metadata.version(package)
            for name, package in (
                ("filterviz", "filterviz"),
                ("jax", "jax"),
                ("torch", "torch"),
                ("lucent", "torch-lucent"),
                ("horama", "horama"),
            )
        },
        "settings": {
            "steps": args.steps,
            "maco_size": args.maco_size,
            "spectrum": repr(spectrum),
            "copies": COPIES,
            "views": VIEWS,
        },
        "cpu_seconds_per_filter": {tool: seconds[tool] / len(FILTERS) for tool in tools},
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(tables(report))
    if args.sheet:
        sheet(pictures, args.sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
