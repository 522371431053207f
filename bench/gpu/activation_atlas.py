"""Part ``activation_atlas``: a whole activation atlas end to end (collect, UMAP, grid, drawing, the page)
over a large folder of JPEGs, against the target of a 20x20 atlas of block4_conv3 over 10,000 photos in
under 2 minutes.

Where umap-learn is not installed (it needs numba, which cannot travel with a run), the cells come from
a stand-in layout, the vectors' first two principal components, and the end-to-end figure is marked
estimated: this run's time less the stand-in's, plus UMAP's time for about as many vectors measured on a
CPU (``bench/results/atlas_cpu.json``; UMAP runs on the host's CPU either way)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gpu.examples import make_photo_folder
from gpu.harness import Config, Part

CPU_LAYOUTS = Path(__file__).resolve().parents[1] / "results" / "atlas_cpu.json"


def _principal_layout(vectors):
    # The stand-in layout: the vectors' first two principal components.
    import numpy as np

    centred = np.asarray(vectors, np.float64) - np.mean(vectors, axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return (centred @ axes[:2].T).astype(np.float32)


def _stand_in_layout(part: Part, forced: bool) -> dict | None:
    """Where UMAP is missing (or ``forced``), put the stand-in layout in its place; returns ``{"timing":
    the stand-in's seconds and vector count, once it ran, "cpu": UMAP's CPU seconds by vector count}``,
    or None where UMAP is used."""
    try:
        import umap  # noqa: F401
    except ImportError:
        pass
    else:
        if not forced:
            return None
    from filterviz.activation_atlases import atlas as atlas_module

    timing: dict = {}

    def layout(vectors, *, seed):
        began = time.perf_counter()
        result = _principal_layout(vectors)
        timing.update(stand_in_seconds=time.perf_counter() - began, vectors=len(vectors))
        return result

    atlas_module.umap_layout, atlas_module.require_umap = layout, lambda: None
    part.record(layout="stand-in (principal components): umap-learn is not installed here, or a smoke run")
    measured = json.loads(CPU_LAYOUTS.read_text()) if CPU_LAYOUTS.is_file() else {}
    return {
        "timing": timing,
        "cpu": measured.get("layout_s_by_vectors", {}),
        "cpu_device": measured.get("machine"),
    }


def part_activation_atlas(part: Part, config: Config, weights: str) -> None:
    """The atlas timed twice: a first run (compiling) into one folder, then a second into another, with
    the compiled programs kept; each stage's share comes from the progress of the run itself."""
    import jax

    import filterviz

    count, layer = config.activation_atlas_images, config.activation_atlas_layer
    grid = config.activation_atlas_grid
    photos = part.work / "atlas-photos"
    part.record(images=count, layer=layer, grid=grid, size=config.activation_atlas_size)
    part.record(photo_seconds=make_photo_folder(photos, count, 375, 500))
    params = filterviz.load_weights(weights)
    stand_in = _stand_in_layout(part, config.stand_in_layout)
    settings = dict(
        layer=layer,
        grid=grid,
        zoom=(grid,),
        image_size=config.activation_atlas_size,
        batch_size=config.activation_atlas_batch,
        steps=config.activation_atlas_steps,
        progress=False,
    )
    for run in ("first", "second"):
        began = time.perf_counter()
        atlas = filterviz.activation_atlas(params, photos, out=part.work / f"atlas-{run}", **settings)
        seconds = time.perf_counter() - began
        part.record(
            **{
                f"{run}_seconds": seconds,
                "vectors": len(atlas.vectors),
                "cells": len(atlas.levels[grid].counts),
            }
        )
        print(f"activation atlas ({run}): {count} photos, {seconds:.1f} s", flush=True)
        if stand_in and stand_in["cpu"] and "stand_in_seconds" in stand_in["timing"]:
            timing, cpu = stand_in["timing"], stand_in["cpu"]
            nearest = min(cpu, key=lambda vectors: abs(int(vectors) - timing["vectors"]))
            part.record(
                **{f"{run}_seconds_estimated": seconds - timing["stand_in_seconds"] + cpu[nearest]},
                umap_cpu_seconds={nearest: cpu[nearest]},
            )
    part.record(device=jax.devices()[0].device_kind)
