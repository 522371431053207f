"""The same work in PyTorch, for the benchmarks: VGG16/VGG19 and ResNet50 built from filterviz's
parameters, and the notebook's and Lucid's ascents written as a PyTorch user would write them.

``precision`` is filterviz's: ``float32`` (no TF32 anywhere), ``tf32`` (TF32 convolutions and matmuls,
CUDA only) or ``bfloat16`` (autocast; the image stays float32).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np

from filterviz.core.network import IMAGENET_MEAN_BGR, Network, Params
from filterviz.core.parameterizations import _COLOR_MIX, frequency_magnitudes
from filterviz.networks.resnet import BN_EPSILON, STACKS


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _conv(params: Params, name: str, stride: int = 1, padding: int = 0):
    import torch

    kernel = np.asarray(params[name]["kernel"], np.float32)
    conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[0], stride, padding)
    conv.weight.data = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    conv.bias.data = torch.from_numpy(np.asarray(params[name]["bias"], np.float32).copy())
    return conv


def _vgg(network: Network, params: Params, layer: str):
    import torch

    layers = []
    for spec in network.layers[: network.order(layer) + 1]:
        if spec.kind == "Conv2D":
            layers += [_conv(params, spec.name, padding=1), torch.nn.ReLU()]
        else:
            layers.append(torch.nn.MaxPool2d(2))
    return torch.nn.Sequential(*layers)


def _resnet50(params: Params, layer: str):
    """Keras' ResNet50 up to ``layer`` (``conv1_relu``, ``pool1_pool`` or a block's ``_out``)."""
    import torch

    class FrozenBatchNorm(torch.nn.Module):
        def __init__(self, name: str):
            super().__init__()
            group = {key: np.asarray(value, np.float32) for key, value in params[name].items()}
            scale = group["gamma"] / np.sqrt(group["moving_variance"] + BN_EPSILON)
            shift = group["beta"] - group["moving_mean"] * scale
            self.register_buffer("scale", torch.from_numpy(scale.reshape(1, -1, 1, 1).copy()))
            self.register_buffer("shift", torch.from_numpy(shift.reshape(1, -1, 1, 1).copy()))

        def forward(self, x):
            return x * self.scale + self.shift

    class Block(torch.nn.Module):
        def __init__(self, name: str, stride: int, projection: bool):
            super().__init__()
            self.main = torch.nn.Sequential(
                _conv(params, f"{name}_1_conv", stride),
                FrozenBatchNorm(f"{name}_1_bn"),
                torch.nn.ReLU(),
                _conv(params, f"{name}_2_conv", padding=1),
                FrozenBatchNorm(f"{name}_2_bn"),
                torch.nn.ReLU(),
                _conv(params, f"{name}_3_conv"),
                FrozenBatchNorm(f"{name}_3_bn"),
            )
            self.shortcut = (
                torch.nn.Sequential(_conv(params, f"{name}_0_conv", stride), FrozenBatchNorm(f"{name}_0_bn"))
                if projection
                else torch.nn.Identity()
            )

        def forward(self, x):
            return torch.relu(self.shortcut(x) + self.main(x))

    modules = [
        torch.nn.ZeroPad2d(3),
        _conv(params, "conv1_conv", 2),
        FrozenBatchNorm("conv1_bn"),
        torch.nn.ReLU(),
    ]
    if layer != "conv1_relu":
        modules += [torch.nn.ZeroPad2d(1), torch.nn.MaxPool2d(3, 2)]
    if layer not in ("conv1_relu", "pool1_pool"):
        for stack, _, blocks, first_stride in STACKS:
            for block in range(1, blocks + 1):
                name = f"{stack}_block{block}"
                modules.append(Block(name, first_stride if block == 1 else 1, block == 1))
                if layer == f"{name}_out":
                    return torch.nn.Sequential(*modules)
        raise ValueError(
            f"the PyTorch ResNet50 stops at conv1_relu, pool1_pool or a block's _out, not {layer}"
        )
    return torch.nn.Sequential(*modules)


def torch_network(network: Network, params: Params, layer: str):
    """``network`` up to ``layer`` as a PyTorch module on the benchmark's device, NCHW, no gradients."""

    if network.name in ("vgg16", "vgg19"):
        module = _vgg(network, params, layer)
    elif network.name == "resnet50":
        module = _resnet50(params, layer)
    else:
        raise ValueError(f"no PyTorch version of {network.name}")
    module = module.eval().to(_device())
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


