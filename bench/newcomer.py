"""What a new user waits for, on this machine: the README's main command and the notebook, each in a fresh
process as a user starts it, from a clone with the weights in its ``weights/`` folder. The figures the
README and the notebook state come from this run (``bench/results/newcomer_cpu.json``).

    python bench/newcomer.py            # the main command (no cache, then cached), the dream, the notebook
    python bench/newcomer.py --smoke    # the main command at toy sizes only, any machine

Each case is timed from the command's start to its end (``time.perf_counter`` around the process), with
the load average before and after, since a shared machine's load changes what the user sees.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIN_COMMAND = ["filters", "block4_conv1", "--out", "block4_conv1.png"]
SMOKE_COMMAND = ["filters", "block1_conv1", "--filters", "0-1", "--steps", "2", "--out", "s.png"]


def _timed(command: list[str], environment: dict[str, str], folder: Path) -> dict:
    load = os.getloadavg()[0]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    after = os.getloadavg()[0]
    return {"seconds": round(seconds, 1), "load_before": round(load, 2), "load_after": round(after, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="toy sizes, the main command only")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "newcomer_cpu.json"))
    args = parser.parse_args()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FILTERVIZ_WEIGHTS")}
    environment.update(FILTERVIZ_CACHE_DIR=tempfile.mkdtemp(), PYTHONPATH=str(ROOT / "src"))
    cli = [sys.executable, "-m", "filterviz", *(SMOKE_COMMAND if args.smoke else MAIN_COMMAND)]
    rows = {}
    with tempfile.TemporaryDirectory() as elsewhere:  # not the clone's folder: weights found from anywhere
        rows["main command, first run (empty compilation cache)"] = _timed(cli, environment, Path(elsewhere))
        rows["main command, again (programs from the cache)"] = _timed(cli, environment, Path(elsewhere))
    if not args.smoke:
        from PIL import Image
        from skimage import data

        with tempfile.TemporaryDirectory() as elsewhere:
            Image.fromarray(data.chelsea()).save(Path(elsewhere) / "cat.jpg")
            dream = [sys.executable, "-m", "filterviz", "dream", "cat.jpg", "--layer", "block5_conv3"]
            dream += ["--filter", "0", "--steps", "100", "--out", "dream.png"]
            rows["the README's dream (300x451, 100 steps)"] = _timed(dream, environment, Path(elsewhere))
        notebook = ["jupyter", "nbconvert", "--to", "notebook", "--execute", "--stdout"]
        notebook += ["--ExecutePreprocessor.timeout=3600", "visualizing_conv_layers.ipynb"]
        rows["notebook, every cell (CPU sizes)"] = _timed(notebook, environment, ROOT / "notebooks")
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "cpu": _cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    print(json.dumps(result, indent=2))
    if not args.smoke:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


if __name__ == "__main__":
    main()
