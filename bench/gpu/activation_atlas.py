"""Part ``activation_atlas``: a whole activation atlas end to end (collect, UMAP, grid, drawing, the page)
over a large folder of JPEGs, against the target of a 20x20 atlas of block4_conv3 over 10,000 photos in
under 2 minutes."""

from __future__ import annotations

import time

from gpu.examples import make_photo_folder
from gpu.harness import Config, Part


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
    part.record(device=jax.devices()[0].device_kind)
