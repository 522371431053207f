"""The ``filterviz`` command line: its arguments, each checked as it is parsed, and the dispatch to
:mod:`filterviz.cli.commands` and :mod:`filterviz.cli.volume`. User errors exit 2 with one line."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from filterviz.cli import commands, volume
from filterviz.cli.arguments import (
    COUNT,
    SEED,
    Renamed,
    add_cluster_options,
    add_max_pixels,
    add_model,
    add_photo_job,
    number,
    whole,
)
from filterviz.cli.concepts import add_concepts
from filterviz.core.checks import PRECISIONS
from filterviz.core.hits import RANKINGS
from filterviz.core.transforms import TRANSFORM_SETS
from filterviz.errors import FilterVizError, printable
from filterviz.io.photos import FITS
from filterviz.runtime import VERSION

EXIT_USER_ERROR = 2
WEIGHTS_AS_FOR_FILTERS = "the network's weights file (default and forms as for filters)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit status 2, as every user error is."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"filterviz: error: {message} (see '{self.prog} --help')\n")


def _add_compute_options(parser: argparse.ArgumentParser, *, steps: int | None) -> None:
    """The options every ascent command shares: model, steps, step size, precision, weights, cache."""
    add_model(parser)
    where = f"{steps}" if steps is not None else "the method's"
    parser.add_argument("--steps", type=whole(0), default=steps, help=f"ascent steps (default {where})")
    parser.add_argument(
        "--step-size",
        type=number(above=0),
        default=None,
        help="step size, or the optimizer's learning rate (default the method's: notebook 1.0, lucid 0.05)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="float32 (default); tf32: TensorFloat-32 matrix math on GPUs that have it; "
        "bfloat16: network in bfloat16, image in float32",
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="the network's weights file (default for VGG16: $FILTERVIZ_WEIGHTS, weights/, ~/.keras/models/, "
        "or a download); for a PyTorch model a state_dict (.pt, .pth or .safetensors), never unpickled as "
        "code (default: torchvision's or timm's published weights)",
    )
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs in $FILTERVIZ_CACHE_DIR (default ~/.cache/filterviz/xla)",
    )


def _add_method_options(
    parser: argparse.ArgumentParser, *, sweep: bool = False, default: str = "notebook"
) -> None:
    """The method and its main knobs (every other one is reachable from Python: filterviz.Method)."""
    from filterviz.core.methods import METHODS
    from filterviz.core.network import PREPROCESSINGS
    from filterviz.core.parameterizations import PARAMETERIZATIONS

    group = parser.add_argument_group("method (see filterviz.core.methods)")
    group.add_argument(
        "--method",
        choices=tuple(METHODS),
        default=default,
        help=f"notebook: plain pixel ascent; lucid: Fourier image, decorrelated colour, random transforms, "
        f"Adam; maco: phase-only Fourier; octaves: growing image, as the Keras example (default {default})",
    )
    group.add_argument(
        "--param", choices=tuple(PARAMETERIZATIONS), help="parameterization (default: the method's)"
    )
    group.add_argument(
        "--preprocess",
        choices=("network", *PREPROCESSINGS),
        help="what the network is fed: network (its own convention), raw 0-255, caffe, torch or tf "
        "(default: the method's)",
    )
    group.add_argument(
        "--transforms",
        choices=tuple(TRANSFORM_SETS),
        help="random transforms each step: Lucid's standard ones, or with the scale widened to 0.73-1.27 "
        "(default: the method's; lucid: standard, notebook: none)",
    )
    group.add_argument(
        "--optimizer",
        help="normalized (the notebook's), scheduled_nadam (Keras' and PyTorch's NAdam) or an optax "
        "optimizer: adam, nadam, sgd... (default: the method's; notebook: normalized, lucid: adam)",
    )
    group.add_argument(
        "--view",
        type=whole(1),
        help="viewing scale: resize what the network sees so its longer side is this many pixels, "
        "e.g. 224 (default: the method's; maco views its crops at 224)",
    )
    group.add_argument(
        "--spectrum",
        help="maco's magnitude spectrum: imagenet (the published one, fetched on first use; the "
        "default), 1/f (no file), or a .npy from 'filterviz spectrum'",
    )
    group.add_argument(
        "--octaves", type=whole(0), help="octave stages (default: the method's; none, or 9 for octaves)"
    )
    group.add_argument(
        "--octave-scale", type=number(above=1), default=1.2, help="growth between octaves (default 1.2)"
    )
    if not sweep:
        group.add_argument(
            "--images-per-filter", type=COUNT, help="images optimised together per filter (default 1)"
        )
        group.add_argument(
            "--diversity",
            type=number(above=-math.inf),
            default=0.0,
            help="weight of a diversity term (default 0; Lucid uses 100)",
        )
        group.add_argument(
            "--objective",
            choices=("channel", "neuron"),
            default="channel",
            help="channel (default) or neuron",
        )
    else:
        parser.set_defaults(images_per_filter=None)


def _add_ascent_options(parser: argparse.ArgumentParser, *, steps: int | None) -> None:
    """The compute options, the output picture, and --quiet."""
    _add_compute_options(parser, steps=steps)
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    parser.add_argument(
        "--out", required=True, help="picture to write; its extension picks the type (.png, .jpg ...)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each parsed namespace carries its command as ``run``."""
    parser = _Parser(
        prog="filterviz",
        description="See what the filters of a convolutional network respond to, by gradient ascent on the "
        "input (VGG16 unless --model names another).",
    )
    parser.add_argument("--version", action="version", version=f"filterviz {VERSION}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_layers,
        _add_summary,
        _add_filters,
        _add_dream,
        _add_sweep,
        _add_atlas,
        _add_top,
        _add_examples,
        _add_spectrum,
        _add_activation_atlas,
    ):
        add(subcommands)
    add_concepts(subcommands, _add_compute_options, _add_method_options)
    return parser


