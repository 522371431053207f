"""Every bad input gets one clear line (CLI, exit 2) or a typed FilterVizError (API), before any work."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import filterviz
from filterviz.cli import main
from filterviz.core import methods
from filterviz.core.transforms import STANDARD, TRANSFORM_SETS
from support import write_legacy_h5

TINY = {"size": (16, 16), "steps": 1}


# ----------------------------------------------------------------------------------------------------
# Every bad input gets one clear line.


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["filters", "block5_conv3", "--size", "8"], "too small for block5_conv3"),
        (["filters", "block5_conv3", "--size", "100000"], "the largest that fits is about"),
        (["filters", "block1_conv1", "--seed", str(2**64)], "--seed"),
        (["filters", "block1_conv1", "--top", "0"], "--top"),
        (["filters", "block1_conv1", "--top", "-1"], "--top"),
        (["filters", "block1_conv1", "--columns", "0"], "--columns"),
        (["filters", "block1_conv1", "--step-size", "nan"], "--step-size"),
        (["filters", "block1_conv1", "--step-size", "inf"], "--step-size"),
        (["filters", "block1_conv1", "--octave-scale", "nan", "--method", "octaves"], "--octave-scale"),
        (["filters", "block3_conv1", "--method", "octaves", "--size", "20"], "octave stages"),
        (["sweep", "--cpu-devices", "-1"], "--cpu-devices"),
        (["sweep", "--seed", "-1"], "--seed"),
        (["top", "{tmp}", "--layer", "block1_conv1", "--count", "0"], "--count"),
    ],
)
def test_bad_numbers_and_sizes_exit_2_with_one_line(arguments, message, tmp_path, capsys):
    out = [] if arguments[0] == "top" else ["--out", str(tmp_path / "out.png")]
    if arguments[0] == "sweep":
        out = ["--out", str(tmp_path / "sweep")]
    assert main([a.replace("{tmp}", str(tmp_path)) for a in arguments] + out) == 2
    err = capsys.readouterr().err
    assert err.startswith("filterviz: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "sweep").exists()


def test_a_huge_size_is_refused_in_a_real_process_before_any_allocation(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "filterviz", "filters", "block1_conv1", "--size", "100000"]
        + ["--out", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "largest that fits" in done.stderr and "Traceback" not in done.stderr


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width x height``: a decompression bomb's shape."""
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def test_photos_are_read_defensively(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")
    began = time.monotonic()
    with pytest.raises(filterviz.ImageError, match="FIFO"):
        filterviz.load_image(tmp_path / "fifo.jpg")
    # Refused, not opened: opening would wait for a writer forever; a minute only says it did not wait.
    assert time.monotonic() - began < 60
    with pytest.raises(filterviz.ImageError, match="device"):
        filterviz.load_image("/dev/zero")
    with pytest.raises(filterviz.ImageError, match="decompression bomb"):
        filterviz.load_image(png_claiming(tmp_path / "bomb.png", 50_000, 50_000))
    with pytest.raises(filterviz.ImageError, match="megapixels"):
        filterviz.load_image(png_claiming(tmp_path / "big.png", 10_000, 10_000))
    Image.new("RGB", (40, 30)).save(tmp_path / "small.png")
    with pytest.raises(filterviz.ImageError, match="raise the limit"):
        filterviz.load_image(tmp_path / "small.png", max_pixels=1000)
    assert filterviz.load_image(tmp_path / "small.png", max_pixels=1200).shape == (30, 40, 3)
    # EXIF orientation 6: stored landscape, shown portrait (rotated 90 degrees clockwise).
    stored = np.zeros((30, 40, 3), np.uint8)
    stored[:, :20] = 255  # white on the stored left
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    upright = filterviz.load_image(tmp_path / "rotated.jpg")
    assert upright.shape == (40, 30, 3)
    assert upright[:15].mean() > 200 and upright[25:].mean() < 50  # the stored left is now the top


def test_the_cli_refuses_bad_photos_in_one_line(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo.jpg")
    png_claiming(tmp_path / "bomb.png", 50_000, 50_000)
    for photo, message in (("fifo.jpg", "FIFO"), ("bomb.png", "decompression bomb")):
        assert main(["dream", str(tmp_path / photo), "--out", str(tmp_path / "out.png")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    Image.new("RGB", (40, 30)).save(tmp_path / "photo.png")
    assert (
        main(["dream", str(tmp_path / "photo.png"), "--max-pixels", "100", "--out", str(tmp_path / "o.png")])
        == 2
    )
    assert "--max-pixels" in capsys.readouterr().err


def test_non_finite_numbers_are_refused(random_params, tmp_path):
    start = filterviz.random_image(jax.random.key(0), 16, 16)
    with pytest.raises(filterviz.SettingError, match="step size"):
        filterviz.ascend(random_params, "block1_conv1", [0], start, step_size=float("nan"))
    with pytest.raises(filterviz.ImageError, match="NaN"):
        filterviz.ascend(random_params, "block1_conv1", [0], start.at[3, 3, 0].set(np.inf))
    with pytest.raises(filterviz.SettingError, match="learning rate"):
        filterviz.render(
            random_params,
            filterviz.channel("block1_conv1", [0]),
            size=16,
            steps=1,
            optimizer=methods.Optimizer("adam", float("inf")),
        )
    with pytest.raises(filterviz.SettingError, match="seed"):
        filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], seed=2**64, **TINY)
    with pytest.raises(filterviz.SettingError, match="seed"):
        filterviz.render(random_params, filterviz.channel("block1_conv1", [0]), size=16, steps=1, seed=-1)
    broken = {layer: dict(arrays) for layer, arrays in random_params.items()}
    broken["block3_conv2"]["bias"] = np.asarray(broken["block3_conv2"]["bias"]).copy()
    broken["block3_conv2"]["bias"][7] = np.nan
    path = write_legacy_h5(tmp_path / "nan.h5", broken)
    with pytest.raises(filterviz.WeightsError, match="NaN or infinite values in block3_conv2 bias"):
        filterviz.load_weights(path)


def test_weights_of_another_network_are_refused_naming_it(random_params, tmp_path):
    import keras

    vgg19 = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    keras3 = tmp_path / "vgg19.weights.h5"
    vgg19.save_weights(keras3)
    legacy = {
        layer.name: {"kernel": layer.get_weights()[0], "bias": layer.get_weights()[1]}
        for layer in vgg19.layers
        if layer.get_weights()
    }
    names = [layer.name for layer in vgg19.layers[1:]]
    legacy_path = write_legacy_h5(tmp_path / "vgg19_legacy.h5", legacy, names)
    for path in (keras3, legacy_path):
        with pytest.raises(filterviz.WeightsError, match=r"vgg19's weights, not vgg16's.*block3_conv4"):
            filterviz.load_weights(path)


def test_an_unusable_compilation_cache_only_warns(weights_path, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(filterviz.OutputError, match="compilation cache"):
        filterviz.enable_compilation_cache(blocker / "cache")  # asked for by name: an error
    out = tmp_path / "grid.png"
    environment = {**os.environ, "FILTERVIZ_CACHE_DIR": str(blocker / "cache"), "JAX_PLATFORMS": "cpu"}
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "filterviz", "filters", "block1_conv1", "--size", "16", "--steps", "1"]
        + ["--filters", "0", "--weights", str(weights_path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    assert "filterviz: warning:" in done.stderr and "without a cache" in done.stderr and out.is_file()


# ----------------------------------------------------------------------------------------------------
# The API raises FilterVizError for bad arguments, never a bare TypeError, KeyError or compiler error.


@pytest.mark.parametrize(
    "call",
    [
        lambda p, s: filterviz.ascend(p, 42, [0], s),
        lambda p, s: filterviz.ascend(p, "block1_conv1", "abc", s),
        lambda p, s: filterviz.ascend(p, "block1_conv1", [0.5], s),
        lambda p, s: filterviz.ascend(p, "block1_conv1", [0], "not an image"),
        lambda p, s: filterviz.ascend(p, "block1_conv1", [0], s, steps=1.5),
        lambda p, s: filterviz.ascend(p, "block1_conv1", [0], s, steps="3"),
        lambda p, s: filterviz.ascend(p, "block1_conv1", [0], s, batch_size=0),
        lambda p, s: filterviz.ascend(p, "block1_conv1", [0], s, precision=["float32"]),
        lambda p, s: filterviz.layer_image(p, "block1_conv1", 64, s),
        lambda p, s: filterviz.activations(p, "pixels", "block1_conv1"),
        lambda p, s: filterviz.activations(p, np.zeros((1, 8, 8, 3)), "block5_pool"),
        lambda p, s: filterviz.render(p, "block1_conv1", size=16, steps=1),
        lambda p, s: filterviz.render(p, filterviz.channel("block1_conv1", [0]), size="big", steps=1),
        lambda p, s: filterviz.render(p, filterviz.neuron("block2_conv1", [0], y=40), size=16, steps=1),
        lambda p, s: filterviz.render(p, filterviz.channel("block1_conv1", [0]), size=16, steps=-2),
        lambda p, s: filterviz.render(p, filterviz.channel("block1_conv1", [0]), size=16, frame_every=0),
        lambda p, s: filterviz.channel("block1_conv1", "x"),
        lambda p, s: filterviz.neuron("block1_conv1", 0, y=-1),
        lambda p, s: filterviz.direction("block1_conv1", "x"),
        lambda p, s: filterviz.direction("block1_conv1", np.full(64, np.nan)),
        lambda p, s: filterviz.channel("block1_conv1", 0) * float("nan"),
        lambda p, s: filterviz.get_method("lucid", steps=-1),
        lambda p, s: filterviz.get_method("lucid", optimizer=methods.Optimizer("adam", "fast")),
        lambda p, s: filterviz.get_method("lucid", optimizer=methods.Optimizer("__init__", 0.1)),
        lambda p, s: filterviz.get_method("lucid", colour=True),
        lambda p, s: filterviz.load_weights(123),
        lambda p, s: filterviz.load_weights("/dev/null"),
        lambda p, s: filterviz.random_image(jax.random.key(0), -1, 4),
        lambda p, s: filterviz.as_image("not an image"),
        lambda p, s: filterviz.summary(-1, 4),
        lambda p, s: filterviz.sweep(p, "/tmp/never", layers=["block1_conv1"], filters={"blockX": [0]}),
        lambda p, s: filterviz.sweep(p, "/tmp/never", layers=[7]),
        lambda p, s: filterviz.sweep(p, "/tmp/never", layers=["block1_conv1"], size="big"),
        lambda p, s: filterviz.sweep(p, "/tmp/never", layers=["block5_conv3"], size=(8, 8)),
        lambda p, s: filterviz.top_filters("/tmp/never-a-sweep", "block1_conv1"),
        lambda p, s: filterviz.save_picture(np.zeros((1, 4, 4, 3), np.uint8), "/tmp/never.gif", frame_ms=0),
    ],
)
def test_bad_api_arguments_raise_filterviz_errors(random_params, call):
    start = filterviz.random_image(jax.random.key(0), 16, 16)
    with pytest.raises(filterviz.FilterVizError):
        call(random_params, start)
    assert not Path("/tmp/never").exists()


def test_a_layer_name_is_one_layer_not_its_letters(random_params, tmp_path):
    result = filterviz.sweep(random_params, tmp_path, layers="block1_conv1", filters=[0], **TINY)
    assert result.written == 1


def test_transforms_are_named_as_the_command_line_names_them_or_refused():
    assert filterviz.get_method("octaves", transforms="wide").transforms == TRANSFORM_SETS["wide"]
    assert filterviz.get_method("lucid", transforms=list(STANDARD)).transforms == STANDARD
    for bad in ("fancy", 3, ("not a transform",)):
        with pytest.raises(filterviz.SettingError, match="transforms"):
            filterviz.get_method("lucid", transforms=bad)
