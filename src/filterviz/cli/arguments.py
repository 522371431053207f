"""Argument types and options shared by the command line's sub-commands, each checked as it is parsed."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable


def whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``minimum`` (to ``maximum``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a whole number {bound}")
        return value

    return parse


def number(*, above: float) -> Callable[[str], float]:
    """An argparse type: a finite number greater than ``above``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value <= above:
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a finite number above {above:g}")
        return value

    return parse


COUNT = whole(1)
SEED = whole(0, 2**63 - 1)


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="vgg16",
        help="vgg16 (default), vgg19, resnet50, a Keras model file (PATH.keras) of your own, or a PyTorch "
        "model: torchvision:NAME, timm:NAME or package.module:factory (with the torch extra)",
    )
    parser.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=3,
        help="a PyTorch model's input channels: 3 (default), or 1 for a grayscale model, fed the pictures' "
        "mean (a Keras model's own input says it)",
    )


def add_photo_job(parser: argparse.ArgumentParser, layer_help: str) -> None:
    """``IMAGES --layer L --out F``: what every command that reads a photo folder into a resumable
    output folder takes first."""
    parser.add_argument("images", metavar="IMAGES", help="a folder of photos; a first subfolder is a class")
    parser.add_argument("--layer", required=True, help=layer_help)
    parser.add_argument("--out", required=True, help="output folder (created if needed; run again to resume)")


def add_max_pixels(parser: argparse.ArgumentParser) -> None:
    """--max-pixels: the largest photo read."""
    from filterviz.io.photos import MAX_PIXELS  # imported late: the parser loads fast

    parser.add_argument(
        "--max-pixels",
        type=COUNT,
        default=MAX_PIXELS,
        help=f"refuse photos larger than this many pixels (default {MAX_PIXELS:,})",
    )


FOUND = "(default: what --distributed finds)"


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Joining several hosts into one run."""
    # The same command started on every host joins them into one run (each takes a share of the work).
    cluster = parser.add_argument_group("several hosts (jax.distributed)")
    cluster.add_argument(
        "--distributed", action="store_true", help="join a cluster JAX detects itself (SLURM, MPI, TPU pods)"
    )
    cluster.add_argument("--coordinator", default=None, help=f"address:port of process 0 {FOUND}")
    cluster.add_argument("--num-processes", type=COUNT, default=None, help=f"number of processes {FOUND}")
    cluster.add_argument(
        "--process-id", type=whole(0), default=None, help=f"this process's index from 0 {FOUND}"
    )


class Renamed(argparse.Action):
    """An option's old spelling, kept for one release: it sets the new option's value and says, in one
    line on standard error, what it is called now."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: object) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:  # fmt: skip
        print(
            f"filterviz: {option_string} is now {self.new}; the old name goes in the next release",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)
