"""Make docs/activation_atlas.png, the README's activation atlas: VGG16's block4_conv3 (the real ImageNet
weights) over photos available offline: scikit-image's sample photos (public domain or CC0, as
scikit-image lists them), each cut into random crops, flipped or not, so a photo's crops are its class.

The atlas folder is written to ``--out`` (default a temporary folder); the picture lays the icons of
the main grid at their places, each sized by its cell's count, as the page shows them.

PYTHONPATH=src python docs/make_activation_atlas.py [--out atlas-folder] [--crops 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import filterviz

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def photo_folder(folder: Path, crops: int, seed: int = 0) -> Path:
    """``crops`` random square crops (30-70% of the shorter side, flipped at random) of each sample."""
    import skimage.data

    generator = np.random.default_rng(seed)
    for name in PHOTOS:
        photo = Image.fromarray(getattr(skimage.data, name)()[..., :3])
        (folder / name).mkdir(parents=True, exist_ok=True)
        width, height = photo.size
        for index in range(crops):
            side = int(min(width, height) * generator.uniform(0.3, 0.7))
            left, top = generator.integers(0, width - side + 1), generator.integers(0, height - side + 1)
            crop = photo.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)
            if generator.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            crop.save(folder / name / f"{index:03d}.png")
    return folder


def picture(atlas, folder: Path, grid: int, tile: int = 64) -> Image.Image:
    """The main grid's icons at their places on white, each shrunk by its cell's share of the most."""
    cells = atlas.levels[grid]
    canvas = Image.new("RGB", (grid * tile, grid * tile), "white")
    most = cells.counts.max()
    for row, column, count in zip(cells.rows, cells.columns, cells.counts, strict=True):
        side = int(tile * (0.35 + 0.65 * np.sqrt(count / most)))
        icon = Image.open(folder / f"icons/g{grid}/{row}_{column}.png").convert("RGB").resize((side, side))
        offset = (tile - side) // 2
        canvas.paste(icon, (column * tile + offset, (grid - 1 - row) * tile + offset))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--crops", type=int, default=30)
    parser.add_argument("--grid", type=int, default=12)
    parser.add_argument("--steps", type=int, default=128)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="activation-atlas-"))
    out = args.out or work / "atlas"
    photos = photo_folder(work / "photos", args.crops)
    params = filterviz.load_weights()
    began = time.perf_counter()
    atlas = filterviz.activation_atlas(
        params,
        photos,
        "block4_conv3",
        out=out,
        grid=args.grid,
        zoom=(args.grid // 2, args.grid),
        steps=args.steps,
        icon_size=64,
    )
    print(f"{len(atlas.vectors)} vectors, {time.perf_counter() - began:.0f} s; page {atlas.page}")
    picture(atlas, out, args.grid).save(Path(__file__).resolve().parent / "activation_atlas.png")


if __name__ == "__main__":
    main()
