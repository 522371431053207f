"""Part ``lucent``: a PyTorch user's model drawn by filterviz (``from_torch``, the Lucid method, one
compiled program) against Lucent on the same model, channels, steps and size, on the GPU: the comparison
of ``bench/lucent_bench.py``, each tool in its GPU default (TF32 convolutions for both: PyTorch's cuDNN
default, filterviz's ``precision="tf32"``).

filterviz needs torchax and Lucent needs torch-lucent and kornia: pure-Python packages that
``bench/gpu/carry_site.py`` copies into ``bench/gpu/site`` to travel with the run (put it on
``PYTHONPATH``). On a host without torchvision or IPython, Lucent's only uses of them get stand-ins,
recorded in the part: ``torchvision.transforms.Normalize`` (a mean and standard deviation per channel)
and ``IPython.display`` (for showing pictures, which the bench turns off). The VGG16 then has
torchvision's layers built by hand (``torch_reference``)."""

from __future__ import annotations

import importlib
import sys
import types

from gpu.harness import Config, Part, load_part


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:  # missing, or built for another torch
        return False
    return True


def _stand_ins() -> list[str]:
    # Lucent's two imports a bare GPU host may lack, where it lacks them: nothing else is replaced.
    import torch

    added = []
    if not _importable("torchvision.transforms"):

        class Normalize:
            def __init__(self, mean, std):
                self.mean = torch.tensor(mean).view(-1, 1, 1)
                self.std = torch.tensor(std).view(-1, 1, 1)

            def __call__(self, image):
                return (image - self.mean.to(image.device)) / self.std.to(image.device)

        transforms = types.ModuleType("torchvision.transforms")
        transforms.Normalize = Normalize
        package = types.ModuleType("torchvision")
        package.transforms = transforms
        sys.modules.update({"torchvision": package, "torchvision.transforms": transforms})
        added.append("torchvision.transforms.Normalize")
    if not _importable("IPython.display"):
        display = types.ModuleType("IPython.display")
        package = types.ModuleType("IPython")
        package.display = display
        sys.modules.update({"IPython": package, "IPython.display": display})
        added.append("IPython.display")
    return added


def part_lucent(part: Part, config: Config, weights: str) -> None:
    try:
        import torch
    except ImportError:
        part.record(note="PyTorch is not installed: no Lucent comparison")
        return
    import filterviz
    from filterviz.networks.pytorch import torch_modules
    from lucent_bench import compare_layer
    from torch_reference import torchvision_vgg16

    try:
        torch_modules()  # torch in the tested range, torchax importable
    except filterviz.FilterVizError as error:
        part.record(note=f"from_torch cannot run here: {error}")
        return
    module = torchvision_vgg16(filterviz.load_weights(weights))
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    network, torch_params = filterviz.from_torch(module, name="torchvision-vgg16")
    part.record(stand_ins=_stand_ins(), torch=torch.__version__)  # after the model: it needs no stand-in
    try:
        import lucent.optvis.render  # noqa: F401
    except ImportError as error:
        part.record(note=f"Lucent cannot be imported ({error}): run bench/gpu/carry_site.py and carry it")
        return
    cuda = torch.cuda.is_available()
    module = module.to("cuda" if cuda else "cpu")
    torch.backends.cudnn.benchmark = True  # Lucent's fastest convolutions
    peak = load_part(part.work, "env").get("peaks", {}).get("tf32" if cuda else "float32")
    channels = list(range(config.lucent_batch))
    part.record(
        batch=config.lucent_batch, steps=config.lucent_steps, size=config.lucent_size, cuda=cuda, rows=[]
    )
    for layer in config.lucent_layers:

        def compared(layer=layer):
            return compare_layer(
                module, network, torch_params, layer, channels, config.lucent_size, config.lucent_steps,
                peak or float("nan"), precision="tf32" if cuda else "float32",
            )  # fmt: skip

        row = part.guarded(f"lucent {layer}", compared, needs=10.0)
        if row is not None:
            part.record(rows=[*part.data["rows"], row])
