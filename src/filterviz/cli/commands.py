"""What each ``filterviz`` command does, given its parsed arguments (:mod:`filterviz.cli` parses them).

Every command checks its arguments and its output before any work, loads the network, runs the one
engine, writes atomically and reports in a line or two on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filterviz.core.network import Network
from filterviz.errors import FilterIndexError, SettingError, printable
from filterviz.progress import count_of


class UsageError(SettingError):
    """A malformed command-line value (filter list, size)."""


def parse_filters(text: str, network: Network, layer: str) -> list[int]:
    """``"0-19"``, ``"3,7,10-12"`` or ``"all"`` -> filter indices of ``layer``, each checked for range."""
    channels = network.layer(layer).channels
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


def parse_layers(text: str, network: Network) -> list[str] | None:
    """``"all"`` -> None (every layer a sweep draws); ``"block1_conv2,block4_conv1"`` -> those layers,
    each checked; an empty name (``","``, ``"a,,b"``) is an error, never "all"."""
    if text.strip() == "all":
        return None
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise UsageError(f"bad layer list {text!r}: name each layer, e.g. block1_conv2,block4_conv1, or all")
    return [network.layer(name).name for name in names]


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


def is_model_file(model: str) -> bool:
    """Whether ``--model`` names a Keras model file rather than a built-in network: a ``.keras`` path.
    A built-in's name is the built-in even where a file of that name lies in the current folder (say
    ``./vgg16`` for the file)."""
    from filterviz.networks import BUILTIN

    if model in BUILTIN:
        return False
    return model.lower().endswith(".keras") or Path(model).is_file()


def load_network(args: argparse.Namespace, *, weights: bool = True) -> tuple[Network, Any]:
    """The network ``--model`` names and, with ``weights``, its params (``--weights`` for a built-in).

    A command asks first for the network alone, to check its settings. A factory's or Keras model is made
    once, weights and all, and kept on ``args``: a factory is the user's code, and runs once.
    """
    from filterviz.networks import get_network
    from filterviz.networks.torch_models import is_torch_spec

    if getattr(args, "loaded_model", None) is not None:
        return args.loaded_model
    torch_spec = is_torch_spec(args.model) and not is_model_file(args.model)
    if getattr(args, "channels", 3) != 3 and not torch_spec:
        raise UsageError(
            "--channels is for a PyTorch model: a Keras model's input and the built-ins' say theirs"
        )
    if torch_spec:
        from filterviz.networks.pytorch import from_torch
        from filterviz.networks.torch_models import torch_model

        module = torch_model(args.model, getattr(args, "weights", None), pretrained=weights)
        loaded = from_torch(module, name=args.model, channels=getattr(args, "channels", 3))
        if weights or args.model.partition(":")[0] not in ("torchvision", "timm"):
            args.loaded_model = loaded  # torchvision's and timm's published weights only when asked for
        return loaded
    if is_model_file(args.model):
        from filterviz.networks.external import from_keras

        if getattr(args, "weights", None):
            raise UsageError("a .keras model file carries its own weights: drop --weights")
        args.loaded_model = from_keras(args.model)
        return args.loaded_model
    chosen = get_network(args.model)
    if not weights:
        return chosen, None
    from filterviz.networks.weights import load_weights

    return chosen, load_weights(getattr(args, "weights", None), network=chosen)


def use_compilation_cache(args: argparse.Namespace) -> None:
    """Keep compiled programs on disk (unless ``--no-compile-cache``); a cache that cannot be made only
    costs time: warn and go on."""
    if args.no_compile_cache:
        return
    from filterviz.errors import OutputError
    from filterviz.runtime import enable_compilation_cache

    try:
        enable_compilation_cache()
    except OutputError as error:
        print(f"filterviz: warning: {error}; compiling without a cache", file=sys.stderr)


def method_from_arguments(args: argparse.Namespace):
    """The :class:`filterviz.Method` the command line asks for: a preset, then each knob given."""
    from filterviz.core.methods import Octaves, Optimizer, get_method
    from filterviz.core.parameterizations import PARAMETERIZATIONS
    from filterviz.core.transforms import TRANSFORM_SETS

    method = get_method(args.method, precision=args.precision)
    settings = {}
    if args.steps is not None:
        settings["steps"] = args.steps
    if args.param is not None:
        settings["parameterization"] = PARAMETERIZATIONS[args.param]()
    if args.preprocess is not None:
        settings["preprocessing"] = args.preprocess
    if args.transforms is not None:
        settings["transforms"] = TRANSFORM_SETS[args.transforms]
    if getattr(args, "view", None) is not None:
        settings["view"] = args.view
    if getattr(args, "spectrum", None) is not None:
        settings["parameterization"] = _with_spectrum(
            settings.get("parameterization", method.parameterization), args.spectrum
        )
    if getattr(args, "images_per_filter", None) is not None:
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


def _with_spectrum(parameterization, spectrum: str):
    # --spectrum: maco's magnitude, a name or a file, read when the method is resolved.
    from filterviz.core.parameterizations import Maco

    if not isinstance(parameterization, Maco):
        raise SettingError("--spectrum is maco's magnitude: use it with --method maco (or --param maco)")
    return dataclasses.replace(parameterization, spectrum=None if spectrum == "1/f" else spectrum)


def spectrum(args: argparse.Namespace) -> None:
    """``filterviz spectrum IMAGES --out F``: the photos' mean magnitude spectrum, for ``--spectrum F``."""
    from filterviz.io.spectrum import check_spectrum_path, compute_spectrum, save_spectrum

    check_spectrum_path(args.out)
    computed, used = compute_spectrum(args.images, size=args.size)
    save_spectrum(computed, args.out)
    if not args.quiet:
        print(f"filterviz: spectrum of {used} photos at {args.size}x{args.size} written to {args.out}")


