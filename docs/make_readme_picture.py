"""Make docs/filters.png, the README's picture: 8 filters from five depths, with the real weights.

PYTHONPATH=src python docs/make_readme_picture.py
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

import filterviz

LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv1", "block5_conv1")
FILTERS = 8


def main() -> None:
    params = filterviz.load_weights()
    start = filterviz.random_image(jax.random.key(0), 128, 128)
    pictures, labels = [], []
    for layer in LAYERS:
        pictures.append(filterviz.as_image(filterviz.ascend(params, layer, range(FILTERS), start, steps=20)))
        labels += [f"{layer} #{index}" for index in range(FILTERS)]
    figure = filterviz.filter_grid(np.concatenate(pictures), labels, columns=FILTERS, cell_inches=1.5)
    filterviz.save_figure(figure, Path(__file__).resolve().parent / "filters.png", dpi=80)


if __name__ == "__main__":
    main()