def _add_layers(subcommands: Any) -> None:
    """``filterviz layers``."""
    layers = subcommands.add_parser("layers", help="list the layers and their filter counts")
    add_model(layers)
    layers.set_defaults(run=commands.layers)


def _add_summary(subcommands: Any) -> None:
    """``filterviz summary``."""
    summary = subcommands.add_parser("summary", help="print the Keras-style model summary")
    summary.add_argument("--size", help="input size, e.g. 224 or 160x120 (default: any, shown as None)")
    add_model(summary)
    summary.set_defaults(run=commands.summary)


def _add_filters(subcommands: Any) -> None:
    """``filterviz filters``."""
    filters = subcommands.add_parser(
        "filters", help="draw a grid of what the filters of one layer respond to"
    )
    filters.add_argument(
        "layer", metavar="LAYER", help="layer name, e.g. block4_conv1 (see 'filterviz layers')"
    )
    filters.add_argument(
        "--filters", default="0-19", help="filters to draw: 0-19, 3,7,10-12 or all (default 0-19)"
    )
    filters.add_argument("--size", default="128", help="start image size, 128 or HxW (default 128)")
    filters.add_argument("--seed", type=SEED, default=0, help="seed of the noise start image (default 0)")
    filters.add_argument(
        "--batch-size", type=COUNT, default=None, help="filters per compiled chunk (default: auto)"
    )
    filters.add_argument("--columns", type=COUNT, default=10, help="grid columns (default 10)")
    filters.add_argument(
        "--top", type=COUNT, default=None, help="draw only the N filters that fired most (default: all)"
    )
    filters.add_argument("--gif", default=None, help="also write a GIF of the ascent here (default none)")
    filters.add_argument("--frame-every", type=COUNT, default=8, help="steps between GIF frames (default 8)")
    _add_ascent_options(filters, steps=None)
    _add_method_options(filters)
    filters.set_defaults(run=commands.filters)


