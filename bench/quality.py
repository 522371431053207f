"""Measured quality of each method: pictures side by side, the activation each reached, time per filter.

For a fixed set of filters across layers, every method of filterviz.core.methods.METHODS draws each filter
from its own seeded start (filterviz.core.engine.filter_keys, as a sweep does). For each final picture:

  achieved    the objective on the final picture as the method feeds it (no transforms);
  seconds     per filter, warm, from a timing pass of its own (--timing-only, run alone on the machine):
              each method's compiled program for one filter of the layer, run for --timing-steps steps
              after a compiling call, scaled to the preset's steps (time is linear in the steps).

How strongly the pictures drive their filters under transformation is scored by the one scorer
(bench/scoring.py) in bench/fidelity.py, beside the peers' pictures.

Writes QUALITY.md (tables), docs/quality/methods.jpg (rows: filters, columns: methods),
docs/quality/notebook_vs_lucid.jpg (the README's grid) and the figures as JSON (quality.json, timing.json).

    PYTHONPATH=src python bench/quality.py                 # pictures (CPU: ~45 min)
    PYTHONPATH=src python bench/quality.py --timing-only   # time per filter (CPU: a few minutes)
    PYTHONPATH=src python bench/quality.py --report        # QUALITY.md from the two JSON files
    PYTHONPATH=src python bench/quality.py --quick --out /tmp/q   # toy sizes, a smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

import filterviz
from filterviz.core.ascent_checks import default_chunk
from filterviz.core.engine import Ascent, filter_keys, render_batch
from filterviz.core.objectives import channel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fidelity
from measures import preset

ROOT = Path(__file__).resolve().parents[1]
VGG16 = filterviz.network("vgg16")
# Two filters per block, fixed once: the deepest conv layer of each block.
FILTERS = {
    "block1_conv2": (5, 37),
    "block2_conv2": (12, 90),
    "block3_conv3": (33, 170),
    "block4_conv3": (61, 400),
    "block5_conv3": (13, 245),
}


def run(params, names, filters, size, steps_scale, method_steps, saved):
    """Yields a row per method and filter; ``saved`` holds rows of an earlier, interrupted run (reused)."""
    rows = []
    for name in names:
        method = preset(name)
        if steps_scale != 1.0:
            method = filterviz.get_method(method, steps=max(1, round(method.steps * steps_scale)))
        if name in method_steps:
            method = filterviz.get_method(method, steps=method_steps[name])
        for layer, indices in filters.items():
            for position, index in enumerate(indices):
                done = saved.get((name, layer, index))
                if done is not None and done["steps"] == method.steps:
                    yield done
                    continue
                keys = filter_keys(0, [index])
                objective = channel(layer, [index])
                began = time.perf_counter()
                ascent = Ascent(VGG16, method, (size, size))
                pixels, achieved, *_ = render_batch(ascent, params, objective, None, keys)
                pixels = np.asarray(pixels)[0, 0]
                seconds = time.perf_counter() - began
                rows.append(
                    {
                        "method": name,
                        "layer": layer,
                        "filter": index,
                        "achieved": float(np.asarray(achieved)[0]),
                        "seconds": seconds,
                        "warm": position > 0,
                        "steps": method.steps,
                        "picture": method.to_pictures(pixels).tolist(),
                    }
                )
                yield rows[-1]

                print(
                    f"{name:9s} {layer:13s} {index:4d}  achieved {rows[-1]['achieved']:10.2f}"
                    f"  {seconds:7.1f} s{'' if position else ' (with compile)'}",
                    flush=True,
                )
    return rows


def timing(params, names, filters, size, steps):
    """Seconds per filter of each method on each layer: a warm run of ``steps`` steps, scaled."""
    result = {}
    for name in names:
        full = preset(name)
        method = preset(name, steps=steps if isinstance(steps, int) else steps[name])
        for layer, indices in filters.items():
            keys = filter_keys(0, indices[:1])
            objective = channel(layer, list(indices[:1]))
            for _ in range(2):  # the first call compiles
                began = time.perf_counter()
                np.asarray(
                    render_batch(Ascent(VGG16, method, (size, size)), params, objective, None, keys)[0]
                )
            seconds = (time.perf_counter() - began) * full.steps / method.steps
            result.setdefault(name, {})[layer] = seconds
            print(f"{name:9s} {layer:13s} {seconds:8.2f} s per filter ({steps} steps timed)", flush=True)
    return result


def layer_chunk(params, method, layer, size):
    """``(arguments, settings)`` of one sweep-sized chunk of ``layer``'s filters under ``method``: as many
    filters as fit the device, as a sweep runs them. ``render_batch(*arguments, **settings)`` renders
    them; ``render_batch.lower(*arguments, **settings).compile()`` compiles it ahead (``settings`` is
    empty: the static settings are the first argument, an :class:`Ascent`)."""
    channels = VGG16.layer(layer).channels
    chunk = min(channels, default_chunk(VGG16, method, layer, size, size))
    indices = np.arange(chunk)
    keys = filter_keys(0, indices)
    return (Ascent(VGG16, method, (size, size)), params, channel(layer, indices), None, keys), {}


def layer_seconds_per_filter(params, name, layer, size, steps, precision):
    """``(chunk, seconds per filter)`` of method ``name`` on ``layer``: one chunk timed for ``steps`` steps
    after an untimed call (which compiles, unless the program is compiled already), scaled to the
    preset's steps."""
    full = preset(name, precision=precision)
    method = preset(name, precision=precision, steps=steps)
    arguments, settings = layer_chunk(params, method, layer, size)
    chunk = len(arguments[4])
    for _ in range(2):
        began = time.perf_counter()
        np.asarray(render_batch(*arguments, **settings)[0])
    return chunk, (time.perf_counter() - began) / chunk * full.steps / steps


