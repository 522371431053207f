"""Networks: the built-in ones (VGG16, VGG19, ResNet50 in Flax, on Keras' weights), the import of a
user's own Keras or Flax model, and the reading and fetching of weights.

Each module here builds :class:`filterviz.core.network.Network` values; the type knows none of them.
:data:`BUILTIN` is the one table of built-in names.
"""

from __future__ import annotations

from filterviz.core.network import Network
from filterviz.errors import SettingError
from filterviz.networks.resnet import RESNET50
from filterviz.networks.vgg import VGG16, VGG19

__all__ = ["BUILTIN", "RESNET50", "VGG16", "VGG19", "get_network"]

BUILTIN: dict[str, Network] = {"vgg16": VGG16, "vgg19": VGG19, "resnet50": RESNET50}
"""The built-in networks by name; each is one value, so its compiled programs are shared."""


def get_network(name: str | Network = "vgg16") -> Network:
    """A built-in network by name (``"vgg16"``, ``"vgg19"``, ``"resnet50"``); a network is returned as is.

    >>> get_network("vgg16").visual_layers[:2]
    ('block1_conv1', 'block1_conv2')
    """
    if isinstance(name, Network):
        return name
    if not isinstance(name, str) or name not in BUILTIN:
        raise SettingError(f"unknown network {name!r}; built in: {', '.join(sorted(BUILTIN))}")
    return BUILTIN[name]