def _add_dream(subcommands: Any) -> None:
    """``filterviz dream``."""
    dream = subcommands.add_parser("dream", help="push a photo towards what one filter responds to")
    dream.add_argument(
        "image", metavar="IMAGE", help="photo to start from (any size, any format Pillow reads)"
    )
    dream.add_argument(
        "--layer", default=None, help="layer name (default: the network's deepest, block5_conv3)"
    )
    dream.add_argument("--filter", type=whole(0), default=0, help="filter index (default 0)")
    dream.add_argument(
        "--deprocess",
        choices=("clip", "notebook"),
        default="clip",
        help="clip: keep the photo's colours, clipped to 0-255 (default); notebook: as the notebook",
    )
    dream.add_argument(
        "--objective",
        choices=("filter", "deepdream"),
        default="filter",
        help="filter: raise --filter (default); deepdream: raise every filter of the layer (mean square)",
    )
    dream.add_argument(
        "--octaves", type=whole(0), default=0, help="octave stages, smallest first (default 0: none)"
    )
    dream.add_argument(
        "--octave-scale", type=number(above=1), default=1.4, help="size ratio between octaves (default 1.4)"
    )
    add_max_pixels(dream)
    _add_ascent_options(dream, steps=100)
    dream.set_defaults(run=commands.dream)


def _add_sweep(subcommands: Any) -> None:
    """``filterviz sweep``."""
    sweep = subcommands.add_parser(
        "sweep",
        help="draw every filter of chosen layers into a folder, with an atlas page; resumable",
        description="Draw every chosen filter into OUT (one PNG each, a manifest, contact sheets and "
        "OUT/index.html), sharded over every device. Run the same command again to finish an "
        "interrupted sweep: finished filters are kept.",
    )
    sweep.add_argument("--out", required=True, help="output folder (created if needed)")
    sweep.add_argument(
        "--layers", default="all", help="comma-separated layer names, or all conv layers (default all)"
    )
    sweep.add_argument(
        "--filters", default="all", help="filters of each layer: 0-15, 3,7,10-12 (default all)"
    )
    sweep.add_argument("--size", default=None, help="image size, 128 or HxW (default 128)")
    sweep.add_argument("--seed", type=SEED, default=0, help="seed of the noise start image (default 0)")
    sweep.add_argument(
        "--start",
        default=None,
        help="start from this photo instead of noise, resized to --size if given (default: noise)",
    )
    sweep.add_argument("--raw", action="store_true", help="also save each float32 image as .npy")
    add_max_pixels(sweep)
    sweep.add_argument(
        "--batch-size",
        type=COUNT,
        default=None,
        help="filters per device per compiled chunk (default: auto)",
    )
    sweep.add_argument(
        "--overwrite",
        action="store_true",
        help="clear a sweep with other settings from --out and start again",
    )
    sweep.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    sweep.add_argument(
        "--cpu-devices",
        type=whole(0),
        default=0,
        help="on a CPU, run this many filters at once, one per core (default 0: one per core; "
        "1: one filter at a time on all cores)",
    )
    _add_compute_options(sweep, steps=None)
    _add_method_options(sweep, sweep=True)
    add_cluster_options(sweep)
    sweep.set_defaults(run=volume.sweep)


def _add_atlas(subcommands: Any) -> None:
    """``filterviz atlas``."""
    atlas = subcommands.add_parser("atlas", help="rebuild a sweep folder's contact sheets and index.html")
    atlas.add_argument("folder", metavar="FOLDER", help="a folder written by 'filterviz sweep'")
    atlas.set_defaults(run=volume.atlas)


def _add_top(subcommands: Any) -> None:
    """``filterviz top``."""
    top = subcommands.add_parser(
        "top", help="grid of a layer's filters from a sweep, strongest activation first"
    )
    top.add_argument("folder", metavar="FOLDER", help="a folder written by 'filterviz sweep'")
    top.add_argument("--layer", required=True, help="layer name")
    top.add_argument("--count", type=COUNT, default=16, help="how many filters (default 16)")
    top.add_argument("--columns", type=COUNT, default=8, help="grid columns (default 8)")
    top.add_argument("--out", required=True, help="picture to write: .png, .jpg, .pdf or .svg")
    top.set_defaults(run=volume.top)


