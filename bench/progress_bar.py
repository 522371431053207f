"""How the bar moves during the README's main command, and what it costs: the command run on a
pseudo-terminal (the bar shown) and through a pipe (no bar), each in a fresh process with the compiled
programs already in the cache, so both time the drawing alone.

    python bench/progress_bar.py --weights PATH [--layer block4_conv1] [--json out.json]

Reports the longest silence between two counts of the bar, the counts shown, the time left the bar
estimated halfway against the truth, and the drawing time with and without the bar.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import pty
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COUNT = re.compile(rb"(\d+)/(\d+) \[[^\]]*?<([0-9:?]+)")


def watched(command: list[str], environment: dict[str, str]) -> tuple[str, list[tuple[float, int, int, str]]]:
    """Run ``command`` with stderr on a pseudo-terminal; its stderr, and each count the bar showed:
    ``(seconds since the start, done, total, time left as shown)``."""
    leader, follower = pty.openpty()
    began = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower, env=environment)
    os.close(follower)
    data, counts = b"", []
    while True:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        now = time.monotonic() - began
        counts += [(now, int(m[1]), int(m[2]), m[3].decode()) for m in COUNT.finditer(chunk)]
        data += chunk
    os.close(leader)
    process.wait()
    return data.decode(errors="replace"), counts


def seconds_of(text: str) -> float:
    """The drawing time the CLI reports (``... in 12.3 s``)."""
    return float(re.findall(r" in ([0-9.]+) s", text)[-1])


def clock(shown: str) -> float:
    parts = [int(part) for part in shown.split(":")]
    return float(sum(part * 60**power for power, part in enumerate(reversed(parts))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", required=True)
    parser.add_argument("--layer", default="block4_conv1")
    parser.add_argument("--extra", default="", help="more CLI options, e.g. '--size 64 --steps 20'")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp())
    environment = {key: value for key, value in os.environ.items() if key != "CI"}
    environment["FILTERVIZ_CACHE_DIR"] = str(folder / "cache")
    command = [sys.executable, "-m", "filterviz", "filters", args.layer, "--weights", args.weights]
    command += [*args.extra.split(), "--out", str(folder / "grid.png")]
    subprocess.run(command, capture_output=True, env=environment, check=True)  # fills the cache
    piped = subprocess.run(command, capture_output=True, text=True, env=environment, check=True).stderr
    shown, counts = watched(command, environment)
    moving = [row for row in counts if row[1] > 0]
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(moving)]
    end = moving[-1][0]
    half = next(row for row in moving if row[1] >= row[2] / 2)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(["filterviz", *command[3:-2]]),
        "counts_shown": len(moving),
        "longest_silence_s": round(max(gaps, default=0.0), 2),
        "halfway_left_shown_s": clock(half[3]) if "?" not in half[3] else None,
        "halfway_left_true_s": round(end - half[0], 2),
        "drawing_with_bar_s": seconds_of(shown),
        "drawing_without_bar_s": seconds_of(piped),
    }
    result["with_over_without"] = round(result["drawing_with_bar_s"] / result["drawing_without_bar_s"], 3)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
