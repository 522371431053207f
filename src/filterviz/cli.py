"""The ``filterviz`` command: parses arguments and calls the library; user errors exit 2 with one line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from filterviz.errors import FilterIndexError, FilterVizError
from filterviz.model import LAYERS, layer_spec

EXIT_USER_ERROR = 2


class UsageError(FilterVizError, ValueError):
    """A malformed command-line value (filter list, size)."""


def parse_filters(text: str, layer: str) -> list[int]:
    """``"0-19"``, ``"3,7,10-12"`` or ``"all"`` -> filter indices of ``layer``, each checked for range."""
    channels = layer_spec(layer).channels
    if text.strip() == "all":
        return list(range(channels))
    indices: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            begin = int(first)
            end = int(last) if dash else begin
        except ValueError:
            raise UsageError(f"bad filter list {text!r}: use e.g. 0-19 or 3,7,10-12 or all") from None
        if end < begin:
            raise UsageError(f"bad filter range {part.strip()!r}: the end is before the start")
        for index in (begin, end):
            if not 0 <= index < channels:
                raise FilterIndexError(layer, index, channels)
        indices.extend(range(begin, end + 1))
    return indices


def parse_size(text: str) -> tuple[int, int]:
    """``"128"`` or ``"160x120"`` (height x width) -> ``(height, width)``."""
    parts = text.lower().split("x")
    try:
        sizes = [int(part) for part in parts]
    except ValueError:
        raise UsageError(f"bad size {text!r}: use e.g. 128 or 160x120") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise UsageError(f"bad size {text!r}: use e.g. 128 or 160x120")
    return sizes[0], sizes[1]


def _layers(_: argparse.Namespace) -> None:
    for spec in LAYERS:
        print(f"{spec.name:<14}{spec.kind:<6}{spec.channels:>5} filters")


def _summary(args: argparse.Namespace) -> None:
    from filterviz.model import summary

    height, width = parse_size(args.size) if args.size else (None, None)
    print(summary(height, width))


def _filters(args: argparse.Namespace) -> None:
    import jax

    from filterviz.ascent import ascend
    from filterviz.images import as_image, check_writable, random_image
    from filterviz.plotting import filter_grid, save_figure
    from filterviz.weights import load_weights

    layer = layer_spec(args.layer).name
    filters = parse_filters(args.filters, layer)
    height, width = parse_size(args.size)
    check_writable(args.out)
    params = load_weights(args.weights)
    start = random_image(jax.random.key(args.seed), height, width)
    began = time.perf_counter()
    images = ascend(
        params, layer, filters, start, steps=args.steps, step_size=args.step_size, batch_size=args.batch_size
    )
    pictures = as_image(images)
    seconds = time.perf_counter() - began
    figure = filter_grid(pictures, [f"filter {i}" for i in filters], columns=args.columns, title=layer)
    save_figure(figure, args.out)
    print(
        f"wrote {args.out}: {len(filters)} filters of {layer}, {height}x{width}, {args.steps} steps "
        f"in {seconds:.1f} s",
        file=sys.stderr,
    )


def _dream(args: argparse.Namespace) -> None:
    import numpy as np

    from filterviz.ascent import ascend
    from filterviz.images import as_image, check_writable, load_image, save_png
    from filterviz.weights import load_weights

    layer = layer_spec(args.layer).name
    (filter_index,) = parse_filters(str(args.filter), layer)
    check_writable(args.out)
    photo = load_image(args.image)
    params = load_weights(args.weights)
    began = time.perf_counter()
    dreamed = np.asarray(
        ascend(params, layer, [filter_index], photo, steps=args.steps, step_size=args.step_size)[0]
    )
    seconds = time.perf_counter() - began
    picture = as_image(dreamed) if args.deprocess == "notebook" else np.clip(dreamed, 0, 255).astype(np.uint8)
    save_png(picture, args.out)
    print(
        f"wrote {args.out}: {layer} filter {filter_index} dreamed into a {photo.shape[0]}x{photo.shape[1]} "
        f"photo, {args.steps} steps in {seconds:.1f} s",
        file=sys.stderr,
    )


def _add_ascent_options(parser: argparse.ArgumentParser, *, steps: int) -> None:
    """The options every ascent command shares: steps, step size, weights file, output PNG."""
    parser.add_argument("--steps", type=int, default=steps, help=f"ascent steps (default {steps})")
    parser.add_argument("--step-size", type=float, default=1.0, help="step size (default 1.0)")
    parser.add_argument(
        "--weights",
        default=None,
        help="VGG16 weights file (default: $FILTERVIZ_WEIGHTS, weights/, ~/.keras/models/, or download)",
    )
    parser.add_argument("--out", required=True, help="PNG file to write")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="filterviz",
        description="See what the filters of VGG16 respond to, by gradient ascent on the input.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    layers = commands.add_parser("layers", help="list the layers and their filter counts")
    layers.set_defaults(run=_layers)

    summary = commands.add_parser("summary", help="print the Keras-style model summary")
    summary.add_argument("--size", help="input size, e.g. 224 or 160x120 (default: any, shown as None)")
    summary.set_defaults(run=_summary)

    filters = commands.add_parser("filters", help="draw a grid of what the filters of one layer respond to")
    filters.add_argument(
        "layer", metavar="LAYER", help="layer name, e.g. block4_conv1 (see 'filterviz layers')"
    )
    filters.add_argument(
        "--filters", default="0-19", help="filters to draw: 0-19, 3,7,10-12 or all (default 0-19)"
    )
    filters.add_argument("--size", default="128", help="start image size, 128 or HxW (default 128)")
    filters.add_argument("--seed", type=int, default=0, help="seed of the noise start image (default 0)")
    filters.add_argument(
        "--batch-size", type=int, default=None, help="filters per compiled chunk (default: auto)"
    )
    filters.add_argument("--columns", type=int, default=10, help="grid columns (default 10)")
    _add_ascent_options(filters, steps=20)
    filters.set_defaults(run=_filters)

    dream = commands.add_parser("dream", help="push a photo towards what one filter responds to")
    dream.add_argument(
        "image", metavar="IMAGE", help="photo to start from (any size, any format Pillow reads)"
    )
    dream.add_argument("--layer", default="block5_conv3", help="layer name (default block5_conv3)")
    dream.add_argument("--filter", type=int, default=0, help="filter index (default 0)")
    dream.add_argument(
        "--deprocess",
        choices=("clip", "notebook"),
        default="clip",
        help="clip: keep the photo's colours, clipped to 0-255 (default); notebook: as the notebook",
    )
    _add_ascent_options(dream, steps=100)
    dream.set_defaults(run=_dream)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 for a user error reported in one line)."""
    args = build_parser().parse_args(argv)
    for name in ("steps", "batch_size", "columns"):
        value = getattr(args, name, None)
        if value is not None and value < (0 if name == "steps" else 1):
            print(
                f"filterviz: error: --{name.replace('_', '-')} must be positive, got {value}", file=sys.stderr
            )
            return EXIT_USER_ERROR
    try:
        args.run(args)
    except FilterVizError as error:
        print(f"filterviz: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("filterviz: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`filterviz layers | head -1`): not an error worth a traceback. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