def _add_examples(subcommands: Any) -> None:
    """``filterviz examples``."""
    examples = subcommands.add_parser(
        "examples",
        help="the image patches of a folder that excite each filter most (dataset examples)",
        description="Stream every JPEG/PNG under IMAGES (recursively) through the network once; for "
        "each filter of the chosen layers keep the K strongest hits, crop each hit's receptive field "
        "into OUT/examples/LAYER/ and write OUT/examples.jsonl with the hits and activation statistics.",
    )
    examples.add_argument("images", metavar="IMAGES", help="a folder of images (class subfolders work)")
    examples.add_argument("--out", required=True, help="output folder (created if needed)")
    examples.add_argument(
        "--layers", default="all", help="comma-separated layer names, or all conv layers (default all)"
    )
    examples.add_argument("--count", type=COUNT, default=9, help="hits kept per filter (default 9)")
    examples.add_argument("--k", type=COUNT, dest="count", action=Renamed, new="--count")
    examples.add_argument(
        "--image-size", type=COUNT, default=224, help="images fitted to SIZExSIZE (default 224)"
    )
    examples.add_argument("--size", type=COUNT, dest="image_size", action=Renamed, new="--image-size")
    examples.add_argument("--fit", choices=FITS, default="crop", help="crop the middle (default) or resize")
    examples.add_argument(
        "--ranking", choices=RANKINGS, default="max", help="score a hit by the max (default) or mean"
    )
    examples.add_argument("--image-batch-size", type=COUNT, default=32, help="images per batch (default 32)")
    examples.add_argument(
        "--batch-size", type=COUNT, dest="image_batch_size", action=Renamed, new="--image-batch-size"
    )
    add_model(examples)
    examples.add_argument("--weights", default=None, help=WEIGHTS_AS_FOR_FILTERS)
    examples.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    add_cluster_options(examples)
    examples.set_defaults(run=volume.examples)


def _add_activation_atlas(subcommands: Any) -> None:
    """``filterviz activation-atlas``."""
    atlas = subcommands.add_parser(
        "activation-atlas",
        help="the map of what a layer represents: activation vectors of a folder laid out by UMAP, each "
        "cell of a grid drawn (needs the atlas extra)",
    )
    add_photo_job(atlas, "the layer to map")
    atlas.add_argument("--grid", type=whole(1, 1024), default=20, help="cells per side (default 20)")
    atlas.add_argument(
        "--zoom",
        default=None,
        help="the grids of the zoom levels, e.g. 10,20,40 (default: half, grid, twice)",
    )
    atlas.add_argument("--size", type=COUNT, default=64, help="icon side in pixels (default 64)")
    atlas.add_argument("--icon-size", type=COUNT, dest="size", action=Renamed, new="--size")
    atlas.add_argument("--positions", type=COUNT, default=4, help="vectors per photo (default 4)")
    atlas.add_argument(
        "--image-size", type=COUNT, default=224, help="photos fitted to SIZExSIZE (default 224)"
    )
    atlas.add_argument("--min-count", type=COUNT, default=3, help="vectors a cell needs (default 3)")
    atlas.add_argument("--seed", type=SEED, default=0, help="positions, layout and icons (default 0)")
    atlas.add_argument("--image-batch-size", type=COUNT, default=32, help="photos per batch (default 32)")
    atlas.add_argument("--batch-size", type=COUNT, default=16, help="icons per compiled call (default 16)")
    atlas.add_argument(
        "--overwrite",
        action="store_true",
        help="clear an atlas with other settings from --out and start again (only its own files)",
    )
    atlas.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    _add_compute_options(atlas, steps=None)
    _add_method_options(atlas, sweep=True, default="lucid")  # how each cell's icon is drawn
    add_cluster_options(atlas)
    atlas.set_defaults(run=volume.activation_atlas)


def _add_spectrum(subcommands: Any) -> None:
    """``filterviz spectrum``."""
    spectrum = subcommands.add_parser(
        "spectrum",
        help="the mean Fourier magnitude of a folder of photos, for the maco method (--spectrum)",
    )
    spectrum.add_argument(
        "images", metavar="IMAGES", help="a folder of photos (.jpg, .png), read recursively"
    )
    spectrum.add_argument("--out", required=True, help="the .npy file to write")
    spectrum.add_argument(
        "--size", type=whole(8, 4096), default=512, help="side the photos are cropped to (default 512)"
    )
    spectrum.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    spectrum.set_defaults(run=commands.spectrum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 for a user error reported in one line)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad argument already reported in one line
        return exit_.code if isinstance(exit_.code, int) else EXIT_USER_ERROR
    try:
        args.run(args)
    except FilterVizError as error:
        print(f"filterviz: error: {printable(error)}", file=sys.stderr)
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
