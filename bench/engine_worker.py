"""One source tree's engine, timed on request: the worker behind ``ascent_bench.py --baseline-src``.

Started with ``PYTHONPATH`` at a tree's ``src``, it uses only the public API (``ascend``, ``render``), so
an older tree runs it too. Each line on stdin is a JSON request, ``{"method", "layer", "filters",
"size", "steps", "batch_size"}``; the worker runs it (the first time compiles), times one more run, and
answers ``{"seconds": s}`` on one line. Two workers answered in turn see the same background load.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import jax
import numpy as np

import filterviz


def run(params, request: dict) -> None:
    filters, size, steps = list(range(request["filters"])), request["size"], request["steps"]
    with open(os.devnull, "w") as nowhere, contextlib.redirect_stderr(nowhere):
        if request["method"] == "notebook":
            start = np.asarray(filterviz.random_image(jax.random.key(0), size, size))
            images = filterviz.ascend(
                params, request["layer"], filters, start, steps=steps, batch_size=request["batch_size"],
                progress=False,
            )  # fmt: skip
            jax.block_until_ready(images)
        else:
            filterviz.render(
                params, filterviz.channel(request["layer"], filters), method="lucid", steps=steps, size=size,
                batch_size=request["batch_size"], progress=False,
            )  # fmt: skip


def main() -> int:
    params = filterviz.load_weights(sys.argv[1] if len(sys.argv) > 1 else None)
    warm: set[str] = set()
    for line in sys.stdin:
        request = json.loads(line)
        kind = json.dumps(request, sort_keys=True)
        if kind not in warm:  # the compile, untimed
            run(params, request)
            warm.add(kind)
        began = time.perf_counter()
        run(params, request)
        print(json.dumps({"seconds": time.perf_counter() - began}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
