"""Dictionaries of concepts, side by side: filterviz's (JAX) against Overcomplete's (PyTorch) and
scikit-learn's, on the same vectors, the same number of concepts and the same minibatches.

The vectors are real: VGG16's block4_conv3 (real weights) at every position of scikit-image's and
scikit-learn's sample photos, fitted to 224x224 (28x28 positions each). A seeded fifth is held out. Each
contender is timed end to end in this process, from its first call to its fitted dictionary (compiling
included), and its held-out unexplained variance (1 - R^2), mean L0 and dead fraction are measured by
the same code. The autoencoders run the same number of minibatch steps of the same size with Adam; the
factorisations run the same number of minibatches (scikit-learn's MiniBatchNMF) or full passes
(Overcomplete's NMF, which holds the whole matrix).

    PYTHONPATH=src python bench/concepts_bench.py --json bench/results/concepts_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from measures import sample_photos

SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "cat",
    "hubble_deep_field",
    "immunohistochemistry",
)
SKIMAGE_PHOTOS += (
    "retina",
    "colorwheel",
    "logo",
    "camera",
    "moon",
    "coins",
    "grass",
    "gravel",
    "brick",
    "page",
)
"""scikit-image's sample photos that ship inside its wheel (grey ones repeated over three channels)."""


def layer_vectors(weights: str | None, layer: str, size: int = 224) -> np.ndarray:
    """``float32[N, C]``: the layer's vector at every position of every photo, fed at ``size``."""
    import filterviz

    params = filterviz.load_weights(weights)
    maps = np.concatenate(
        [
            np.asarray(filterviz.activations(params, batch, layer))
            for batch in np.array_split(sample_photos(SKIMAGE_PHOTOS, size, scikit_learn=True), 4)
        ]
    )
    return maps.reshape(-1, maps.shape[-1])


def measured(vectors: np.ndarray, rebuilt: np.ndarray, codes: np.ndarray) -> dict[str, float]:
    from filterviz.core import dictionaries as dl

    return {
        "unexplained_variance": dl.unexplained_variance(vectors, rebuilt),
        "mean_l0": dl.mean_l0(codes),
        "dead_fraction": dl.dead_fraction(codes),
    }


def filterviz_fit(kind: str, concepts: int, active: int, steps: int, batch: int) -> Callable:
    def run(train: np.ndarray, held: np.ndarray) -> dict:
        from filterviz.concept_atlases.fit import fit
        from filterviz.concept_atlases.shards import InMemory
        from filterviz.core import dictionaries as dl

        dictionary = dl.Dictionary(kind, concepts, active).check()
        weights = fit(
            dictionary, InMemory(train), np.arange(len(train)), steps=steps, batch_size=batch, seed=0
        )
        codes = np.asarray(dl.encode(dictionary, weights, held))
        return measured(held, np.asarray(dl.decode(dictionary, weights, codes)), codes)

    return run


def _import_overcomplete() -> None:
    # Overcomplete 0.3 calls matplotlib.cm.get_cmap at import, which matplotlib 3.9 removed; give it the
    # registry's equivalent so that it imports beside a current matplotlib.
    import matplotlib
    import matplotlib.cm

    if not hasattr(matplotlib.cm, "get_cmap"):
        matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap  # type: ignore[attr-defined]