@contextlib.contextmanager
def _precision(precision: str) -> Iterator[None]:
    # TF32 is a process-wide switch in PyTorch: set it for this call only.
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _filter_means(module, inputs, filters, precision: str):
    import torch

    device = inputs.device.type
    which = torch.as_tensor(filters, device=inputs.device)
    rows = torch.arange(len(filters), device=inputs.device)
    with torch.autocast(device, torch.bfloat16, enabled=precision == "bfloat16"):
        return module(inputs)[rows, which].float().mean(dim=(1, 2))


def notebook_ascent(
    network: Network, params: Params, layer: str, precision: str = "float32"
) -> Callable[[list[int], np.ndarray, int, int], np.ndarray]:
    """The notebook's ascent in PyTorch: ``run(filters, start [H, W, 3], steps, batch_size) -> [N, H, W, 3]``:
    raw 0-255 input, ``image += g / (rms(g) + 1e-5)``, ``batch_size`` filters at a time."""
    import torch

    module = torch_network(network, params, layer)
    device = _device()

    def ascend(filters, starts, steps):
        images = torch.from_numpy(np.ascontiguousarray(starts.transpose(0, 3, 1, 2))).to(device)
        for _ in range(steps):
            images.requires_grad_(True)
            loss = _filter_means(module, images, filters, precision).sum()
            (gradient,) = torch.autograd.grad(loss, images)
            rms = gradient.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
            images = (images + gradient / (rms + 1e-5)).detach()
        if device == "cuda":
            torch.cuda.synchronize()
        return images.cpu().numpy().transpose(0, 2, 3, 1)

    def run(filters, start, steps, batch_size):
        starts = np.repeat(np.asarray(start, np.float32)[None], len(filters), axis=0)
        with _precision(precision):
            parts = [
                ascend(filters[i : i + batch_size], starts[i : i + batch_size], steps)
                for i in range(0, len(filters), batch_size)
            ]
        return np.concatenate(parts)

    return run


