"""PyTorch models drawn right or refused in one line: each layer judged on its own, the layout told from
one square probe, each output taken at the size fed, and user code that exits or weights with odd keys
refused. Tiny modules of one's own, so every case runs in seconds."""

from __future__ import annotations

import io
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn

import filterviz
from filterviz.errors import SettingError, WeightsError
from filterviz.io.plots import filter_grid
from filterviz.networks.torch_models import read_state_dict


def torch_last_output(module: nn.Module, layer: str, images: np.ndarray) -> np.ndarray:
    """``layer``'s output (its last call) in torch itself, for ``images [N, H, W, 3]``."""
    found = {}
    hook = dict(module.named_modules())[layer].register_forward_hook(
        lambda _m, _i, output: found.__setitem__("out", output.detach().clone())
    )
    try:
        with torch.no_grad():
            module(torch.from_numpy(images).permute(0, 3, 1, 2))
    finally:
        hook.remove()
    return found["out"].numpy()


def relative(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


class FixedSizeChannelsLast(nn.Module):
    """Swin's shape of things: runs at 224x224 only, and its stage computes channels-last maps."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 5, 4, stride=4)
        self.stage = nn.Linear(5, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (224, 224):
            raise ValueError(f"input size {tuple(x.shape[-2:])} != 224x224")
        return self.stage(self.embed(x).permute(0, 2, 3, 1))


def test_a_fixed_size_channels_last_map_is_read_as_channels_last():
    torch.manual_seed(0)
    module = FixedSizeChannelsLast().eval()
    network, params = filterviz.from_torch(module)
    assert network.layer("embed").channels == 5 and network.layer("stage").channels == 7
    images = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    found = network.apply(params, jnp.asarray(images), ["stage"])["stage"]
    expected = torch_last_output(module, "stage", images)  # already [N, h, w, C]
    assert found.shape == expected.shape == (1, 56, 56, 7)
    assert relative(found, expected) < 1e-5


class RepeatedBySize(nn.Module):
    """A block run more often the smaller the input (once at 224, eight times at 32)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for _ in range(max(1, 256 // x.shape[-1])):
            x = torch.tanh(self.block(x))
        return x


@pytest.mark.parametrize("side", [32, 64, 224])
def test_a_block_called_a_size_dependent_number_of_times_gives_its_last_call_at_every_size(side):
    torch.manual_seed(0)
    module = RepeatedBySize().eval()
    network, params = filterviz.from_torch(module)
    images = np.random.default_rng(side).normal(size=(2, side, side, 3)).astype(np.float32)
    found = network.apply(params, jnp.asarray(images), ["block"])["block"]
    expected = torch_last_output(module, "block", images).transpose(0, 2, 3, 1)
    assert relative(found, expected) < 1e-5


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Linear(width, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.mlp(self.norm(tokens))


class PatchEmbed(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, 32, stride=32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, tokens, width], no class token yet


class TinyViT(nn.Module):
    """A ViT with a class token: its patch embedding's tokens have none, its blocks' have one."""

    def __init__(self, prefix_tokens: object = 1) -> None:
        super().__init__()
        self.num_prefix_tokens = prefix_tokens
        self.patch_embed = PatchEmbed(8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 8))
        self.blocks = nn.Sequential(Block(8), Block(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], 1)
        return self.blocks(tokens)


@pytest.mark.parametrize("prefix_tokens", [1, None, "one"])
def test_each_token_layer_finds_its_own_patch_grid(prefix_tokens):
    torch.manual_seed(0)
    module = TinyViT(prefix_tokens).eval()
    network, params = filterviz.from_torch(module)
    names = [layer.name for layer in network.layers]
    assert {"patch_embed", "blocks.0", "blocks.1"} <= set(names)
    images = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    found = network.apply(params, jnp.asarray(images), ["patch_embed", "blocks.1"])
    embedded = torch_last_output(module, "patch_embed", images)
    assert relative(found["patch_embed"], embedded.reshape(1, 7, 7, 8)) < 1e-5
    blocks = torch_last_output(module, "blocks.1", images)[:, 1:]  # the class token left out
    assert relative(found["blocks.1"], blocks.reshape(1, 7, 7, 8)) < 1e-5
    drawn = filterviz.render(params, filterviz.channel("blocks.1", [0]), network=network, size=224, steps=1)
    assert np.isfinite(drawn.activations).all()


def test_a_module_on_the_meta_device_is_one_typed_line():
    with torch.device("meta"):
        module = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(SettingError, match="meta device"):
        filterviz.from_torch(module)


def test_a_state_dict_whose_keys_are_not_names_is_refused(tmp_path):
    path = tmp_path / "numbers.pt"
    torch.save({0: torch.zeros(2)}, path)
    with pytest.raises(WeightsError, match="keys"):
        read_state_dict(str(path))


@pytest.mark.parametrize("dtype", [torch.int8, torch.complex64])
def test_a_quantized_or_complex_checkpoint_is_refused_not_cast(tmp_path, dtype):
    from filterviz.networks.torch_models import _load_into

    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    state = {
        name: tensor.to(dtype) if name == "0.weight" else tensor
        for name, tensor in module.state_dict().items()
    }
    before = module[0].weight.detach().clone()
    with pytest.raises(
        WeightsError, match=f"holds {str(dtype)[6:]} values for 0.weight, a float32 parameter"
    ):
        _load_into(module, state, "cast.pt")
    assert torch.equal(module[0].weight, before)  # nothing loaded
    _load_into(module, module.state_dict(), "same.pt")  # float weights, int64 batch counts: loaded


@pytest.mark.parametrize("spec", ["sys:exit", "quits:make"])
def test_a_factory_that_exits_is_an_error_not_a_silent_success(tmp_path, spec):
    (tmp_path / "quits.py").write_text("import sys\n\n\ndef make():\n    sys.exit(0)\n")
    out = tmp_path / "grid.png"
    done = subprocess.run(
        [sys.executable, "-m", "filterviz", "filters", "conv", "--model", spec, "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "exited" in lines[0], done.stderr
    assert not out.exists()


def test_a_layer_name_is_shown_as_text_not_mathtext():
    pictures = np.zeros((2, 8, 8, 3), np.uint8)
    figure = filter_grid(pictures, ["$\\frac{$", "a_b^c"], title="blocks.$\\undefined$", columns=2)
    figure.savefig(io.BytesIO(), format="png")  # mathtext would fail here on the unbalanced commands


def test_layer_names_with_terminal_escapes_are_listed_as_text(monkeypatch, capsys):
    from filterviz.cli import commands, main

    module = nn.Sequential()
    module.add_module("\x1b[2Jred\nline", nn.Conv2d(3, 4, 3))
    network, _ = filterviz.from_torch(module.eval())
    monkeypatch.setattr(commands, "load_network", lambda args, weights=True: (network, None))
    for command in ("layers", "summary"):
        assert main([command]) == 0
        shown = capsys.readouterr().out
        assert "\x1b" not in shown and "\\x1b[2Jred\\nline" in shown, command


def test_a_timm_vit_with_dynamic_image_size_runs_and_matches_torch_off_its_own_size():
    # Off its own grid, timm resamples the position embeddings with antialiased bicubic interpolation.
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    module = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, dynamic_img_size=True, img_size=32, patch_size=8, depth=2
    ).eval()
    network, params = filterviz.from_torch(module)
    images = np.random.default_rng(0).normal(size=(1, 48, 40, 3)).astype(np.float32)
    found = network.apply(params, jnp.asarray(images), ["blocks.1"])["blocks.1"]
    tokens = torch_last_output(module, "blocks.1", images)[:, 1:]  # the class token left out
    assert relative(found, tokens.reshape(1, 6, 5, 192)) < 1e-4

    def strength(pixels):
        return network.apply(params, pixels, ["blocks.1"])["blocks.1"][..., 3].mean()

    gradient = np.asarray(jax.grad(strength)(jnp.asarray(images)))
    fed = torch.from_numpy(images).permute(0, 3, 1, 2).requires_grad_()
    captured = {}
    hook = module.blocks[1].register_forward_hook(lambda _m, _i, output: captured.__setitem__("out", output))
    try:
        module(fed)
    finally:
        hook.remove()
    captured["out"][:, 1:, 3].mean().backward()
    assert relative(gradient, fed.grad.permute(0, 2, 3, 1).numpy()) < 1e-4


def test_a_torch_op_that_torchax_cannot_run_is_named_in_the_one_line():
    from filterviz.networks.external import _probed

    def _aten_upsample_made_up(images):
        raise TypeError("'tuple' object is not callable")

    probe = jax.ShapeDtypeStruct((1, 3, 8, 8), jnp.float32)
    with pytest.raises(SettingError, match=r"shape \[1, 3, 8, 8\], in torch op upsample_made_up \(TypeError"):
        _probed(_aten_upsample_made_up, probe)


GRAYSCALE_FACTORY = """import os
import torch
from torch import nn


def make():
    with open("calls.txt", "a") as calls:
        calls.write("made\\n")
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1)).eval()
"""


def test_a_grayscale_factory_runs_once_drawn_with_channels_1_and_named_without(tmp_path, monkeypatch, capsys):
    from filterviz.cli import main

    (tmp_path / "gray.py").write_text(GRAYSCALE_FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    drawing = ["filters", "2", "--model", "gray:make", "--out", "g.png", "--steps", "2", "--size", "24"]
    assert main([*drawing, "--channels", "1", "--filters", "0-1", "--no-compile-cache", "--quiet"]) == 0
    assert (tmp_path / "g.png").exists()
    assert (tmp_path / "calls.txt").read_text() == "made\n"  # the user's factory ran once
    (tmp_path / "g.png").unlink()
    capsys.readouterr()
    assert main(drawing) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--channels 1" in lines[0], lines
    assert not (tmp_path / "g.png").exists()
    assert main(["layers", "--channels", "1"]) == 2
    assert "--channels is for a PyTorch model" in capsys.readouterr().err
