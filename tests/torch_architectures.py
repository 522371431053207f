"""from_torch on more torchvision architectures than the tests hold: activations and the input gradient
against torch's own (float32, random weights, small sizes), and how long the import takes.

    PYTHONPATH=src python tests/torch_architectures.py --json bench/results/torch_architectures_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

CASES = {  # name: (constructor keywords, layers, input side)
    "mobilenet_v3_small": ({}, ["features.3", "features.6.block.2"], 64),  # hardswish, squeeze-excite
    "densenet121": ({}, ["features.denseblock2", "features.transition1.conv"], 64),  # concatenation
    "inception_v3": ({"aux_logits": False, "init_weights": False}, ["Mixed_6a", "Mixed_6b.branch7x7_2"], 160),
    "squeezenet1_0": ({}, ["features.4", "features.7"], 64),  # ceil-mode max pooling
    "shufflenet_v2_x0_5": ({}, ["stage2", "stage3.0"], 64),  # channel shuffle
    "regnet_y_400mf": ({}, ["trunk_output.block2"], 64),  # grouped convolutions
    "swin_t": ({}, ["features.1", "features.3"], 64),  # shifted windows, channels-last maps
    "alexnet": ({}, ["features.3", "features.8"], 96),
    "googlenet": ({"aux_logits": False, "init_weights": False}, ["inception3b", "inception4a.branch3"], 64),
    "maxvit_t": ({}, ["blocks.0"], 224),  # attention over blocks and grids
}


def check(name: str) -> dict:
    import torch
    import torchvision

    import filterviz
    from test_torch import relative, torch_outputs

    keywords, layers, size = CASES[name]
    torch.manual_seed(0)
    module = torchvision.models.get_model(name, weights=None, **keywords)
    began = time.perf_counter()
    network, params = filterviz.from_torch(module)
    imported = time.perf_counter() - began
    images = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    expected, gradient_expected = torch_outputs(module, network, layers, images, 1)
    found = network.apply(params, jnp.asarray(images), layers)

    def objective(pixels):
        return jnp.mean(network.apply(params, pixels, [layers[-1]])[layers[-1]][..., 1])

    gradient = jax.jit(jax.grad(objective))(jnp.asarray(images))
    scale = float(np.max(np.abs(gradient_expected)))
    return {
        "layers": layers,
        "size": size,
        "activation_relative_error": max(relative(found[name], expected[name]) for name in layers),
        # A channel dead on this input has a zero gradient in torch: then the error is ours, absolute.
        "gradient_relative_error": relative(gradient, gradient_expected)
        if scale > 0
        else float(np.max(np.abs(gradient))),
        "import_s": imported,
        "drawable_layers": len(network.layers),
        "swept_by_default": len(network.visual_layers),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for name in CASES:
        results[name] = check(name)
        row = results[name]
        print(
            f"{name:<20} activations {row['activation_relative_error']:.1e}  gradient "
            f"{row['gradient_relative_error']:.1e}  import {row['import_s']:.1f} s  "
            f"{row['drawable_layers']} layers, {row['swept_by_default']} swept",
            flush=True,
        )
    if args.json:
        args.json.write_text(
            json.dumps({"device": jax.devices()[0].device_kind, "models": results}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
