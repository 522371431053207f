"""The one scorer of every benchmark that judges pictures: how strongly a picture drives its filter.

A picture is scored by torch on VGG16 in torchvision's layout (``torch_reference.torchvision_vgg16``,
equal to filterviz's network to 2e-7), so the pictures of every tool, filterviz's and its peers', are
judged by the same model in the same way: the target channel's mean activation, the picture viewed at a
given size, as it is or averaged over :data:`COPIES` random shifted, scaled and rotated copies (the same
draws for every tool).
"""

from __future__ import annotations

import numpy as np

COPIES = 32
"""Random copies a transformed score averages over."""


def torch_layer(layer: str) -> int:
    """The index in ``features`` of the ReLU after VGG16's conv ``layer``: Keras' layer output."""
    from torch_reference import TORCHVISION_VGG16_INDEX

    return TORCHVISION_VGG16_INDEX[layer] + 1


def random_copies(pictures, count: int, seed: int):
    """``count`` shifted (up to 8%), scaled (0.9-1.1) and rotated (-10..10 degrees) copies of each
    ``[N, 3, H, W]`` picture, grey where uncovered; the same draws for every tool."""
    import torch
    import torchvision.transforms.v2.functional as F

    generator = np.random.default_rng(seed)
    side = pictures.shape[-1]
    copies = []
    for _ in range(count):
        angle, scale = float(generator.uniform(-10, 10)), float(generator.uniform(0.9, 1.1))
        shift = [int(v) for v in generator.integers(-side // 12, side // 12 + 1, 2)]
        copies.append(F.affine(pictures, angle=angle, translate=shift, scale=scale, shear=[0.0], fill=0.5))
    return torch.stack(copies, 1)  # [N, count, 3, H, W]


def score(
    module, layer: str, channel: int, picture: np.ndarray, view: int | None = None, transformed: bool = False
) -> float:
    """The mean activation of ``channel`` of ``layer`` on ``picture`` (``[H, W, 3]``, 0-1) resized to
    ``view`` (bilinear), as is or averaged over :data:`COPIES` random copies."""
    import torch
    import torch.nn.functional as F

    rgb = torch.from_numpy(np.ascontiguousarray(picture[..., :3], np.float32)).permute(2, 0, 1)[None]
    if view is not None and view != rgb.shape[-1]:
        rgb = F.interpolate(rgb, size=(view, view), mode="bilinear", align_corners=True, antialias=True)
    batch = random_copies(rgb, COPIES, seed=view or rgb.shape[-1])[0] if transformed else rgb
    index = torch_layer(layer)
    with torch.no_grad():
        out = module.features[: index + 1]((batch * 255.0).flip(1) - module.caffe_mean)
    return float(out[:, channel].mean())


def scores(module, layer: str, channels: list[int], pictures: np.ndarray) -> list[float]:
    """:func:`score` of each picture ``pictures[i]`` (``[B, H, W, 3]``) for ``channels[i]``, as is."""
    return [score(module, layer, c, picture) for c, picture in zip(channels, pictures, strict=True)]
