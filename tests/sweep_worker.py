"""Runs one sweep, one dataset-examples pass or one activation atlas in a process of its own, for tests
that need fresh JAX runtimes (device counts, jax.distributed, a kill). Usage:
``python sweep_worker.py '<json>'`` with keys ``folder`` and ``sweep`` (keyword arguments of
filterviz.sweep), ``examples`` (of filterviz.examples, ``folder`` being the images),
``activation_atlas`` (likewise) or ``render`` (of :func:`render_both_ways`), and optionally
``distributed`` (arguments of jax.distributed.initialize). The parameters are VGG16's random
initialisation (key 0), the same in every process. Prints one JSON line (for examples: a digest of the
records, the skipped images, and how many images this process decoded; for an atlas: its vectors,
layout and values, and this process's share; for a render: the differences between its devices and
one)."""

from __future__ import annotations

import hashlib
import json
import sys


def main(request: dict) -> None:
    import jax

    if "distributed" in request:
        jax.distributed.initialize(**request["distributed"])
    import filterviz

    params = filterviz.network("vgg16").init(jax.random.key(0))
    from filterviz.jobs import streaming

    decoded = []  # the images this process decoded in its pass
    decode = streaming._decoded
    streaming._decoded = lambda root, path, **fit: decoded.append(path) or decode(root, path, **fit)
    if "activation_atlas" in request:
        from filterviz.jobs import drawing  # where the atlas renders its icons

        drawn = []  # the chunks of cells this process drew
        render = drawing.render
        drawing.render = lambda *args, **kwargs: drawn.append(1) or render(*args, **kwargs)
        if request.get("principal_layout"):
            # UMAP's numba compile costs about 10 s in every fresh process; the layout's own checks run
            # in one process, so where the shared pass is the point, the first two principal
            # components lay the vectors out instead.
            from filterviz.activation_atlases import atlas as atlas_module

            atlas_module.umap_layout = principal_layout
        settings = request["activation_atlas"]
        atlas = filterviz.activation_atlas(params, request["folder"], progress=False, **settings)
        report = {
            "vectors": atlas.vectors.tolist(),
            "images": atlas.images.tolist(),
            "layout": atlas.layout.tolist(),
            "activations": {g: values.tolist() for g, values in atlas.activations.items()},
            "page": str(atlas.page),
            "decoded": len(decoded),
            "chunks": len(drawn),
        }
        print(json.dumps({**report, "devices": jax.device_count()}))
        return
    if "examples" in request:
        found = filterviz.examples(params, request["folder"], progress=False, **request["examples"])
        digest = hashlib.sha256(json.dumps(found.records).encode()).hexdigest()
        report = {"records": digest, "skipped": found.skipped, "decoded": len(decoded)}
        print(json.dumps({**report, "devices": jax.device_count()}))
        return
    if "concepts" in request:
        found = filterviz.concepts(params, request["folder"], progress=False, **request["concepts"])
        report = {"directions": found.directions.tolist(), "order": found.order.tolist()}
        print(json.dumps({**report, "devices": jax.device_count()}))
        return
    if "render" in request:
        print(json.dumps({**render_both_ways(params, **request["render"]), "devices": jax.device_count()}))
        return
    result = filterviz.sweep(params, request["folder"], progress=False, **request["sweep"])
    print(json.dumps({"written": result.written, "skipped": result.skipped, "devices": jax.device_count()}))


def principal_layout(vectors, *, seed: int):
    """``float32[N, D] -> float32[N, 2]``: the vectors' first two principal components (the same in
    every process)."""
    import numpy as np

    centred = np.asarray(vectors, np.float64) - np.mean(vectors, axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return (centred @ axes[:2].T).astype(np.float32)


def render_both_ways(params, layer: str, filters: list[int], size: int, steps: int) -> dict:
    """filterviz.render over this process's devices and on one device, for every kind of start: the
    largest differences of pixels, transparency and activations, and the devices each way used."""
    import numpy as np

    import filterviz
    from filterviz.draw import rendering
    from filterviz.io.spectrum import maco

    photo = np.random.default_rng(0).uniform(0, 255, (len(filters), size, size, 3)).astype(np.float32)
    cases = {
        "shared start": ("notebook", {"start": photo[0]}),
        "a start each": ("notebook", {"start": photo}),
        "maco": (maco(None, view=size), {}),
    }
    spread = rendering.local_mesh
    report = {}
    for name, (preset, start) in cases.items():
        method, drawn = filterviz.get_method(preset, steps=steps), []
        # Over the devices, on one, and (a shared start: its per-device copies) over the devices watched,
        # its ascent in segments.
        ways = [(spread, False), (lambda count: None, False)] + [(spread, True)] * (name == "shared start")
        for mesh, watched in ways:
            rendering.local_mesh = mesh
            rendering_ = filterviz.render(
                params, filterviz.channel(layer, filters), method=method, size=size, progress=watched, **start
            )
            drawn.append((rendering_, len(rendering_.pixels.sharding.device_set)))
        rendering.local_mesh = spread
        (many, used), (one, alone), *watched_way = drawn
        segmented, watched_on = watched_way[0] if watched_way else (None, None)

        def largest(a, b):
            return None if b is None else float(np.abs(np.asarray(a) - np.asarray(b)).max())

        report[name] = {
            "devices": [used, alone] + ([watched_on] if watched_on else []),
            "pixels": largest(many.pixels, one.pixels),
            "activations": largest(many.activations, one.activations),
            "alpha": largest(many.alpha, one.alpha),
            "watched pixels": None if segmented is None else largest(segmented.pixels, one.pixels),
            "watched activations": None
            if segmented is None
            else largest(segmented.activations, one.activations),
        }
    return report


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