def shared_start(method, seed: int, height: int, width: int):
    """The notebook's start: one grey noise image for every filter (pixel methods without octaves);
    None where each filter draws its own start from its key."""

    from filterviz.core.engine import seed_key
    from filterviz.core.parameterizations import Pixels
    from filterviz.core.pictures import random_image

    if method.octaves is None and method.parameterization == Pixels():
        return random_image(seed_key(seed), height, width)  # the key made on the host: no program
    return None


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


# ----------------------------------------------------------------------------------------------------
# The commands.


def layers(args: argparse.Namespace) -> None:
    network, _ = load_network(args, weights=False)
    # A model's own layer names may hold terminal escapes or newlines: each is shown as one line of text.
    width = max(len(printable(layer.name)) for layer in network.layers) + 2
    for layer in network.layers:
        try:
            network.minimum_size(layer.name)
            drawn = "" if layer.visual else "  (not swept by default)"
        except SettingError:
            drawn = "  (cannot be drawn: no output at any input size)"
        filters = count_of(layer.channels, "filter")
        print(f"{printable(layer.name):<{width}}{layer.kind:<20}{filters:>13}{drawn}")


def summary(args: argparse.Namespace) -> None:
    network, _ = load_network(args, weights=False)
    height, width = parse_size(args.size) if args.size else (None, None)
    print(network.summary(height, width))


