"""Runs one sweep, one dataset-examples pass or one activation atlas in a process of its own, for tests
that need fresh JAX runtimes (device counts, jax.distributed, a kill). Usage:
``python sweep_worker.py '<json>'`` with keys ``folder`` and ``sweep`` (keyword arguments of
filterviz.sweep), ``examples`` (of filterviz.examples, ``folder`` being the images) or
``activation_atlas`` (likewise), and optionally ``distributed`` (arguments of
jax.distributed.initialize). The parameters are VGG16's random initialisation (key 0), the same in every
process. Prints one JSON line (for examples: a digest of the records, the skipped images, and how many
images this process decoded; for an atlas: its vectors, layout and values, and this process's share)."""

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
    from filterviz.sweeps import streaming

    decoded = []  # the images this process decoded in its pass
    decode = streaming._decoded
    streaming._decoded = lambda root, path, **fit: decoded.append(path) or decode(root, path, **fit)
    if "activation_atlas" in request:
        from filterviz.sweeps import activation_atlas as atlas_module

        drawn = []  # the chunks of cells this process drew
        render = atlas_module.render
        atlas_module.render = lambda *args, **kwargs: drawn.append(1) or render(*args, **kwargs)
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
    result = filterviz.sweep(params, request["folder"], progress=False, **request["sweep"])
    print(json.dumps({"written": result.written, "skipped": result.skipped, "devices": jax.device_count()}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
