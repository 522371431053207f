"""The GPU check's report: the figures the targets are read against, as JSON and a Markdown table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from gpu.harness import (
    FULL,
    MAIN_PRECISION,
    PRECISIONS,
    REPORT_NAME,
    SMOKE,
    load_part,
    plain,
)

TARGETS = {
    "notebook_atlas_tf32_seconds": 10.0,
    "notebook_atlas_bfloat16_seconds": 5.0,
    "speedup_vs_loop": 100.0,
    "speedup_vs_torch": 1.0,
    "speedup_vs_lucent": 5.0,
    "deep_layer_mfu": 0.40,
    "lucid_atlas_seconds": 300.0,
    "examples_seconds": 60.0,
    "activation_atlas_seconds": 120.0,
}


def summarize(parts: dict[str, dict[str, Any]], status: dict[str, Any], smoke: bool) -> dict[str, Any]:
    env, speed, sweep_part = parts.get("env", {}), parts.get("speed", {}), parts.get("sweep", {})
    torch_part, lucid = parts.get("torch", {}), parts.get("lucid", {})
    accelerator = bool(env.get("accelerator"))
    report: dict[str, Any] = {
        "device": env.get("device", "unknown"),
        "accelerator": accelerator,
        "smoke": smoke,
        "notes": [],
        "parts": status,
    }
    if not accelerator:
        report["notes"].append(
            "no GPU: every part ran on the CPU; the GPU-against-CPU checks compare the CPU with itself, "
            "TF32 equals float32 and PyTorch ran on the CPU"
        )
    sweeps = sweep_part.get("runs", {})
    report["notebook_atlas_seconds"] = {
        p: run.get("device", {}).get("seconds") for p, run in sweeps.items() if run.get("device")
    }
    report["notebook_atlas_sweep_wall_seconds"] = {
        p: [r["wall_seconds"] for r in run.get("runs", [])] for p, run in sweeps.items()
    }
    report["notebook_atlas_sweep_busy_seconds"] = {
        p: [r["busy_seconds"] for r in run.get("runs", [])] for p, run in sweeps.items()
    }
    estimates = lucid.get("estimates", {})
    report["lucid_atlas_seconds"] = {p: e.get("seconds") for p, e in estimates.items()}
    report["lucid_atlas_estimated"] = True
    rows = speed.get("rows", [])
    report["speedup_vs_loop"] = {row["layer"]: row["speedup_vs_loop"] for row in rows}
    report["speedup_vs_torch"] = {
        row["layer"]: row["speedup"][MAIN_PRECISION if accelerator else "float32"]
        for row in torch_part.get("rows", [])
        if (MAIN_PRECISION if accelerator else "float32") in row.get("speedup", {})
    }
    mfu: dict[str, dict[str, float]] = {}
    for row in rows:
        for precision, value in row["mfu"].items():
            mfu.setdefault(precision, {})[row["layer"]] = value
    for precision, run in sweeps.items():  # every layer of the atlas, from the sweep part
        for layer, figures in run.get("device", {}).get("layers", {}).items():
            if figures.get("mfu") is not None:
                mfu.setdefault(precision, {})[layer] = figures["mfu"]
    report["mfu"] = mfu
    report["peaks"] = env.get("peaks", {})
    examples = parts.get("examples", {})
    report["examples"] = {
        key: examples.get(key)
        for key in (
            "images",
            "size",
            "layers",
            "seconds",
            "images_per_second",
            "decode_images_per_second",
            "mfu",
        )
    }
    lucent_rows = parts.get("lucent", {}).get("rows", [])
    report["speedup_vs_lucent"] = {row["layer"]: row["speedup"] for row in lucent_rows}
    report["activation_vs_lucent"] = {row["layer"]: row["activation_ratio"] for row in lucent_rows}
    atlas = parts.get("activation_atlas", {})
    report["activation_atlas"] = {
        key: atlas.get(key)
        for key in (
            *("images", "layer", "grid", "first_seconds", "second_seconds", "cells", "layout"),
            *("first_seconds_estimated", "second_seconds_estimated", "umap_cpu_seconds"),
        )
    }
    report["failures"] = [f for p in parts.values() for f in p.get("failures", [])]
    for name, state in status.items():
        if not state.get("ok", state["status"] == "ok"):
            report["failures"].append({"part": name, "error": state["status"]})
    correctness = parts.get("correctness", {})
    for key, checks in (
        ("activations", [correctness.get("activations")]),
        ("ascent", correctness.get("ascent")),
    ):
        for check in checks or []:
            if check and not check["passed"]:
                report["failures"].append({"part": "correctness", "error": f"{key} check failed: {check}"})
    for name, check in correctness.get("methods", {}).items():
        if not check["passed"]:
            report["failures"].append({"part": "correctness", "error": f"method {name} is not finite"})
    report["first_picture_seconds"] = {
        " ".join(filter(None, (row["method"], row["layer"], row["precision"], row["xla_flags"]))): row["wait"]
        for row in parts.get("latency", {}).get("latency", [])
    }
    report["targets"] = targets(report)
    if smoke:
        report["notes"].append("smoke run: toy sizes, so the targets are not judged")
        for target in report["targets"]:
            target["met"] = None
    report["details"] = parts
    return report


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    found = []

    def add(name: str, measured: float | None, goal: float, higher_is_better: bool) -> None:
        if measured is None:
            found.append({"target": name, "goal": goal, "measured": None, "met": None})
            return
        met = measured >= goal if higher_is_better else measured <= goal
        ratio = measured / goal if higher_is_better else goal / measured
        found.append({"target": name, "goal": goal, "measured": measured, "met": met, "ratio_to_goal": ratio})

    atlas = report["notebook_atlas_seconds"]
    add(
        "notebook atlas, TF32, device seconds",
        atlas.get("tf32"),
        TARGETS["notebook_atlas_tf32_seconds"],
        False,
    )
    add(
        "notebook atlas, bfloat16, device seconds",
        atlas.get("bfloat16"),
        TARGETS["notebook_atlas_bfloat16_seconds"],
        False,
    )
    loops = report["speedup_vs_loop"]
    add("speed-up over the one-filter loop (worst layer)", min(loops.values(), default=None), 100.0, True)
    torches = report["speedup_vs_torch"]
    add("speed-up over PyTorch (worst layer)", min(torches.values(), default=None), 1.0, True)
    add(
        "speed-up over Lucent on a PyTorch model, batch for batch (worst layer)",
        min(report["speedup_vs_lucent"].values(), default=None),
        TARGETS["speedup_vs_lucent"],
        True,
    )
    ratios = [ratio for ratio in report["activation_vs_lucent"].values() if ratio is not None]
    add("final activation against Lucent's (worst layer)", min(ratios, default=None), 1.0, True)
    deep = [
        value
        for precision in ("tf32", "bfloat16")
        for layer, value in report["mfu"].get(precision, {}).items()
        if layer.startswith(("block4", "block5"))
    ]
    add(
        "MFU on block4-5, TF32 and bfloat16 (worst)", min(deep, default=None), TARGETS["deep_layer_mfu"], True
    )
    lucid = [v for v in report["lucid_atlas_seconds"].values() if v is not None]
    add("Lucid atlas seconds (best precision, estimated)", min(lucid, default=None), 300.0, False)
    examples = report["examples"]
    full = examples.get("images") == 50_000 and examples.get("size") == 224 and examples.get("layers") == 13
    add(
        "dataset examples, 50,000 images at 224 through 13 layers, seconds",
        examples.get("seconds") if full else None,
        TARGETS["examples_seconds"],
        False,
    )
    atlas = report["activation_atlas"]
    full = (atlas.get("images"), atlas.get("layer"), atlas.get("grid")) == (10_000, "block4_conv3", 20)
    estimated = atlas.get("first_seconds_estimated") is not None  # UMAP missing: its CPU time added
    add(
        "activation atlas, 20x20 of block4_conv3 over 10,000 photos, end to end, seconds (first run)"
        + (", estimated: UMAP timed on a CPU" if estimated else ""),
        atlas.get("first_seconds_estimated" if estimated else "first_seconds") if full else None,
        TARGETS["activation_atlas_seconds"],
        False,
    )
    return found


def run_label(failure: dict[str, Any]) -> str:
    return f" (run {failure['run']})" if "run" in failure else ""


def markdown(report: dict[str, Any]) -> str:
    def number(value: Any, form: str = "{:.2f}") -> str:
        return "-" if value is None else form.format(value)

    details = report["details"]
    env = details.get("env", {})
    lines = [f"## filterviz on {report['device']}" + (" (smoke run)" if report["smoke"] else ""), ""]
    lines += [f"- {note}" for note in report["notes"]]
    versions_text = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v)
    lines.append(f"- {versions_text}; {env.get('host', {}).get('cpus')} host CPUs")
    if env.get("memory_bytes"):
        lines.append(f"- device memory available to JAX: {env['memory_bytes'] / 2**30:.1f} GiB")
    peaks = report["peaks"]
    lines.append(
        "- measured matmul peak: "
        + ", ".join(f"{p} {v / 1e12:.3g} TFLOP/s" for p, v in peaks.items())
        + f" ({FULL.peak_size if not report['smoke'] else SMOKE.peak_size}-square)"
    )
    lines += ["", "| target | goal | measured | met | measured vs goal |", "|---|---|---|---|---|"]
    for target in report["targets"]:
        lines.append(
            f"| {target['target']} | {target['goal']:g} | {number(target['measured'], '{:.3g}')} | "
            f"{'-' if target['met'] is None else ('yes' if target['met'] else 'no')} | "
            f"{number(target.get('ratio_to_goal'), '{:.2f}x')} |"
        )
    rows = details.get("speed", {}).get("rows", [])
    torch_rows = {row["layer"]: row for row in details.get("torch", {}).get("rows", [])}
    if rows:
        lines += [
            "",
            f"Speed per layer, {details['speed'].get('size')}x{details['speed'].get('size')}, "
            f"{details['speed'].get('steps')} steps, the sweep's compiled chunk (filter-steps/s):",
            "",
            "| layer | chunk | float32 | tf32 | bfloat16 | tf32, other chunks | loop (tf32) | sweep / loop | "
            "torch float32 | torch tf32 | torch bf16 | tf32 / torch tf32 | MFU f32 | MFU tf32 | MFU bf16 | "
            "tf32 vs f32 (corr.) | bf16 vs f32 (corr.) | compile (s) |",
            "|" + "---|" * 18,
        ]
        for row in rows:
            rates = row["filter_steps_per_second"]
            others = ", ".join(
                f"{name.split('@')[1]}: {value:.0f}" for name, value in rates.items() if "@" in name
            )
            theirs = torch_rows.get(row["layer"], {})
            their_rates = theirs.get("rates", {})
            lines.append(
                "| "
                + " | ".join(
                    [
                        row["layer"],
                        str(row["default_chunk"]),
                        *(number(rates.get(p), "{:.0f}") for p in PRECISIONS),
                        others or "-",
                        number(rates.get("loop"), "{:.1f}"),
                        number(row["speedup_vs_loop"], "{:.1f}x"),
                        *(number(their_rates.get(p), "{:.0f}") for p in PRECISIONS),
                        number(theirs.get("speedup", {}).get(MAIN_PRECISION), "{:.2f}x"),
                        *(number(row["mfu"].get(p), "{:.0%}") for p in PRECISIONS),
                        number(row["agreement_with_float32"].get("tf32"), "{:.4f}"),
                        number(row["agreement_with_float32"].get("bfloat16"), "{:.4f}"),
                        number(row["compile_wall_seconds"], "{:.1f}"),
                    ]
                )
                + " |"
            )
    sweeps = details.get("sweep", {}).get("runs", {})
    if sweeps:
        lines += [
            "",
            "The real job, `filterviz sweep` of the atlas, end to end (PNGs and the atlas page):",
            "",
            "| precision | run | cache | wall (s) | device busy (s) | pictures | atlas page | exit |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for precision, run in sweeps.items():
            for index, one in enumerate(run.get("runs", []), start=1):
                lines.append(
                    f"| {precision} | {index} | {one['cache']} | {one['wall_seconds']:.1f} | "
                    f"{number(one['busy_seconds'], '{:.1f}')} | {one['pictures']} | "
                    f"{'yes' if one['atlas_page'] else 'no'} | {one['returncode']} |"
                )
        device_layers = {p: run.get("device", {}).get("layers", {}) for p, run in sweeps.items()}
        layers = list(dict.fromkeys(layer for figures in device_layers.values() for layer in figures))
        if layers:
            precisions = list(device_layers)
            lines += [
                "",
                "The atlas's device time, layer by layer (every filter, programs from the cache):",
                "",
                "| layer | " + " | ".join(f"{p} s | {p} filter-steps/s | {p} MFU" for p in precisions) + " |",
                "|---|" + "---|---|---|" * len(precisions),
            ]
            for layer in layers:
                cells = []
                for p in precisions:
                    figures = device_layers[p].get(layer, {})
                    cells += [
                        number(figures.get("seconds"), "{:.2f}"),
                        number(figures.get("filter_steps_per_second"), "{:.0f}"),
                        number(figures.get("mfu"), "{:.0%}"),
                    ]
                lines.append(f"| {layer} | " + " | ".join(cells) + " |")
            totals = [number(report["notebook_atlas_seconds"].get(p), "{:.2f}") for p in precisions]
            lines.append("| all | " + " | ".join(f"{t} | | " for t in totals) + "|")
    lucid = report["lucid_atlas_seconds"]
    if lucid:
        lines += [
            "",
            "Lucid-method atlas (512 steps), estimated from one timed chunk of one layer per block ",
        ]
        lines[-1] += "(the block's other layers scaled by their FLOPs): "
        lines[-1] += ", ".join(f"{p} {number(v, '{:.0f}')} s" for p, v in lucid.items())
    examples = details.get("examples", {})
    if examples.get("seconds") is not None:
        lines += [
            "",
            f"Dataset examples: {examples['images']} {examples['photo']}s at {examples['size']}x"
            f"{examples['size']} through {examples['layers']} layers, top-9 of {examples['filters']} "
            "filters, "
            f"batches of {examples['batch']}: {examples['seconds']:.1f} s, "
            f"{examples['images_per_second']:.0f} images/s ({number(examples.get('mfu'), '{:.0%}')} of the "
            f"TF32 peak); decoding alone {number(examples.get('decode_images_per_second'), '{:.0f}')} "
            f"images/s on {examples['threads']} threads; one batch {examples['one_batch_seconds']:.2f} s",
        ]
    latency_rows = details.get("latency", {}).get("latency", [])
    if latency_rows:
        from latency import table

        lines += ["", "Time to the first picture, each case a fresh process with no cache (seconds):", ""]
        lines.append(table(latency_rows))
    correctness = details.get("correctness", {})
    if correctness:
        lines += ["", "Correctness against the CPU backend:", ""]
        activations = correctness.get("activations")
        if activations:
            errors = ", ".join(f"{k} {number(v, '{:.1e}')}" for k, v in activations["relative_error"].items())
            lines.append(f"- activations, relative error (bar {activations['bar']:g}): {errors}")
        for case in correctness.get("ascent", []) or []:
            lines.append(
                f"- 20-step ascent {case['layer']} filter {case['filter']}: correlation with the CPU "
                f"{number(case['correlation'], '{:.6f}')} (CPU vs nudged CPU "
                f"{number(case['cpu_nudged_correlation'], '{:.6f}')}), uint8 difference "
                f"{number(case['picture_difference'], '{:.3f}')} (bar "
                f"{number(case['cpu_nudged_picture_difference'], '{:.3f}')}): "
                + ("passed" if case["passed"] else "FAILED")
            )
        for name, check in correctness.get("methods", {}).items():
            lines.append(
                f"- method {name}, {check['steps']} steps: " + ("finite" if check["passed"] else "NOT FINITE")
            )
    lines += [
        "",
        "Parts: "
        + ", ".join(f"{k} {v['status']} ({v['seconds']:.0f} s)" for k, v in report["parts"].items()),
    ]
    if report["failures"]:
        lines += ["", "Failures:", ""] + [
            f"- {f['part']}{run_label(f)}: {f.get('item', '')} {f['error']}"[:500] for f in report["failures"]
        ]
    return "\n".join(lines) + "\n"


def write_report(out: Path, work: Path, status: dict[str, Any], smoke: bool) -> dict[str, Any]:
    parts = {name: load_part(work, name) for name in status}
    report = summarize(parts, status, smoke)
    (out / f"{REPORT_NAME}.json").write_text(json.dumps(report, indent=2, default=plain))
    (out / f"{REPORT_NAME}.md").write_text(markdown(report))
    for precision, run in parts.get("sweep", {}).get("runs", {}).items():
        if run.get("sheet") and Path(run["sheet"]).is_file():
            shutil.copyfile(run["sheet"], out / f"sheet_{precision}.png")
    return report


def merge_runs(paths: list[str], out: Path) -> dict[str, Any]:
    """One report from the JSON of several runs on the same device (say, a second run that measured
    what the first had no time for). Per part, a later run's figures for a layer or precision replace
    an earlier run's; every run's failures are kept, each marked with its run."""
    reports = [json.loads(Path(path).read_text()) for path in paths]
    devices = {report["device"] for report in reports}
    if len(devices) != 1:
        raise SystemExit(f"gpu_check: runs on different devices cannot be merged: {sorted(devices)}")
    keyed = {"speed": ("rows", "layer"), "torch": ("rows", "layer")}
    parts: dict[str, dict[str, Any]] = {}
    status: dict[str, Any] = {}
    for run, report in enumerate(reports, start=1):
        for name, data in report["details"].items():
            merged = parts.setdefault(name, {"failures": [], "skipped": []})
            for key, value in data.items():
                if key in ("failures", "skipped"):
                    merged[key] += [
                        {**f, "run": run} if isinstance(f, dict) else f"run {run}: {f}" for f in value
                    ]
                elif name in keyed and key == keyed[name][0]:
                    by_key = {row[keyed[name][1]]: row for row in merged.get(key, [])}
                    by_key.update({row[keyed[name][1]]: row for row in value})
                    merged[key] = list(by_key.values())
                elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}  # sweep runs, Lucid estimates: per precision
                else:
                    merged[key] = value
        for name, state in report["parts"].items():
            before = status.get(name, {"status": "", "seconds": 0.0})
            text = f"run {run}: {state['status']}"
            status[name] = {
                "status": f"{before['status']}; {text}" if before["status"] else text,
                "seconds": before["seconds"] + state["seconds"],
                "ok": before.get("ok", True) and state["status"] == "ok",
            }
    report = summarize(parts, status, smoke=False)
    report["notes"].append(f"merged from {len(paths)} runs: {', '.join(Path(p).name for p in paths)}")
    (out / f"{REPORT_NAME}.json").write_text(json.dumps(report, indent=2, default=plain))
    (out / f"{REPORT_NAME}.md").write_text(markdown(report))
    return report