def filters(args: argparse.Namespace) -> None:

    from filterviz.core.ascent_checks import check_method_size
    from filterviz.core.objectives import channel, diversity, neuron
    from filterviz.draw.rendering import render
    from filterviz.io.files import FIGURE_FORMATS, check_writable
    from filterviz.io.plots import filter_grid, save_figure

    network, _ = load_network(args, weights=False)
    layer = network.layer(args.layer).name
    chosen = parse_filters(args.filters, network, layer)
    height, width = parse_size(args.size)
    method = method_from_arguments(args)
    check_method_size(network, method, layer, height, width)
    check_writable(args.out, FIGURE_FORMATS)
    if args.gif:
        check_writable(args.gif, {".gif": "GIF"})
    use_compilation_cache(args)
    network, params = load_network(args)
    began = time.perf_counter()
    objective = channel(layer, chosen) if args.objective == "channel" else neuron(layer, chosen)
    if args.diversity:
        objective = objective + args.diversity * diversity(layer)
    result = render(
        params,
        objective,
        network=network,
        method=method,
        size=(height, width),
        seed=args.seed,
        start=shared_start(method, args.seed, height, width),
        batch_size=args.batch_size,
        frame_every=args.frame_every if args.gif else None,
        progress=False if args.quiet else None,
    )
    count = method.images_per_filter
    pictures = result.pictures.reshape(-1, height, width, result.pictures.shape[-1])  # RGB or RGBA
    activations = result.activations
    if args.gif:
        _save_animation(args, result.frames, [str(f) for f in chosen for _ in range(count)])
    seconds = time.perf_counter() - began
    pictures, labels = _grid_cells(args, pictures, chosen, activations, count)
    figure = filter_grid(pictures, labels, columns=args.columns, title=f"{layer} ({method.name})")
    save_figure(figure, args.out)
    if not args.quiet:
        print(
            f"wrote {args.out}: {count_of(len(chosen), 'filter')} of {layer}, {height}x{width}, "
            f"{method.name} method, {count_of(method.steps, 'step')} in {seconds:.1f} s"
            + (f"; animation: {args.gif}" if args.gif else ""),
            file=sys.stderr,
        )
    hint = stall_hint(layer, list(activations), method.name)
    if hint:
        print(f"filterviz: {hint}", file=sys.stderr)


def _save_animation(args: argparse.Namespace, frames: Any, tiles: list[str]) -> None:
    """The ascent as an animated GIF: each frame a contact sheet of every picture."""
    import numpy as np

    from filterviz.io.files import save_gif
    from filterviz.sweeps.atlas import contact_sheet

    height = frames.shape[-3]
    frames = frames.reshape(frames.shape[0], -1, *frames.shape[-3:])
    sheets = [contact_sheet(frame, tiles, columns=args.columns, tile=min(128, height)) for frame in frames]
    save_gif(np.stack(sheets), args.gif)


def _grid_cells(
    args: argparse.Namespace, pictures: Any, chosen: list[int], activations: Any, count: int
) -> tuple[Any, list[str]]:
    """The pictures and labels of the grid: each labelled with its filter and the activation the filter
    reached (its K images share the objective's value); with ``--top``, the strongest filters first."""
    import numpy as np

    from filterviz.io.plots import filter_labels

    labels = [
        label + (f" #{k}" if count > 1 else "")
        for label in filter_labels(chosen, activations)
        for k in range(count)
    ]
    if args.top:
        # The later Keras example's grid: the filters that reached the highest activation, strongest first.
        order = np.argsort(-np.nan_to_num(activations, nan=-np.inf), kind="stable")[: args.top]
        rows = [row * count + k for row in order for k in range(count)]
        pictures, labels = pictures[rows], [labels[r] for r in rows]
    return pictures, labels


def dream(args: argparse.Namespace) -> None:
    import numpy as np

    from filterviz.core.methods import NOTEBOOK_STEP_SIZE, Method, Octaves, Optimizer
    from filterviz.core.objectives import channel, deepdream
    from filterviz.core.pictures import as_image
    from filterviz.draw.rendering import render
    from filterviz.io.files import (
        ARRAY_FORMATS,
        PICTURE_FORMATS,
        atomic_write,
        check_writable,
        encode_npy,
        save_picture,
    )
    from filterviz.io.photos import load_image

    network, _ = load_network(args, weights=False)
    layer = network.layer(args.layer or network.visual_layers[-1]).name
    (filter_index,) = parse_filters(str(args.filter), network, layer)
    step_size = NOTEBOOK_STEP_SIZE if args.step_size is None else args.step_size
    check_writable(args.out, {**PICTURE_FORMATS, **ARRAY_FORMATS})
    photo = load_image(args.image, max_pixels=args.max_pixels)
    use_compilation_cache(args)
    network, params = load_network(args)
    began = time.perf_counter()
    # The notebook's step on the photo; with octaves, as the Keras deep dream example: ascend a shrunk
    # photo, grow it, put back the detail shrinking lost, ascend again.
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
    result = render(
        params, objective, network=network, method=method, start=photo, progress=False if args.quiet else None
    )
    dreamed = np.asarray(result.pixels[0, 0])
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
