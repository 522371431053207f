"""Make docs/atlas_examples.png, the README's picture of the combined atlas: a real sweep and the dataset
examples of scikit-image's sample photos in the same folder, shown in headless Chromium.

PYTHONPATH=src python docs/make_examples_picture.py [FOLDER]    (needs chromium and scikit-image)

Sweeps the first 16 filters of block3_conv3 with the real weights (128x128, 20 steps), finds each
filter's 3 best patches among scikit-image's colour sample photos (224x224), and screenshots the page.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import filterviz

LAYER = "block3_conv3"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "colorwheel")


def sample_photos(folder: Path) -> Path:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        pixels = np.asarray(getattr(data, name)())[..., :3]
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}.png")
    return folder


def main(folder: Path) -> None:
    params = filterviz.load_weights()
    filterviz.sweep(params, folder, layers=[LAYER], filters=range(16), steps=20)
    photos = sample_photos(folder.parent / f"{folder.name}-photos")
    filterviz.examples(params, photos, [LAYER], out=folder, k=3, size=224)
    page = filterviz.write_atlas(folder).page
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        sys.exit("chromium is needed to take the screenshot")
    picture = Path(__file__).resolve().parent / "atlas_examples.png"
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += ["--window-size=1100,700", "--virtual-time-budget=10000", f"--screenshot={picture}"]
    subprocess.run([*command, page.resolve().as_uri() + f"#{LAYER}"], check=True, capture_output=True)
    print(f"wrote {picture}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="filterviz-examples-")))
