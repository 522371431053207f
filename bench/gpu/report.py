"""The GPU check's report: the figures the targets are read against, as JSON and a Markdown table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from gpu.harness import (
    MAIN_PRECISION,
    REPORT_NAME,
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


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    return "-" if value is None else str(value)


def _rows_table(rows: list[dict[str, Any]]) -> list[str]:
    # Any part's rows (dicts, nested one level) as one Markdown table: a column per key seen.
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_cell(row.get(key)) for key in columns) + " |" for row in rows]


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the device, the targets, then every part's rows and figures as recorded
    (the JSON holds the same figures; the tables only lay them out)."""
    details, env = report["details"], report["details"].get("env", {})
    lines = [f"## filterviz on {report['device']}" + (" (smoke run)" if report["smoke"] else ""), ""]
    lines += [f"- {note}" for note in report["notes"]]
    lines.append("- " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v))
    lines.append(
        "- measured matmul peak: " + _cell({p: v / 1e12 for p, v in report["peaks"].items()}) + " TFLOP/s"
    )
    lines += ["", *_rows_table(report["targets"])]
    for name, part in details.items():
        rows = [row for key in ("rows", "latency", "ascent") for row in part.get(key) or []]
        flat = {k: v for k, v in part.items() if not isinstance(v, list) and k not in ("runs",)}
        lines += ["", f"### {name}", "", *(_rows_table(rows) if rows else [])]
        for precision, run in part.get("runs", {}).items():  # the sweep part: each precision's runs
            lines += ["", f"{precision}:", "", *_rows_table(run.get("runs", []))]
        lines += [f"- {key}: {_cell(value)}" for key, value in flat.items()]
    lines += [
        "",
        "Parts: "
        + ", ".join(f"{k} {v['status']} ({v['seconds']:.0f} s)" for k, v in report["parts"].items()),
    ]
    failures = [f"- {f['part']}: {f.get('item', '')} {f['error']}"[:500] for f in report["failures"]]
    return "\n".join(lines + (["", "Failures:", "", *failures] if failures else [])) + "\n"


def write_report(out: Path, work: Path, status: dict[str, Any], smoke: bool) -> dict[str, Any]:
    parts = {name: load_part(work, name) for name in status}
    report = summarize(parts, status, smoke)
    (out / f"{REPORT_NAME}.json").write_text(json.dumps(report, indent=2, default=plain))
    (out / f"{REPORT_NAME}.md").write_text(markdown(report))
    for precision, run in parts.get("sweep", {}).get("runs", {}).items():
        if run.get("sheet") and Path(run["sheet"]).is_file():
            shutil.copyfile(run["sheet"], out / f"sheet_{precision}.png")
    return report
