"""Concepts of a layer: a dictionary learned over its activation vectors on a folder of photos, each concept
drawn by feature visualization beside its strongest dataset patches.

Four stages, each resumable in the output folder:

1. **collect** the layer's vectors at every position of every photo (or ``positions`` per photo), in
   shards on disk (:mod:`filterviz.concept_atlases.collect`);
2. **fit** the dictionary on minibatches streamed from the shards, an eighth of the images held out to
   measure it, and a second seed to measure its stability (:mod:`filterviz.concept_atlases.fit`);
3. **read** every vector once more: each concept's frequency, importance, class mix and strongest
   vectors, exact over the folder (:mod:`filterviz.concept_atlases.measures`);
4. **draw** every concept through the ``concept`` objective, chunks of concepts through one compiled
   program, and crop its strongest vectors' patches from their photos.

``concepts.json`` records the settings and the results, ``dictionary.safetensors`` the dictionary (with
its settings in ``dictionary.json``), ``concepts.html`` is the page.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from filterviz.concept_atlases.collect import collect_vectors
from filterviz.concept_atlases.fit import fit as fit_dictionary
from filterviz.concept_atlases.heatmaps import concept_maps, heatmap, heatmap_path
from filterviz.concept_atlases.measures import (
    Usage,
    concept_map,
    held_out_measures,
    nearest_concepts,
    picture_measures,
    split_rows,
    usage,
)
from filterviz.concept_atlases.page import write_page
from filterviz.core import dictionaries as dl
from filterviz.core.checks import check_count, check_params, check_seed
from filterviz.core.hits import field_at, receptive_field
from filterviz.core.methods import Method, get_method
from filterviz.core.network import Network, Params
from filterviz.core.objectives import Objective, concept
from filterviz.draw.notebook import activations as layer_activations
from filterviz.errors import ImageError, OutputError
from filterviz.io.files import atomic_write, check_no_links, encode_png, output_path, written_by_filterviz
from filterviz.io.photos import IMAGE_SUFFIXES, check_fit, find_images, images_digest, load_fitted, load_image
from filterviz.io.tensors import encode_safetensors
from filterviz.jobs.drawing import draw_pictures
from filterviz.jobs.folder import FolderLock, read_record, settings_differences, write_ours
from filterviz.jobs.multihost import on_first, together
from filterviz.jobs.streaming import Reading
from filterviz.networks import get_network
from filterviz.networks.weights import content_digest
from filterviz.progress import wanted

RECORD = "concepts.json"
PATCHES = 6


class Concepts(NamedTuple):
    """What :func:`concepts` returns.

    Attributes:
      layer: the layer; dictionary: its settings; weights: the fitted weights.
      directions: ``float32[K, C]`` each concept's unit direction in the layer's activation space.
      vectors, biases: ``float32[K, C]``, ``float32[K]``: a concept's code is ``relu(a @ v + b)``.
      measures: held-out unexplained variance, mean L0, dead fraction; and the stability (the
        Hungarian-matched cosine between two seeds' dictionaries), where measured; how well the pictures
        show their concepts (``pictures_own_code_largest``, ``pictures_above_best_vector``).
      usage: each concept's frequency, importance, class mix and strongest vectors.
      order: the concepts, most important first. activations: ``float32[K]`` each picture's code.
      page: the ``concepts.html`` written.
    """

    layer: str
    dictionary: dl.Dictionary
    weights: dl.Weights
    directions: np.ndarray
    vectors: np.ndarray
    biases: np.ndarray
    measures: dict[str, float]
    usage: Usage
    order: np.ndarray
    activations: np.ndarray
    page: Path

    def objective(self, index: Any) -> Objective:
        """The ``concept`` objective of concept(s) ``index``: an int, or a sequence for a batch."""
        rows = np.asarray(index)
        return concept(self.layer, self.vectors[rows], self.biases[rows])


def _classes(paths: list[str]) -> tuple[list[str], np.ndarray]:
    # Each image's class: its first subfolder ("" for an image at the top of the folder).
    names = [path.split("/")[0] if "/" in path else "" for path in paths]
    classes = sorted(set(names))
    return classes, np.array([classes.index(name) for name in names], np.int64)


def _check_folder(folder: Path, settings: dict) -> None:
    # A folder of other concepts, or one whose record filterviz did not write, is never written over.
    for parts in ((), ("pictures",), ("patches",), ("heatmaps",), ("vectors",)):
        path = check_no_links(folder, *parts)
        if os.path.lexists(path) and not path.is_dir():
            raise OutputError(path, "is not a folder; filterviz writes a folder there: use another --out")
    folder.mkdir(parents=True, exist_ok=True)
    previous = read_record(folder / RECORD)
    if previous is None and any(
        os.path.lexists(folder / name) for name in ("vectors", "dictionary.safetensors")
    ):
        raise OutputError(folder, "holds files of concepts filterviz did not record; use another --out")
    if previous is not None and previous.get("settings") != settings:
        differing = "; ".join(settings_differences(previous.get("settings"), settings)[:6])
        raise OutputError(folder, f"holds concepts of other settings ({differing}); use another --out")


def _save_dictionary(folder: Path, dictionary: dl.Dictionary, weights: dl.Weights, found: dict) -> None:
    # The dictionary in a form other tools read: named tensors, and its settings and measures as JSON.
    tensors = {
        "directions": found["directions"],
        "encoder_vectors": found["vectors"],
        "encoder_biases": found["biases"],
    }
    for group in ("trained", "fixed"):
        tensors |= {f"{group}.{name}": np.asarray(value) for name, value in weights[group].items()}
    about = {"dictionary": dataclasses.asdict(dictionary), **found["about"]}
    atomic_write(
        folder / "dictionary.safetensors", encode_safetensors(tensors, {"filterviz": json.dumps(about)})
    )
    atomic_write(folder / "dictionary.json", json.dumps(about, indent=1).encode())


def _draw(
    params: Params,
    net: Network,
    found: Concepts,
    method: Method,
    folder: Path,
    size: int,
    seed: int,
    batch_size: int,
    shown: bool,
) -> np.ndarray:
    # Every concept's picture, a chunk of concepts per call of one compiled program; kept if drawn before.
    (folder / "pictures").mkdir(exist_ok=True)
    return draw_pictures(
        params,
        net,
        found.objective,
        [int(k) for k in found.order],
        len(found.order),
        lambda k: folder / f"pictures/concept-{k}.png",
        lambda k: k,  # a concept's key is its index
        method,
        folder,
        size=size,
        seed=seed,
        chunk=batch_size,
        shown=shown,
        noun="concept",
        title="drawing the concepts",
    )


def _patches(
    root: Path,
    paths: list[str],
    folder: Path,
    net: Network,
    params: Params,
    layer: str,
    places: np.ndarray,
    vectors: list[int],
    size: int,
    fit: str,
) -> None:
    # The receptive field of each strongest vector, cropped from its photo, as patches/<vector>.png.
    box, stride = receptive_field(net, params, layer)
    (folder / "patches").mkdir(exist_ok=True)
    for vector, (image, y, x) in zip(vectors, places, strict=True):
        target = folder / f"patches/{vector}.png"
        if not written_by_filterviz(target):
            photo = load_fitted(root / paths[image], size, fit)
            top, left, bottom, right = field_at(box, stride, int(y), int(x), size)
            write_ours(target, encode_png(photo[top:bottom, left:right]))


def _heatmaps(root: Path, paths: list[str], folder: Path, maps: dict, size: int, fit: str) -> None:
    # Each concept's codes over the photo of its strongest vector, laid over that photo.
    (folder / "heatmaps").mkdir(exist_ok=True)
    for index, (image, grid) in maps.items():
        target = folder / heatmap_path(index)
        if not written_by_filterviz(target):
            write_ours(target, encode_png(heatmap(load_fitted(root / paths[image], size, fit), grid)))


def _concept_codes(activations: np.ndarray, vectors: np.ndarray, biases: np.ndarray) -> np.ndarray:
    # Every concept's code, relu(a @ v + b), at each vector of `activations [..., C]`: ``[..., K]``.
    return np.maximum(activations @ vectors.T + biases, 0)


def _pictures_shown(
    params: Params, net: Network, found: Concepts, folder: Path, source: Any, batch_size: int
) -> dict[str, float]:
    # Every concept's code on every concept's picture, as written (the PNGs a user sees), then how many
    # pictures show their own concept best, and beat its strongest dataset vector.
    vectors, biases = found.vectors, found.biases
    count = len(vectors)
    codes = np.zeros((count, count), np.float32)
    for first in range(0, count, batch_size):
        rows = range(first, min(first + batch_size, count))
        pictures = np.stack([load_image(folder / f"pictures/concept-{k}.png") for k in rows])
        feature = np.asarray(layer_activations(params, pictures, found.layer, network=net))
        codes[first : first + len(rows)] = _concept_codes(feature, vectors, biases).mean(axis=(1, 2))
    strongest = source.rows(np.maximum(found.usage.top[:, 0], 0))  # [K, C], concept k's in row k
    patch = np.diagonal(_concept_codes(strongest, vectors, biases))
    return picture_measures(codes, patch, found.usage.top[:, 0] >= 0)


def _card(
    index: int, used: Usage, classes: list[str], nearest: np.ndarray, activation: float, place: np.ndarray
) -> dict:
    # What the record and the page say of one concept.
    mix = sorted(enumerate(used.classes[index]), key=lambda pair: -pair[1])
    return {
        "index": index,
        "picture": f"pictures/concept-{index}.png",
        "heatmap": str(heatmap_path(index)) if used.top[index, 0] >= 0 else None,
        "frequency": float(used.frequency[index]),
        "importance": float(used.mean_code[index]),
        "patches": [f"patches/{v}.png" for v in used.top[index] if v >= 0],
        "classes": [[classes[j], int(n)] for j, n in mix if n],
        "nearest": [int(other) for other in nearest],
        "map": [float(place[0]), float(place[1])],
        "activation": None if np.isnan(activation) else float(activation),
    }


def _fitted(dictionary: dl.Dictionary, weights: dl.Weights) -> dict[str, np.ndarray]:
    vectors, biases = dl.concept_vectors(dictionary, weights)
    return {
        "directions": np.asarray(dl.directions(dictionary, weights)),
        "vectors": np.asarray(vectors),
        "biases": np.asarray(biases),
    }


def concepts(
    params: Params,
    images: str | os.PathLike[str],
    layer: str,
    *,
    out: str | os.PathLike[str],
    network: str | Network = "vgg16",
    kind: str = "topk",
    concepts: int = 64,
    active: int = 8,
    fit_steps: int = 2000,
    fit_batch_size: int = 4096,
    positions: int | None = None,
    image_size: int = 224,
    fit: str = "crop",
    method: str | Method = "lucid",
    size: int = 128,
    seed: int = 0,
    stability: bool = True,
    image_batch_size: int = 32,
    batch_size: int = 16,
    progress: bool | None = None,
    **settings: Any,
) -> Concepts:
    """Learn a dictionary of ``concepts`` over ``layer``'s activations on the photos of ``images``, and
    draw each concept beside its dataset patches, into the folder ``out``.

    Args:
      params: the network's parameters; network: any network (built in, Keras, Flax, PyTorch).
      images: a folder of JPEG/PNG photos, searched recursively; a photo's first subfolder is its class.
      layer: the layer whose activation vectors are factorised.
      out: the output folder (``concepts.html``, ``dictionary.safetensors``, the pictures, patches and
        vector shards); run again with the same settings to resume.
      kind: ``topk``, ``batchtopk``, ``jumprelu`` or ``archetypal`` (sparse autoencoders), or ``nmf``.
      concepts: the dictionary's size K; active: concepts active per vector (the autoencoders; for
        BatchTopK on average over a minibatch).
      fit_steps: minibatches of ``fit_batch_size`` vectors the fit takes.
      positions: vectors per photo at seeded positions; None (default) takes every position.
      image_size, fit: the side photos are fed at, and how they are fitted (``crop`` or ``resize``).
      method, size, settings: how each concept is drawn (default ``lucid``, 128 pixels; the method's
        settings, ``steps`` among them, as in :func:`filterviz.render`).
      seed: positions, held-out images, the fit's order and start, and the pictures.
      stability: fit a second dictionary (seed + 1) and record the matched cosine between the two.
      image_batch_size: photos per batch of the collect pass; batch_size: concepts per compiled call.

    Returns :class:`Concepts`. Raises :class:`SettingError` for settings that cannot work (``active``
    above ``concepts``, more concepts than vectors), :class:`ImageError` for a folder with no readable photo,
    :class:`OutputError` for an ``out`` that holds other concepts or files filterviz did not write.
    """
    net = get_network(network)
    spec = net.layer(layer)
    check_params(net, params)
    dictionary = dl.Dictionary(kind, concepts, active).check()
    for label, value, low in (
        ("fit_steps", fit_steps, 1),
        ("fit_batch_size", fit_batch_size, 1),
        ("image_size", image_size, net.minimum_size(spec.name)),
        ("size", size, 1),
        ("image_batch_size", image_batch_size, 1),
        ("batch_size", batch_size, 1),
    ):
        check_count(value, label, minimum=low)
    if positions is not None:
        check_count(positions, "positions", minimum=1)
    check_fit(fit)
    chosen = get_method(method, **settings)
    root, folder = Path(images), output_path(out)
    paths = find_images(root, leave_out=folder)
    if not paths:
        raise ImageError(root, f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
    record_settings = {
        "layer": spec.name, "network": net.name, "weights": content_digest(params, net), "images": paths,
        "images_digest": images_digest(root, paths), "positions": positions, "image_size": image_size,
        "fit": fit, "seed": check_seed(seed), "dictionary": dataclasses.asdict(dictionary),
        "fit_steps": fit_steps, "fit_batch_size": fit_batch_size, "stability": stability, "size": size,
        "method": json.dumps(chosen.describe(), sort_keys=True),
    }  # fmt: skip
    first = jax.process_index() == 0
    shown = wanted(progress) and first
    with contextlib.ExitStack() as stack:
        with together(folder):
            _check_folder(folder, record_settings)
            stack.enter_context(FolderLock(folder, "concepts", active=first))
            if first and read_record(folder / RECORD) is None:
                atomic_write(folder / RECORD, json.dumps({"settings": record_settings}).encode())
        reading = Reading(image_batch_size, image_size, fit, os.cpu_count() or 1)
        source = collect_vectors(
            net,
            params,
            spec.name,
            root,
            paths,
            reading,
            positions=positions,
            seed=seed,
            folder=folder,
            settings=record_settings,
            shown=shown,
        )
        dictionary.check(source.count)
        train, held = split_rows(source, len(paths), seed)
        fitting: dict[str, Any] = {"steps": fit_steps, "batch_size": fit_batch_size, "shown": shown}
        weights = fit_dictionary(
            dictionary, source, train, seed=seed, checkpoint=folder / "fit.safetensors", **fitting
        )
        measures = held_out_measures(dictionary, weights, source, held if len(held) else train)
        found = _fitted(dictionary, weights)
        if stability:
            other = fit_dictionary(
                dictionary,
                source,
                train,
                seed=seed + 1,
                checkpoint=folder / "fit-second-seed.safetensors",
                **fitting,
            )
            measures["stability"] = dl.matched_cosine(
                found["directions"], _fitted(dictionary, other)["directions"]
            )[0]
        classes, label_of_image = _classes(paths)
        used = usage(dictionary, weights, source, label_of_image, len(classes), PATCHES)
        order = np.argsort(-used.mean_code, kind="stable")
        result = Concepts(
            spec.name,
            dictionary,
            weights,
            found["directions"],
            found["vectors"],
            found["biases"],
            measures,
            used,
            order,
            np.zeros(0),
            folder / "concepts.html",
        )
        strongest = sorted({int(v) for v in used.top.reshape(-1) if v >= 0})
        about = {"layer": spec.name, "network": net.name, "measures": measures, "vectors": source.count}

        def write_files() -> None:
            _save_dictionary(folder, dictionary, weights, {**found, "about": about})
            _patches(
                root,
                paths,
                folder,
                net,
                params,
                spec.name,
                source.places(np.asarray(strongest, np.int64)),
                strongest,
                image_size,
                fit,
            )
            maps = concept_maps(dictionary, weights, source, used.top)
            _heatmaps(root, paths, folder, maps, image_size, fit)

        on_first(folder, write_files)
        activations = _draw(params, net, result, chosen, folder, size, seed, batch_size, shown)
        measures.update(_pictures_shown(params, net, result, folder, source, batch_size))
        nearest = nearest_concepts(found["directions"], 3)
        places = concept_map(found["directions"])
        cards = [_card(int(c), used, classes, nearest[c], activations[c], places[c]) for c in order]
        data = {**about, "kind": kind, "folder": root.name, "images": len(paths), "concepts": cards}

        def record_and_page() -> str:
            atomic_write(folder / RECORD, json.dumps({"settings": record_settings, **data}).encode())
            return str(write_page(folder, data))

        page = Path(on_first(folder, record_and_page))
    return result._replace(activations=activations, page=page)
