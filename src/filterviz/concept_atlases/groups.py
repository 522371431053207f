"""Neuron groups of one photo (Olah et al., "The Building Blocks of Interpretability", 2018): the layer's
activations at every position of the photo factorised by NMF into a few groups, each with a map of where
it is present, a picture drawn by feature visualization, and the photo with every group's map laid over
it in its own colour."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from filterviz.concept_atlases.fit import fit
from filterviz.concept_atlases.shards import InMemory
from filterviz.core import dictionaries as dl
from filterviz.core.checks import check_count, check_params
from filterviz.core.methods import Method
from filterviz.core.network import Network, Params, preprocess
from filterviz.core.objectives import concept
from filterviz.draw.rendering import render
from filterviz.errors import ImageError, SettingError
from filterviz.networks import get_network

SWEEPS = 300
"""HALS iterations of the factorisation: one photo's few hundred vectors converge well within them."""

_COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
     [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40]],
    np.float32,
)  # fmt: skip


class NeuronGroups(NamedTuple):
    """What :func:`neuron_groups` returns: ``maps float32[G, h, w]`` (each group's code at each position
    of the layer's map), ``directions float32[G, C]`` (unit), ``pictures uint8[G, S, S, 3]`` (each group
    drawn), ``activations float32[G]`` (their codes), and ``overlay uint8[H, W, 3]`` (the photo with the
    groups' maps in their colours, ``colours uint8[G, 3]``)."""

    maps: np.ndarray
    directions: np.ndarray
    pictures: np.ndarray
    activations: np.ndarray
    overlay: np.ndarray
    colours: np.ndarray


def neuron_groups(
    params: Params,
    image: np.ndarray,
    layer: str,
    groups: int = 6,
    *,
    network: str | Network = "vgg16",
    method: str | Method = "lucid",
    size: int = 128,
    seed: int = 0,
    **settings: Any,
) -> NeuronGroups:
    """The ``groups`` neuron groups of ``layer`` on ``image`` (``[H, W, 3]``, 0-255 RGB): see
    :class:`NeuronGroups`. The layer's activations must be non-negative (a ReLU's), as NMF needs;
    each group is drawn by ``method`` (and its ``settings``) at ``size`` pixels."""
    net = get_network(network)
    spec = net.layer(layer)
    check_params(net, params)
    check_count(groups, "groups", minimum=1, maximum=len(_COLOURS))
    photo = np.asarray(image, np.float32)
    if photo.ndim != 3 or photo.shape[-1] != 3:
        raise ImageError(None, f"a photo is [H, W, 3], got shape {list(photo.shape)}")
    fed = preprocess(jnp.asarray(photo[None]), net.preprocessing)
    activations = np.asarray(net.apply(params, fed, [spec.name])[spec.name][0])
    height, width, channels = activations.shape
    vectors = activations.reshape(-1, channels)
    if vectors.min() < 0:
        raise SettingError(f"{spec.name} has negative activations: NMF needs a layer after a ReLU")
    if len(vectors) < groups:
        raise SettingError(f"{groups} groups need at least as many positions; {spec.name} has {len(vectors)}")
    dictionary = dl.Dictionary("nmf", groups)
    weights = fit(
        dictionary,
        InMemory(vectors),
        np.arange(len(vectors)),
        steps=SWEEPS,
        batch_size=len(vectors),
        seed=seed,
    )
    codes = np.asarray(dl.encode(dictionary, weights, vectors))
    maps = codes.T.reshape(groups, height, width)
    vector, bias = dl.concept_vectors(dictionary, weights)
    drawn = render(
        params,
        concept(spec.name, vector, bias),
        network=net,
        method=method,
        size=size,
        seed=seed,
        progress=False,
        **settings,
    )
    colours = _COLOURS[:groups]
    return NeuronGroups(
        maps,
        np.asarray(dl.directions(dictionary, weights)),
        drawn.pictures[:, 0],
        np.asarray(drawn.activations),
        overlay(photo, maps, colours),
        colours.astype(np.uint8),
    )


def overlay(photo: np.ndarray, maps: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """``uint8[H, W, 3]``: the ``photo`` with ``maps [G, h, w]`` laid over it, each position in the
    colour (``colours [G, 3]``) of its strongest map, as strong as that map is there."""
    from PIL import Image

    height, width = photo.shape[:2]
    strongest = maps.argmax(0)
    strength = maps.max(0) / max(float(maps.max()), 1e-12)
    layer = colours[strongest] * strength[..., None]
    grown = np.asarray(
        Image.fromarray(layer.astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST), np.float32
    )
    alpha = np.asarray(
        Image.fromarray((255 * strength).astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    )
    alpha = 0.6 * alpha[..., None].astype(np.float32) / 255
    return np.clip((1 - alpha) * photo + alpha * grown, 0, 255).astype(np.uint8)
