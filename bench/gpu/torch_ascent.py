"""Part ``torch``: the same ascent in PyTorch on the same weights, filters and chunk."""

from __future__ import annotations

import time

from gpu.harness import (
    PRECISIONS,
    Config,
    Part,
    finite,
    host_params,
    load_part,
)


def part_torch(part: Part, config: Config, weights: str) -> None:
    import numpy as np

    try:
        import torch
    except ImportError:
        part.record(note="PyTorch is not installed: no PyTorch figures (pip install '.[bench]')")
        return
    import filterviz
    from parity import displacement_correlation
    from torch_reference import notebook_ascent

    cuda = torch.cuda.is_available()
    torch.backends.cudnn.benchmark = True  # PyTorch's fastest convolutions, found in the untimed run
    speed = {row["layer"]: row for row in load_part(part.work, "speed").get("rows", [])}
    # Weights only: JAX stays on the CPU in this process, leaving the GPU to PyTorch.
    params = host_params(weights)
    precisions = PRECISIONS if cuda else ("float32",)
    part.record(
        torch=torch.__version__,
        device=torch.cuda.get_device_name(0) if cuda else "cpu",
        note=None if cuda else "no CUDA: PyTorch ran on the CPU, in float32 only",
        rows=[],
    )
    for layer in config.sample_layers:
        if layer not in speed:
            part.data["skipped"].append(f"{layer}: the speed part has no figures for it")
            continue
        ours = speed[layer]
        saved = np.load(part.work / f"speed_{layer}.npz")
        start, filters = saved["start"], list(range(ours["filters_timed"]))
        row = {"layer": layer, "filters": len(filters), "chunk": ours["default_chunk"], "rates": {}}
        for precision in precisions:
            if part.left() < 5:
                part.data["skipped"].append(f"torch {layer} {precision}: out of time")
                break

            def timed(precision=precision):
                ascend = notebook_ascent(filterviz.network("vgg16"), params, layer, precision)
                first = ascend(filters, start, config.steps, ours["default_chunk"])  # untimed
                best = float("inf")
                for _ in range(config.repeats):
                    began = time.perf_counter()
                    ascend(filters, start, config.steps, ours["default_chunk"])
                    best = min(best, time.perf_counter() - began)
                return best, first

            outcome = part.guarded(f"torch {layer} {precision}", timed)
            if outcome is None:
                continue
            seconds, images = outcome
            row["rates"][precision] = len(filters) * config.steps / seconds
            theirs = images[saved["live"]]
            row.setdefault("agreement_with_ours", {})[precision] = finite(
                displacement_correlation(theirs, saved[precision], start)
            )
            ours_rate = ours["filter_steps_per_second"][precision]
            row.setdefault("speedup", {})[precision] = ours_rate / row["rates"][precision]
        part.data["rows"].append(row)
        part.save()
        print(f"torch {layer}: {row}", flush=True)
