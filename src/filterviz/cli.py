"""The ``filterviz`` command: parses arguments and calls the library; user errors exit 2 with one line."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from filterviz.ascent import PRECISIONS
from filterviz.errors import FilterIndexError, FilterVizError, OutputError, SettingError
from filterviz.model import CONV_LAYERS, LAYERS, layer_spec
from filterviz.progress import count_of

EXIT_USER_ERROR = 2


class UsageError(SettingError):
    """A malformed command-line value (filter list, size)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit status 2, as every user error is."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"filterviz: error: {message} (see '{self.prog} --help')\n")


def _whole(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
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


def _number(*, above: float) -> Callable[[str], float]:
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


_COUNT = _whole(1)
_SEED = _whole(0, 2**63 - 1)


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


OBJECTIVES = ("channel", "neuron")


def _objective(kind: str, layer: str, filters: list[int]):
    from filterviz.objectives import channel, neuron

    return channel(layer, filters) if kind == "channel" else neuron(layer, filters)


def notebook_only(args: argparse.Namespace) -> bool:
    """True when the command line asks for the notebook's method with none of its knobs turned."""
    knobs = ("param", "preprocess", "transforms", "optimizer", "octaves", "images_per_filter")
    return args.method == "notebook" and all(getattr(args, knob, None) is None for knob in knobs)


def method_from_arguments(args: argparse.Namespace):
    """The :class:`filterviz.Method` the command line asks for: a preset, then each knob given."""
    import dataclasses

    from filterviz.methods import Octaves, Optimizer, get_method
    from filterviz.param import PARAMETERIZATIONS
    from filterviz.transforms import STANDARD

    method = get_method(args.method, precision=args.precision)
    settings = {}
    if args.steps is not None:
        settings["steps"] = args.steps
    if args.param is not None:
        settings["parameterization"] = PARAMETERIZATIONS[args.param]()
    if args.preprocess is not None:
        settings["preprocessing"] = args.preprocess
    if args.transforms is not None:
        settings["transforms"] = STANDARD if args.transforms == "standard" else ()
    if args.images_per_filter is not None:
        settings["images_per_filter"] = args.images_per_filter
    if args.optimizer is not None or args.step_size is not None:
        current = method.optimizer
        name = args.optimizer or current.name
        rate = args.step_size if args.step_size is not None else current.learning_rate
        options = current.options if name == current.name else ()
        settings["optimizer"] = Optimizer(name, rate, options)
    if args.octaves is not None:
        base = method.octaves or Octaves()
        settings["octaves"] = (
            None
            if args.octaves == 0
            else dataclasses.replace(base, stages=args.octaves, scale=args.octave_scale)
        )
    return get_method(method, **settings)


def stall_hint(layer: str, activations: Sequence[float], method: str) -> str | None:
    """One line when most filters stayed dead (never fired), with what helps; None otherwise."""
    dead = sum(1 for value in activations if not value > 0)
    if not activations or dead * 2 < len(activations):
        return None
    if method == "notebook":
        advice = (
            "try --method lucid (its ReLU gradients wake filters that noise leaves off), "
            "a larger --size or more --steps"
        )
    else:
        advice = "try a larger --size or more --steps"
    return f"{dead} of {count_of(len(activations), 'filter')} of {layer} stayed dead (activation 0): {advice}"


def _filters(args: argparse.Namespace) -> None:
    import jax
    import numpy as np

    from filterviz.ascent import achieved, ascend
    from filterviz.images import FIGURE_FORMATS, as_image, check_writable, random_image
    from filterviz.methods import check_method_size, render
    from filterviz.objectives import diversity
    from filterviz.plotting import filter_grid, filter_labels, save_figure
    from filterviz.weights import load_weights

    layer = layer_spec(args.layer).name
    filters = parse_filters(args.filters, layer)
    height, width = parse_size(args.size)
    method = method_from_arguments(args)
    check_method_size(method, layer, height, width)
    check_writable(args.out, FIGURE_FORMATS)
    if args.gif:
        check_writable(args.gif, {".gif": "GIF"})
    _use_compilation_cache(args)
    params = load_weights(args.weights)
    progress = False if args.quiet else None
    began = time.perf_counter()
    plain = notebook_only(args) and args.objective == "channel" and not args.diversity
    count = 1
    if plain and not args.gif:
        # The notebook's own path: the ascent computes only the target channel, the fastest there is.
        start = random_image(jax.random.key(args.seed), height, width)
        images = ascend(
            params,
            layer,
            filters,
            start,
            steps=method.steps,
            step_size=method.optimizer.learning_rate,
            batch_size=args.batch_size,
            precision=args.precision,
            progress=progress,
        )
        pictures = as_image(images)
        activations = achieved(params, layer, filters, images)
    else:
        objective = _objective(args.objective, layer, filters)
        if args.diversity:
            objective = objective + args.diversity * diversity(layer)
        result = render(
            params,
            objective,
            method=method,
            size=(height, width),
            seed=args.seed,
            batch_size=args.batch_size,
            frame_every=args.frame_every if args.gif else None,
            progress=progress,
        )
        count = method.images_per_filter
        pictures = result.pictures.reshape(-1, height, width, 3)
        activations = result.activations
        if args.gif:
            from filterviz.atlas import contact_sheet
            from filterviz.images import save_gif

            frames = result.frames.reshape(result.frames.shape[0], -1, height, width, 3)
            tile = min(128, height)
            tiles = [str(f) for f in filters for _ in range(count)]
            sheets = [contact_sheet(frame, tiles, columns=args.columns, tile=tile) for frame in frames]
            save_gif(np.stack(sheets), args.gif)
    seconds = time.perf_counter() - began
    # Each picture is labelled with its filter and the activation the filter reached (per filter: its
    # K images share the objective's value).
    labels = [
        label + (f" #{k}" if count > 1 else "")
        for label in filter_labels(filters, activations)
        for k in range(count)
    ]
    if args.top:
        # The later Keras example's grid: the filters that reached the highest activation, strongest first.
        order = np.argsort(-np.nan_to_num(activations, nan=-np.inf), kind="stable")[: args.top]
        rows = [row * count + k for row in order for k in range(count)]
        pictures, labels = pictures[rows], [labels[r] for r in rows]
    figure = filter_grid(pictures, labels, columns=args.columns, title=f"{layer} ({method.name})")
    save_figure(figure, args.out)
    if not args.quiet:
        print(
            f"wrote {args.out}: {count_of(len(filters), 'filter')} of {layer}, {height}x{width}, "
            f"{method.name} method, {count_of(method.steps, 'step')} in {seconds:.1f} s"
            + (f"; animation: {args.gif}" if args.gif else ""),
            file=sys.stderr,
        )
    hint = stall_hint(layer, list(activations), method.name)
    if hint:
        print(f"filterviz: {hint}", file=sys.stderr)


def _dream(args: argparse.Namespace) -> None:
    import numpy as np

    from filterviz.ascent import ascend
    from filterviz.images import (
        ARRAY_FORMATS,
        PICTURE_FORMATS,
        as_image,
        atomic_write,
        check_writable,
        encode_npy,
        load_image,
        save_picture,
    )
    from filterviz.weights import load_weights

    layer = layer_spec(args.layer).name
    (filter_index,) = parse_filters(str(args.filter), layer)
    step_size = 1.0 if args.step_size is None else args.step_size
    check_writable(args.out, {**PICTURE_FORMATS, **ARRAY_FORMATS})
    photo = load_image(args.image, max_pixels=args.max_pixels)
    _use_compilation_cache(args)
    params = load_weights(args.weights)
    progress = False if args.quiet else None
    began = time.perf_counter()
    if args.octaves or args.objective == "deepdream":
        from filterviz.methods import Method, Octaves, Optimizer, render
        from filterviz.objectives import channel, deepdream

        # Deep dream as the Keras example does it: ascend a shrunk photo, grow it, put back the detail
        # shrinking lost, ascend again; every stage with the notebook's normalised step.
        octaves = None
        if args.octaves:
            octaves = Octaves(args.octaves, args.octave_scale, True, requantize=False, reinject_detail=True)
        method = Method(
            name="dream",
            optimizer=Optimizer("normalized", step_size),
            steps=args.steps,
            octaves=octaves,
            picture="clip",
            precision=args.precision,
        ).check()
        objective = deepdream(layer) if args.objective == "deepdream" else channel(layer, filter_index)
        result = render(params, objective, method=method, start=photo, progress=progress)
        dreamed = np.asarray(result.pixels[0, 0])
    else:
        dreamed = np.asarray(
            ascend(
                params,
                layer,
                [filter_index],
                photo,
                steps=args.steps,
                step_size=step_size,
                precision=args.precision,
                progress=progress,
            )[0]
        )
    seconds = time.perf_counter() - began
    if args.out.lower().endswith(".npy"):
        atomic_write(args.out, encode_npy(dreamed))  # the float image itself, unquantised
    else:
        picture = as_image(dreamed) if args.deprocess == "notebook" else np.clip(dreamed, 0, 255)
        save_picture(picture.astype(np.uint8), args.out)
    what = f"{layer} (deep dream)" if args.objective == "deepdream" else f"{layer} filter {filter_index}"
    stages = f" x {count_of(args.octaves, 'octave')}" if args.octaves else ""
    if not args.quiet:
        print(
            f"wrote {args.out}: {what} dreamed into a {photo.shape[0]}x{photo.shape[1]} photo, "
            f"{count_of(args.steps, 'step')}{stages} in {seconds:.1f} s",
            file=sys.stderr,
        )


def _use_compilation_cache(args: argparse.Namespace) -> None:
    if not args.no_compile_cache:
        from filterviz.sweep import enable_compilation_cache

        try:
            enable_compilation_cache()
        except OutputError as error:  # the cache only saves time: go on without it
            print(f"filterviz: warning: {error}; compiling without a cache", file=sys.stderr)


def _sweep(args: argparse.Namespace) -> None:
    import jax

    from filterviz.images import load_image, resize_image
    from filterviz.sweep import sweep
    from filterviz.weights import load_weights

    if args.coordinator or args.num_processes is not None or args.process_id is not None or args.distributed:
        # Before anything touches a device: this joins the processes into one runtime. With no
        # arguments JAX finds the cluster itself (SLURM, Open MPI, Kubernetes, Cloud TPU).
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    if args.cpu_devices != 1:
        from filterviz.sweep import split_cpu_into_devices

        split_cpu_into_devices(args.cpu_devices or None)
    layers = (
        None if args.layers == "all" else [layer_spec(name.strip()).name for name in args.layers.split(",")]
    )
    filters = None
    if args.filters != "all":
        filters = {name: parse_filters(args.filters, name) for name in (layers or CONV_LAYERS)}
    height, width = parse_size(args.size or "128")
    start = None
    if args.start is not None:
        start = load_image(args.start, max_pixels=args.max_pixels)
        if args.size is not None:  # a photo keeps its own size unless --size is given
            start = resize_image(start, height, width)
    if notebook_only(args):
        method, steps, step_size = "notebook", args.steps, args.step_size
    else:
        method, steps, step_size = method_from_arguments(args), None, None
    _use_compilation_cache(args)
    params = load_weights(args.weights)
    result = sweep(
        params,
        args.out,
        layers=layers,
        filters=filters,
        size=(height, width),
        method=method,
        steps=steps,
        step_size=step_size,
        seed=args.seed,
        start=start,
        precision=args.precision,
        raw=args.raw,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
    )
    for problem in result.problems:
        print(f"filterviz: redone: {problem}", file=sys.stderr)
    if jax.process_index() == 0:
        from filterviz.atlas import write_atlas

        atlas = write_atlas(args.out)
        page = atlas.page
        for problem in atlas.problems:
            print(f"filterviz: atlas: {problem}", file=sys.stderr)
    if not args.quiet:
        where = (
            f" (process {jax.process_index()} of {jax.process_count()})" if jax.process_count() > 1 else ""
        )
        print(
            f"{result.written} filters written, {result.skipped} already done, in {result.seconds:.1f} s"
            f" on {jax.device_count()} device(s){where}",
            file=sys.stderr,
        )
        if jax.process_index() == 0:
            print(f"atlas: {page}", file=sys.stderr)


def _atlas(args: argparse.Namespace) -> None:
    from filterviz.atlas import write_atlas

    atlas = write_atlas(args.folder)
    for problem in atlas.problems:
        print(f"filterviz: left out: {problem}", file=sys.stderr)
    print(atlas.page)


def _top(args: argparse.Namespace) -> None:
    from filterviz.atlas import DEAD_ACTIVATION, load_pictures, top_filters
    from filterviz.images import FIGURE_FORMATS, check_writable
    from filterviz.plotting import filter_grid, save_figure

    layer = layer_spec(args.layer).name
    check_writable(args.out, FIGURE_FORMATS)
    entries = top_filters(args.folder, layer, args.count)
    if not entries:
        raise UsageError(f"{args.folder} has no finished filters of {layer}")
    labels = [
        f"{e['filter']}: {e['activation']:.1f}" + (" dead" if e["activation"] <= DEAD_ACTIVATION else "")
        for e in entries
    ]
    figure = filter_grid(
        load_pictures(args.folder, entries), labels, columns=args.columns, title=f"{layer}, strongest first"
    )
    save_figure(figure, args.out)
    print(f"wrote {args.out}: the {len(entries)} strongest filters of {layer}", file=sys.stderr)


def _add_compute_options(parser: argparse.ArgumentParser, *, steps: int | None) -> None:
    """The options every ascent command shares: steps, step size, precision, weights file, cache."""
    where = f"{steps}" if steps is not None else "the method's"
    parser.add_argument("--steps", type=_whole(0), default=steps, help=f"ascent steps (default {where})")
    parser.add_argument(
        "--step-size",
        type=_number(above=0),
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
        help="VGG16 weights file (default: $FILTERVIZ_WEIGHTS, weights/, ~/.keras/models/, or download)",
    )
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs in $FILTERVIZ_CACHE_DIR (default ~/.cache/filterviz/xla)",
    )