def overcomplete_sae(kind: str, concepts: int, active: int, steps: int, batch: int) -> Callable:
    def run(train: np.ndarray, held: np.ndarray) -> dict:
        import torch

        _import_overcomplete()
        from overcomplete.sae import BatchTopKSAE, TopKSAE
        from overcomplete.sae.losses import top_k_auxiliary_loss
        from overcomplete.sae.train import train_sae

        torch.manual_seed(0)
        scale = float(np.sqrt(np.mean(np.sum(np.square(train), -1))))  # the same scaling as filterviz's
        model = (TopKSAE if kind == "topk" else BatchTopKSAE)(train.shape[1], concepts, top_k=active)
        data = torch.utils.data.TensorDataset(torch.from_numpy(train / scale))
        sampler = torch.utils.data.RandomSampler(data, replacement=True, num_samples=steps * batch)
        loader = torch.utils.data.DataLoader(data, batch_size=batch, sampler=sampler)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        train_sae(model, loader, top_k_auxiliary_loss, optimizer, nb_epochs=1, monitoring=0)
        model.eval()
        with torch.no_grad():
            _, codes, rebuilt = model(torch.from_numpy(held / scale))
        return measured(held, rebuilt.numpy() * scale, codes.numpy())

    return run


def overcomplete_nmf(concepts: int, passes: int) -> Callable:
    def run(train: np.ndarray, held: np.ndarray) -> dict:
        import torch

        _import_overcomplete()
        from overcomplete.optimization import NMF

        torch.manual_seed(0)
        model = NMF(concepts, solver="hals")
        model.fit(torch.from_numpy(train), max_iter=passes)
        codes = model.encode(torch.from_numpy(held))
        return measured(held, model.decode(codes).numpy(), codes.numpy())

    return run


def sklearn_nmf(concepts: int, steps: int, batch: int, rows: int) -> Callable:
    def run(train: np.ndarray, held: np.ndarray) -> dict:
        from sklearn.decomposition import MiniBatchNMF

        epochs = max(1, round(steps * batch / rows))
        model = MiniBatchNMF(concepts, batch_size=batch, max_iter=epochs, tol=0, max_no_improvement=None)
        model.fit(train)
        codes = model.transform(held)
        return measured(held, codes @ model.components_, codes)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", default=os.environ.get("FILTERVIZ_WEIGHTS"))
    parser.add_argument("--layer", default="block4_conv3")
    parser.add_argument("--concepts", type=int, default=64)
    parser.add_argument("--active", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--photo-size", type=int, default=224, help="the side the photos are fed at")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--skip", default="", help="tools to leave out, comma-separated: overcomplete,scikit-learn"
    )
    args = parser.parse_args(argv)
    skipped = tuple(filter(None, args.skip.split(",")))
    vectors = layer_vectors(args.weights, args.layer, args.photo_size)
    held_out = np.random.default_rng(0).permutation(len(vectors)) < len(vectors) // 5
    train, held = vectors[~held_out], vectors[held_out]
    shape = (args.concepts, args.active, args.steps, args.batch_size)
    contenders = {
        **{f"filterviz {kind}": filterviz_fit(kind, *shape) for kind in ("topk", "batchtopk", "jumprelu")},
        "filterviz archetypal": filterviz_fit("archetypal", *shape),
        "overcomplete topk": overcomplete_sae("topk", *shape),
        "overcomplete batchtopk": overcomplete_sae("batchtopk", *shape),
        "filterviz nmf": filterviz_fit("nmf", *shape),
        "scikit-learn minibatch nmf": sklearn_nmf(args.concepts, args.steps, args.batch_size, len(train)),
        "overcomplete nmf (full batch)": overcomplete_nmf(
            args.concepts, max(1, args.steps * args.batch_size // len(train))
        ),
    }
    rows = {}
    for name, run in contenders.items():
        if name.startswith(skipped):
            continue
        began = time.perf_counter()
        row = run(train, held)
        rows[name] = {**row, "seconds": time.perf_counter() - began}
        print(
            f"{name:30s} 1-R2 {row['unexplained_variance']:.3f}  L0 {row['mean_l0']:5.1f}  dead "
            f"{row['dead_fraction']:.2f}  {rows[name]['seconds']:6.1f} s",
            flush=True,
        )
    if args.json:
        report = {
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "vectors": {"train": len(train), "held_out": len(held), "channels": vectors.shape[1]},
            "settings": {k: v for k, v in vars(args).items() if k not in ("json", "weights")},
            "rows": rows,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
