"""Make docs/atlas.png, the README's picture of the atlas page: a real sweep, shown in headless Chromium.

PYTHONPATH=src python docs/make_atlas_picture.py [FOLDER]    (needs chromium on the PATH)

Sweeps the first 24 filters of three layers with the real weights (128x128, 20 steps) into FOLDER
(default: a temporary folder), writes the atlas and screenshots its page for block3_conv3, sorted as it
opens (by filter index).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import filterviz

LAYERS = ("block2_conv2", "block3_conv3", "block4_conv2")


def main(folder: Path) -> None:
    params = filterviz.load_weights()
    filterviz.sweep(params, folder, layers=LAYERS, filters=range(24), steps=20)
    page = filterviz.write_atlas(folder).page
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        sys.exit("chromium is needed to take the screenshot")
    picture = Path(__file__).resolve().parent / "atlas.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,760",
        ]
        + [
            "--virtual-time-budget=10000",
            f"--screenshot={picture}",
            page.resolve().as_uri() + "#block3_conv3",
        ],
        check=True,
        capture_output=True,
    )
    print(f"wrote {picture}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="filterviz-atlas-")))