def atlas_estimate(params, name, size, steps, precision, layers=None):
    """Seconds for a whole-VGG16 atlas (4,224 conv filters) with method ``name``, from each conv layer's
    batched throughput (:func:`layer_seconds_per_filter`), weighted by the layer's filter count."""
    total, per_layer = 0.0, {}
    for layer in layers or VGG16.visual_layers:
        chunk, per_filter = layer_seconds_per_filter(params, name, layer, size, steps, precision)
        per_layer[layer] = {"chunk": chunk, "seconds_per_filter": per_filter}
        total += per_filter * VGG16.layer(layer).channels
        print(f"{name} atlas: {layer:13s} chunk {chunk:3d}  {per_filter:8.3f} s/filter", flush=True)
    return {
        "method": name,
        "precision": precision,
        "steps_timed": steps,
        "seconds": total,
        "layers": per_layer,
    }


def timing_table(names, layers, seconds) -> str:
    table = [
        "| layer | " + " | ".join(f"{n} s/filter" for n in names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    if seconds:
        for layer in layers:
            table.append(f"| {layer} | " + " | ".join(f"{seconds[n][layer]:.2f}" for n in names) + " |")
        mean = {n: sum(seconds[n][layer] for layer in layers) / len(layers) for n in names}
        table.append("| mean | " + " | ".join(f"{mean[n]:.2f}" for n in names) + " |")
    return "\n".join(table)


def picture_grid(rows, names, filters, out: Path) -> None:
    from filterviz.sweeps.atlas import contact_sheet

    ordered = [
        np.asarray(
            next(r for r in rows if r["method"] == n and r["layer"] == layer and r["filter"] == f)["picture"],
            np.uint8,
        )
        for layer, indices in filters.items()
        for f in indices
        for n in names
    ]
    from PIL import Image

    sheet = contact_sheet(np.stack(ordered), columns=len(names), tile=128, gap=4)
    Image.fromarray(sheet).save(out, quality=90)  # JPEG: these pictures are mostly high frequencies


def write_report(out: Path, record: dict, seconds: dict | None) -> str:
    names, filters = record["names"], record["filters"]
    table = timing_table(names, list(filters), seconds)
    ran = {n: record.get("method_steps", {}).get(n) for n in names}
    settings = ", ".join(
        f"{n}: {ran[n]} of its {filterviz.get_method(n).steps} steps"
        if ran[n]
        else f"{n}: {filterviz.get_method(n).steps} steps"
        for n in names
    )
    timing_note = (
        f"Measured alone on the machine by `--timing-only` ({seconds['_machine']}): for each method and "
        f"layer, one filter's compiled program run for {seconds['_steps']} steps after a compiling call, "
        "scaled to the preset's steps. One filter at a time; sweeps run many filters per call and over "
        "every device (see BENCHMARKS.md)."
        if seconds
        else "Not measured yet: run `PYTHONPATH=src python bench/quality.py --timing-only`, then `--report`."
    )
    estimates = "\n".join(
        f"- {e['method']} method, {e['precision']}: a whole-VGG16 atlas (4,224 filters, {record['size']}x"
        f"{record['size']}, the preset's steps): estimated {e['seconds']:.0f} s ({e['seconds'] / 3600:.1f} h)"
        for e in (seconds or {}).get("_atlas", [])
    )
    text = f"""# Quality of the methods

Produced by `PYTHONPATH=src python bench/quality.py` on {record["machine"]} (a run keeps each finished
filter and reuses it when started again; the last run took {record["minutes"]:.0f} min);
{record["size"]}x{record["size"]} pictures, real ImageNet weights, steps x {record["steps_scale"]:g} of
each preset ({settings}).

Filters: two per block, fixed in `bench/quality.py`. Every method starts each filter from its own
seeded start (`filter_keys(0, [filter])` of `filterviz.core.engine`, as a sweep does).

## Pictures

Rows: {", ".join(f"{layer} {list(indices)}" for layer, indices in filters.items())}.
Columns: {", ".join(names)}.

![every method on the same filters](docs/quality/methods.jpg)

## How strongly the pictures drive their filters

Scored beside Lucent's and Horama's pictures, by the one scorer of the benchmarks (`bench/scoring.py`):
see the fidelity section below.

## Time per filter

{timing_note}

{table}

{estimates}

## Reading the figures

- Methods run with fewer steps than their preset say so in the settings line above.
- `maco` draws for its crops, as MaCo does: 25-30% of the side, each viewed at 224, so a 128-pixel
  picture is optimised at about 6 times its own scale; the preset is meant for `size=512` and more.
"""
    text += fidelity.quality_section(ROOT / "bench" / "results" / "fidelity_cpu.json")
    (out / "QUALITY.md").write_text(text)
    return text


def machine() -> str:
    device = jax.devices()[0]
    return f"{device.device_kind} ({platform.processor() or platform.machine()}), jax {jax.__version__}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(filterviz.core.methods.METHODS))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale every method's steps")
    parser.add_argument(
        "--method-steps",
        default="",
        help="steps of some methods instead of their presets': maco=64,lucid=256",
    )
    parser.add_argument("--timing-only", action="store_true", help="measure the time per filter only")
    parser.add_argument("--timing-steps", type=int, default=16, help="steps timed per method and layer")
    parser.add_argument("--report", action="store_true", help="write QUALITY.md from the JSON files")
    parser.add_argument(
        "--atlas",
        default="",
        help="with --timing-only, also estimate a full atlas: method:precision[,...] e.g. lucid:tf32",
    )
    parser.add_argument("--quick", action="store_true", help="toy run: 32x32, 1 layer, 1 filter, few steps")
    parser.add_argument("--out", type=Path, default=ROOT, help="folder for QUALITY.md and docs/quality")
    parser.add_argument("--weights", default=None)
    args = parser.parse_args(argv)
    names = args.methods.split(",")
    if names[0] != "notebook":
        parser.error("the first method must be notebook (the reference of the ratios)")
    filters = FILTERS
    if args.quick:
        filters = {k: v[:1] for k, v in list(FILTERS.items())[1:2]}
        args.size, args.steps_scale, args.timing_steps = 32, 1 / 64, 2
    folder = args.out / "docs" / "quality"
    folder.mkdir(parents=True, exist_ok=True)
    timing_file = folder / "timing.json"
    if not args.report:
        params = filterviz.load_weights(args.weights)
    if args.timing_only or args.quick:
        timed_steps = args.timing_steps
        if args.quick:  # the run's own steps: the timing's programs are then reused by the run
            timed_steps = {n: max(1, round(filterviz.get_method(n).steps * args.steps_scale)) for n in names}
        seconds = timing(params, names, filters, args.size, timed_steps)
        seconds.update(_machine=machine(), _steps=timed_steps)
        atlas = [item.split(":") for item in args.atlas.split(",") if item]
        seconds["_atlas"] = [
            atlas_estimate(params, name, args.size, args.timing_steps, precision) for name, precision in atlas
        ]
        timing_file.write_text(json.dumps(seconds, indent=1))
        if args.timing_only:
            return 0
    if not args.report:
        began = time.perf_counter()
        method_steps = {
            k: int(v) for k, v in (item.split("=") for item in args.method_steps.split(",") if item)
        }
        # Each finished row is kept in rows.jsonl, so an interrupted run starts again where it stopped.
        progress = folder / "rows.jsonl"
        saved = {}
        if progress.is_file():
            for line in progress.read_text().splitlines():
                row = json.loads(line)
                saved[(row["method"], row["layer"], row["filter"])] = row
        rows = []
        with progress.open("a") as log:
            for row in run(params, names, filters, args.size, args.steps_scale, method_steps, saved):
                rows.append(row)
                if saved.get((row["method"], row["layer"], row["filter"])) is not row:
                    log.write(json.dumps(row) + "\n")
                    log.flush()
        record = {
            "names": names,
            "filters": filters,
            "size": args.size,
            "steps_scale": args.steps_scale,
            "method_steps": method_steps,
            "machine": machine(),
            "minutes": (time.perf_counter() - began) / 60,
            "rows": [{k: v for k, v in r.items() if k != "picture"} for r in rows],
        }
        (folder / "quality.json").write_text(json.dumps(record, indent=1))
    record = json.loads((folder / "quality.json").read_text())
    progress = folder / "rows.jsonl"  # the pictures: kept beside the JSON, not in it
    if progress.is_file():
        pictures = {}
        for line in progress.read_text().splitlines():
            row = json.loads(line)
            pictures[(row["method"], row["layer"], row["filter"])] = row["picture"]
        rows = [
            {**row, "picture": pictures[(row["method"], row["layer"], row["filter"])]}
            for row in record["rows"]
        ]
        names, filters = record["names"], record["filters"]
        picture_grid(rows, names, filters, folder / "methods.jpg")
        deep = {k: v for k, v in filters.items() if k >= "block4"} or filters
        pair = ["notebook", "lucid"] if "lucid" in names else names[:1]
        picture_grid(rows, pair, deep, folder / "notebook_vs_lucid.jpg")
    seconds = json.loads(timing_file.read_text()) if timing_file.is_file() else None
    print(write_report(args.out, record, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
