"""Part ``lucid``: the Lucid-method atlas, estimated from one timed chunk of one layer per block."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from gpu.harness import (
    Config,
    Part,
)


def block_of(layer: str) -> str:
    return layer.split("_")[0]


def part_lucid(part: Part, config: Config, weights: str) -> None:
    """One chunk of each sampled layer is compiled (all at once) and timed; every other layer of the
    atlas takes the time per FLOP of its block's sampled layer (``ascent_step_flops`` of the whole
    layer, as the Lucid objective computes every channel)."""
    import filterviz
    from filterviz.core.engine import render_batch
    from flops import ascent_step_flops
    from quality import layer_chunk, layer_seconds_per_filter

    vgg16 = filterviz.network("vgg16")
    params = filterviz.load_weights(weights)
    atlas_layers = config.atlas_layers or vgg16.visual_layers
    sampled = [layer for layer in config.lucid_layers if layer in atlas_layers]
    estimates: dict[str, Any] = {}
    for precision in config.lucid_precisions:
        method = filterviz.get_method("lucid", precision=precision, steps=config.lucid_steps)

        def compile_layer(layer: str, method=method) -> float:
            began = time.perf_counter()
            arguments, settings = layer_chunk(params, method, layer, config.size)
            render_batch.lower(*arguments, **settings).compile()
            return time.perf_counter() - began

        began = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(len(sampled)) as pool:
            compiled = dict(zip(sampled, pool.map(compile_layer, sampled), strict=True))
        estimate: dict[str, Any] = {
            "compile_wall_seconds": time.perf_counter() - began,
            "compile_seconds": compiled,
            "timed": {},
            "layers": {},
        }
        estimates[precision] = estimate
        part.record(estimates=estimates, steps_timed=config.lucid_steps, preset_steps=512)
        for layer in sampled:
            timed = part.guarded(
                f"lucid {precision} {layer}",
                layer_seconds_per_filter,
                params,
                "lucid",
                layer,
                config.size,
                config.lucid_steps,
                precision,
                needs=3,
            )
            if timed is None:
                break
            chunk, per_filter = timed
            estimate["timed"][layer] = {"chunk": chunk, "seconds_per_filter": per_filter}
            part.record(estimates=estimates)
        by_block = {block_of(layer): layer for layer in estimate["timed"]}
        for layer in atlas_layers:
            source = by_block.get(block_of(layer))
            if source is None:
                continue
            scale = ascent_step_flops(
                vgg16, layer, config.size, config.size, full_target=True
            ) / ascent_step_flops(vgg16, source, config.size, config.size, full_target=True)
            estimate["layers"][layer] = {
                "seconds_per_filter": estimate["timed"][source]["seconds_per_filter"] * scale,
                "from": "timed" if layer == source else f"{source}, scaled by FLOPs ({scale:.2f}x)",
            }
        if len(estimate["layers"]) == len(atlas_layers):
            estimate["seconds"] = sum(
                v["seconds_per_filter"] * vgg16.layer(layer).channels
                for layer, v in estimate["layers"].items()
            )
            print(f"lucid atlas {precision}: {estimate['seconds']:.0f} s (estimated)", flush=True)
        part.record(estimates=estimates)
