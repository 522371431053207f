"""PyTorch modules named on the command line (``torchvision:NAME``, ``timm:NAME``,
``package.module:factory``) and the ``state_dict`` files loaded into them, read without running code."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from typing import Any

from filterviz.errors import FilterVizError, SettingError, WeightsError, first_line
from filterviz.networks.pytorch import EXTRA, torch_modules

_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_torch_spec(model: str) -> bool:
    """Whether ``--model`` names a PyTorch module: ``torchvision:NAME``, ``timm:NAME`` or
    ``package.module:factory``."""
    return bool(_SPEC.match(model))


def torch_model(spec: str, weights: str | None = None, *, pretrained: bool = True) -> Any:
    """The ``nn.Module`` that ``spec`` names, with ``weights`` (a ``state_dict`` file, or ``.safetensors``)
    loaded into it; without ``weights``, torchvision's and timm's own published weights (downloaded and
    checked by them; random ones if not ``pretrained``) and a factory's as it makes them.

    ``package.module:factory`` imports ``package.module`` (from the current folder first, as uvicorn
    does) and calls ``factory()``, or takes it as is if it is a module. That runs the user's own code, by
    their choice; a weights file never does (see :func:`read_state_dict`).
    """
    torch, _ = torch_modules()
    source, _, entry = spec.partition(":")
    pretrained = pretrained and weights is None
    try:
        if source == "torchvision":
            import torchvision

            module = torchvision.models.get_model(entry, weights="DEFAULT" if pretrained else None)
        elif source == "timm":
            import timm

            module = timm.create_model(entry, pretrained=pretrained)
        else:
            module = _factory(source, entry)
    except FilterVizError:
        raise
    except SystemExit as exit_:  # the user's code called sys.exit: nothing was made, so nothing is drawn
        raise SettingError(
            f"{spec} exited (sys.exit({exit_.code!r})) instead of giving a torch.nn.Module"
        ) from None
    except ImportError as error:
        raise SettingError(f"{spec}: {first_line(error)}; {EXTRA}, and timm for timm models") from None
    except Exception as error:  # unknown names, downloads offline: the library's own reason, in one line
        hint = (
            "; pass --weights FILE to use a local state_dict"
            if pretrained and source in ("torchvision", "timm")
            else ""
        )
        raise SettingError(f"cannot make {spec} ({first_line(error)}){hint}") from None
    if not isinstance(module, torch.nn.Module):
        raise SettingError(f"{spec} gives a {type(module).__name__}, not a torch.nn.Module")
    if weights is not None:
        _load_into(module, read_state_dict(weights), weights)
    return module


def _factory(source: str, entry: str) -> Any:
    import importlib
    import os
    import sys

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found = importlib.import_module(source)
    except ModuleNotFoundError as error:
        raise SettingError(f"no module {error.name!r} to take {entry} from ({source}:{entry})") from None
    made = found
    for part in entry.split("."):
        if not hasattr(made, part):
            raise SettingError(f"module {source} has no {entry}")
        made = getattr(made, part)
    import torch

    return made if isinstance(made, torch.nn.Module) or not callable(made) else made()


def read_state_dict(path: str) -> dict[str, Any]:
    """The tensors of a ``state_dict`` file: ``.safetensors``, or a torch file read with
    ``torch.load(weights_only=True)``, which refuses any pickled object but tensors and plain containers;
    a checkpoint that wraps them (``{"state_dict": ...}`` or ``{"model": ...}``) is unwrapped."""
    import os

    import torch

    if not os.path.isfile(path):
        raise WeightsError(path, "not a weights file" if os.path.exists(path) else "no such weights file")
    state: Any
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = (
            "not a state_dict of tensors that torch.load(weights_only=True) accepts; refused: filterviz "
            "never runs code from a file"
        )
        raise WeightsError(path, reason) from None
    except Exception as error:  # truncated files, other formats
        reason = f"not a state_dict filterviz can read without running code ({first_line(error)})"
        raise WeightsError(path, reason) from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping) and len(state) <= 4:
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(path, "not a state_dict (a mapping of names to tensors)")
    if not all(isinstance(k, str) for k in state):
        raise WeightsError(path, "not a state_dict: its keys must be parameter names (strings)")
    return dict(state)


def _load_into(module: Any, state: Mapping[str, Any], path: str) -> None:
    # torch copies int8 into a float parameter, and drops a complex tensor's imaginary part, without a
    # word: a quantized or complex checkpoint would load as wrong weights.
    own = module.state_dict()
    for name, tensor in state.items():
        target = own.get(name)
        if target is not None and (
            tensor.is_complex() or (target.is_floating_point() and not tensor.is_floating_point())
        ):
            given, wanted = (str(t.dtype).removeprefix("torch.") for t in (tensor, target))
            raise WeightsError(
                path, f"holds {given} values for {name}, a {wanted} parameter: only floating-point "
                "weights are read (a quantized or complex checkpoint is refused)",
            )  # fmt: skip
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # torch lists every mismatched tensor on its own line: give the first
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise WeightsError(path, f"does not fit the module: {lines[min(1, len(lines) - 1)]}") from None
    problems = [
        f"{len(names)} {what} (first {names[0]})"
        for what, names in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
        if names
    ]
    if problems:
        raise WeightsError(path, f"does not fit the module: {'; '.join(problems)}")
