"""Make docs/concepts.png, the picture of a concept page with the real VGG16 weights: a TopK dictionary of
16 concepts learned over block4_conv3 at every position of the 19 sample photos in scikit-image's and
scikit-learn's wheels, each concept drawn by the Lucid method (128 steps, 96 pixels), shown in headless
Chromium.

PYTHONPATH=src python docs/make_concepts_picture.py [FOLDER]    (needs chromium and scikit-image)

The same page from the command line, with the photos in a folder:
filterviz concepts PHOTOS --layer block4_conv3 --out FOLDER --concepts 16 --active 4 --fit-steps 1000
--fit-batch-size 1024 --steps 128 --size 96
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from concepts_bench import SKIMAGE_PHOTOS
from measures import sample_photos

SETTINGS = dict(concepts=16, active=4, fit_steps=1000, fit_batch_size=1024, steps=128, size=96)


def write_photos(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = [*SKIMAGE_PHOTOS, "china", "flower"]
    for name, photo in zip(names, sample_photos(SKIMAGE_PHOTOS, scikit_learn=True), strict=True):
        Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(folder / f"{name}.png")
    return folder


def main(folder: Path) -> None:
    photos = write_photos(folder.parent / f"{folder.name}-photos")
    found = filterviz.concepts(filterviz.load_weights(), photos, "block4_conv3", out=folder, **SETTINGS)
    print({name: round(value, 3) for name, value in found.measures.items()})
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        sys.exit("chromium is needed to take the screenshot")
    picture = Path(__file__).resolve().parent / "concepts.png"
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += ["--window-size=1100,900", "--virtual-time-budget=10000", f"--screenshot={picture}"]
    subprocess.run([*command, found.page.resolve().as_uri()], check=True, capture_output=True)
    print(f"wrote {picture}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="filterviz-concepts-")))