def _add_method_options(parser: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """The method and its main knobs (every other one is reachable from Python: filterviz.Method)."""
    from filterviz.methods import METHODS
    from filterviz.param import PARAMETERIZATIONS, PREPROCESSINGS

    group = parser.add_argument_group("method (see filterviz.methods)")
    group.add_argument(
        "--method",
        choices=tuple(METHODS),
        default="notebook",
        help="notebook: plain pixel ascent (default); lucid: Fourier image, decorrelated colour, "
        "random transforms, Adam; maco: phase-only Fourier; octaves: growing image (Keras example)",
    )
    group.add_argument(
        "--param", choices=tuple(PARAMETERIZATIONS), help="parameterization (default: the method's)"
    )
    group.add_argument(
        "--preprocess", choices=PREPROCESSINGS, help="raw 0-255 or caffe (default: the method's)"
    )
    group.add_argument("--transforms", choices=("none", "standard"), help="random transforms each step")
    group.add_argument(
        "--optimizer", help="normalized (the notebook's) or an optax optimizer: adam, nadam, sgd..."
    )
    group.add_argument("--octaves", type=_whole(0), help="octave stages (0: none; the octaves method: 9)")
    group.add_argument(
        "--octave-scale", type=_number(above=1), default=1.2, help="growth between octaves (default 1.2)"
    )
    if not sweep:
        group.add_argument("--images-per-filter", type=_COUNT, help="images optimised together per filter")
        group.add_argument(
            "--diversity",
            type=_number(above=-math.inf),
            default=0.0,
            help="weight of a diversity term (Lucid: 100)",
        )
        group.add_argument(
            "--objective", choices=OBJECTIVES, default="channel", help="channel (default) or neuron"
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


def _add_max_pixels(parser: argparse.ArgumentParser) -> None:
    from filterviz.images import MAX_PIXELS

    parser.add_argument(
        "--max-pixels",
        type=_COUNT,
        default=MAX_PIXELS,
        help=f"refuse photos larger than this many pixels (default {MAX_PIXELS:,})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    filters.add_argument("--seed", type=_SEED, default=0, help="seed of the noise start image (default 0)")
    filters.add_argument(
        "--batch-size", type=_COUNT, default=None, help="filters per compiled chunk (default: auto)"
    )
    filters.add_argument("--columns", type=_COUNT, default=10, help="grid columns (default 10)")
    filters.add_argument(
        "--top", type=_COUNT, default=None, help="draw only the N filters that reached the highest activation"
    )
    filters.add_argument("--gif", default=None, help="also write an animated GIF of the ascent here")
    filters.add_argument("--frame-every", type=_COUNT, default=8, help="steps between GIF frames (default 8)")
    _add_ascent_options(filters, steps=None)
    _add_method_options(filters)
    filters.set_defaults(run=_filters)

    dream = commands.add_parser("dream", help="push a photo towards what one filter responds to")
    dream.add_argument(
        "image", metavar="IMAGE", help="photo to start from (any size, any format Pillow reads)"
    )
    dream.add_argument("--layer", default="block5_conv3", help="layer name (default block5_conv3)")
    dream.add_argument("--filter", type=_whole(0), default=0, help="filter index (default 0)")
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
        "--octaves", type=_whole(0), default=0, help="octave stages, smallest first (default 0: none)"
    )
    dream.add_argument(
        "--octave-scale", type=_number(above=1), default=1.4, help="size ratio between octaves (default 1.4)"
    )
    _add_max_pixels(dream)
    _add_ascent_options(dream, steps=100)
    dream.set_defaults(run=_dream)

    sweep = commands.add_parser(
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
    sweep.add_argument("--filters", default="all", help="filters of each layer: 0-15, 3,7,10-12 or all")
    sweep.add_argument("--size", default=None, help="image size, 128 or HxW (default 128)")
    sweep.add_argument("--seed", type=_SEED, default=0, help="seed of the noise start image (default 0)")
    sweep.add_argument(
        "--start", default=None, help="start from this photo instead of noise (resized to --size if given)"
    )
    sweep.add_argument("--raw", action="store_true", help="also save each float32 image as .npy")
    _add_max_pixels(sweep)
    sweep.add_argument(
        "--batch-size",
        type=_COUNT,
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
        type=_whole(0),
        default=0,
        help="on a CPU, run this many filters at once, one per core (default 0: one per core; "
        "1: one filter at a time on all cores)",
    )
    _add_compute_options(sweep, steps=None)
    _add_method_options(sweep, sweep=True)
    cluster = sweep.add_argument_group("several hosts (jax.distributed)")
    cluster.add_argument(
        "--distributed", action="store_true", help="join a cluster JAX detects itself (SLURM, MPI, TPU pods)"
    )
    cluster.add_argument("--coordinator", default=None, help="address:port of process 0")
    cluster.add_argument("--num-processes", type=_COUNT, default=None, help="number of processes")
    cluster.add_argument("--process-id", type=_whole(0), default=None, help="this process's index, from 0")
    sweep.set_defaults(run=_sweep)

    atlas = commands.add_parser("atlas", help="rebuild a sweep folder's contact sheets and index.html")
    atlas.add_argument("folder", metavar="FOLDER", help="a folder written by 'filterviz sweep'")
    atlas.set_defaults(run=_atlas)

    top = commands.add_parser(
        "top", help="grid of a layer's filters from a sweep, strongest activation first"
    )
    top.add_argument("folder", metavar="FOLDER", help="a folder written by 'filterviz sweep'")
    top.add_argument("--layer", required=True, help="layer name")
    top.add_argument("--count", type=_COUNT, default=16, help="how many filters (default 16)")
    top.add_argument("--columns", type=_COUNT, default=8, help="grid columns (default 8)")
    top.add_argument("--out", required=True, help="picture to write: .png, .jpg, .pdf or .svg")
    top.set_defaults(run=_top)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 for a user error reported in one line)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad argument already reported in one line
        return exit_.code if isinstance(exit_.code, int) else EXIT_USER_ERROR
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
