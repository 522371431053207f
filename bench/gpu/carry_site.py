"""Copy the pure-Python packages the GPU check's ``lucent`` part needs, and a GPU host may lack, from this
environment into ``bench/gpu/site`` (ignored by git), to send with the run and put on ``PYTHONPATH``:
torchax (filterviz's ``from_torch``), torch-lucent and kornia (Lucent) and decorator (Lucent's
objectives), each with its metadata. A package holding compiled code is refused: it would not match the
host's Python.

    python bench/gpu/carry_site.py
    PYTHONPATH=src:bench/gpu/site python bench/gpu_check.py --weights W --out DIR --parts env,lucent
"""

from __future__ import annotations

import argparse
import shutil
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("torchax", "torch-lucent", "kornia", "decorator")
SITE = Path(__file__).resolve().parent / "site"


def copy_distribution(name: str, site: Path) -> int:
    """Copy every file of the installed distribution ``name`` into ``site``; returns the bytes copied."""
    distribution = metadata.distribution(name)
    files = [  # its own files: not scripts outside site-packages, nor the tests some packages install
        path for path in distribution.files or [] if path.parts[0] not in ("..", "test", "tests")
    ]
    compiled = [str(path) for path in files if path.suffix in (".so", ".pyd", ".dylib")]
    if compiled:
        raise SystemExit(f"{name} holds compiled code ({compiled[0]}); it cannot travel as is")
    copied = 0
    for path in files:
        source = Path(distribution.locate_file(path))
        if source.suffix == ".pyc" or not source.is_file():
            continue
        target = site / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied += source.stat().st_size
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--site", type=Path, default=SITE)
    args = parser.parse_args(argv)
    shutil.rmtree(args.site, ignore_errors=True)
    args.site.mkdir(parents=True)
    total = 0
    for name in PACKAGES:
        copied = copy_distribution(name, args.site)
        total += copied
        print(f"{name} {metadata.version(name)}: {copied / 2**20:.1f} MiB", file=sys.stderr)
    print(f"{args.site}: {total / 2**20:.1f} MiB in all", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