def lucid_ascent(
    network: Network, params: Params, layer: str, precision: str = "float32"
) -> Callable[[list[int], int, int, int], np.ndarray]:
    """Lucid's ``render_vis`` defaults in PyTorch, as a Lucent user runs them:
    ``run(filters, size, steps, batch_size) -> [N, size, size, 3]``. A 1/f Fourier image (sd 0.01,
    decorrelated colour, sigmoid), each step padded by 12, jittered by 8, scaled and rotated (one affine
    resampling), jittered by 4, caffe-preprocessed, Adam(0.05) on minus the filter's mean."""
    import torch
    import torch.nn.functional as functional

    module = torch_network(network, params, layer)
    device = _device()
    mix = torch.from_numpy(np.ascontiguousarray(_COLOR_MIX.T)).to(device)
    mean_bgr = torch.tensor(IMAGENET_MEAN_BGR, device=device).view(1, 3, 1, 1)
    scales = [1 + (i - 5) / 50 for i in range(11)]
    angles = list(range(-10, 11)) + [0] * 5

    def render(filters, size, steps):
        generator = torch.Generator(device=device).manual_seed(0)
        count = len(filters)
        frequencies = frequency_magnitudes(size, size)
        scale = 1.0 / np.maximum(frequencies, 1.0 / size) * np.sqrt(size * size)
        scale = torch.from_numpy(scale.astype(np.float32)).to(device)
        spectrum = 0.01 * torch.randn((count, 3, size, size // 2 + 1, 2), device=device, generator=generator)
        spectrum.requires_grad_(True)
        optimizer = torch.optim.Adam([spectrum], lr=0.05)
        for _ in range(steps):
            optimizer.zero_grad()
            spatial = torch.fft.irfft2(torch.view_as_complex(spectrum) * scale, s=(size, size)) / 4.0
            pixels = 255.0 * torch.sigmoid(torch.einsum("nchw,cd->ndhw", spatial, mix))
            x = functional.pad(pixels, (12, 12, 12, 12), value=127.5)
            dy, dx = torch.randint(0, 9, (2,), generator=generator, device=device).tolist()
            x = x[..., dy : dy + size + 16, dx : dx + size + 16]
            choice = torch.randint(0, len(scales), (1,), generator=generator, device=device).item()
            turn = torch.randint(0, len(angles), (1,), generator=generator, device=device).item()
            radians = math.radians(angles[turn])
            zoom = scales[choice]
            theta = torch.tensor(
                [
                    [math.cos(radians) / zoom, -math.sin(radians) / zoom, 0.0],
                    [math.sin(radians) / zoom, math.cos(radians) / zoom, 0.0],
                ],
                device=device,
            ).expand(count, 2, 3)
            grid = functional.affine_grid(theta, list(x.shape), align_corners=False)
            x = functional.grid_sample(x - 127.5, grid, align_corners=False) + 127.5
            dy, dx = torch.randint(0, 5, (2,), generator=generator, device=device).tolist()
            x = x[..., dy : dy + size + 12, dx : dx + size + 12]
            inputs = x.flip(1) - mean_bgr
            loss = -_filter_means(module, inputs, filters, precision).sum()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            spatial = torch.fft.irfft2(torch.view_as_complex(spectrum) * scale, s=(size, size)) / 4.0
            pixels = 255.0 * torch.sigmoid(torch.einsum("nchw,cd->ndhw", spatial, mix))
        if device == "cuda":
            torch.cuda.synchronize()
        return pixels.cpu().numpy().transpose(0, 2, 3, 1)

    def run(filters, size, steps, batch_size):
        with _precision(precision):
            parts = [
                render(filters[i : i + batch_size], size, steps) for i in range(0, len(filters), batch_size)
            ]
        return np.concatenate(parts)

    return run


def _vgg16_features():
    # torchvision's VGG16 ``features``; where torchvision is not installed (a bare GPU host), the same
    # layers at the same indices: 3x3 convolutions (padding 1) each with its ReLU, 2x2 max pools.
    try:
        import torchvision
    except ImportError:
        import torch

        layers, channels = [], 3
        for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
            if width == "M":
                layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU(inplace=True)]
                channels = width
        return torch.nn.Sequential(*layers)
    return torchvision.models.vgg16().features


def torchvision_vgg16(params: Params):
    """torchvision's ``vgg16`` (its ``features``: the 13 conv layers at indices 0, 2, 5 ... 28) carrying
    Keras' VGG16 weights ``params``, fed torchvision's input convention. filterviz's VGG16 layer
    ``blockB_convC`` is this module's ``features.I`` (:data:`TORCHVISION_VGG16_INDEX`)."""
    import torch

    from filterviz.core.network import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
    from filterviz.networks import VGG16

    features = _vgg16_features()
    convs = [spec.name for spec in VGG16.layers if spec.kind == "Conv2D"]
    for name, index in zip(convs, TORCHVISION_VGG16_INDEX.values(), strict=True):
        source = _conv(params, name, padding=1)
        features[index].weight.data, features[index].bias.data = source.weight.data, source.bias.data

    class Caffe(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = features
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD_RGB).view(1, 3, 1, 1))
            self.register_buffer("caffe_mean", torch.tensor(IMAGENET_MEAN_BGR).view(1, 3, 1, 1))

        def forward(self, x):
            rgb = (x * self.std + self.mean) * 255.0
            return self.features(rgb.flip(1) - self.caffe_mean)

    return Caffe().eval()


TORCHVISION_VGG16_INDEX = {
    "block1_conv1": 0, "block1_conv2": 2, "block2_conv1": 5, "block2_conv2": 7, "block3_conv1": 10,
    "block3_conv2": 12, "block3_conv3": 14, "block4_conv1": 17, "block4_conv2": 19, "block4_conv3": 21,
    "block5_conv1": 24, "block5_conv2": 26, "block5_conv3": 28,
}  # fmt: skip
"""filterviz's VGG16 conv layers (their ReLU outputs are ``features.I+1``) by torchvision's index."""
