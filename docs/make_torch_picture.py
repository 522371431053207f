"""Make docs/torch_vgg16.png, the README's PyTorch picture: a PyTorch model (torchvision's VGG16 carrying
the real ImageNet VGG16 weights, behind torchvision's input convention) drawn through
``filterviz.from_torch`` with the Lucid method.

PYTHONPATH=src:bench python docs/make_torch_picture.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import filterviz
from torch_reference import TORCHVISION_VGG16_INDEX, torchvision_vgg16

LAYER = "block4_conv3"
FILTERS = range(6)


def main() -> None:
    module = torchvision_vgg16(filterviz.load_weights())
    network, params = filterviz.from_torch(module, name="torchvision vgg16")
    relu = f"features.{TORCHVISION_VGG16_INDEX[LAYER] + 1}"  # the ReLU after the conv: Keras' layer output
    drawn = filterviz.render(params, filterviz.channel(relu, FILTERS), network=network, size=128, steps=128)
    labels = [f"{relu} #{index}" for index in FILTERS]
    pictures = np.asarray(drawn.pictures)[:, 0]
    figure = filterviz.filter_grid(pictures, labels, columns=len(FILTERS), cell_inches=1.5)
    filterviz.save_figure(figure, Path(__file__).resolve().parent / "torch_vgg16.png", dpi=80)


if __name__ == "__main__":
    main()
