"""The command line and image I/O: outputs, and one clear line with exit status 2 for every user error."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import filterviz
from filterviz.cli import main
from filterviz.cli.commands import parse_filters
from filterviz.cli.parser import build_parser
from filterviz.io import photos

VGG16 = filterviz.network("vgg16")


def test_load_image_reads_any_format_as_rgb_floats(tmp_path, photo):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((5, 7), 200, np.uint8)).save(grey)
    image = filterviz.load_image(grey)
    assert image.shape == (5, 7, 3) and image.dtype == np.float32 and float(image.max()) == 200.0
    assert filterviz.load_image(photo).shape == (40, 52, 3)


def test_load_image_errors(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    for path, reason in [
        (tmp_path / "absent.png", "no such file"),
        (tmp_path, "is a directory"),
        (tmp_path / "broken.png", "not an image|cannot read"),
    ]:
        with pytest.raises(filterviz.ImageError, match=reason):
            filterviz.load_image(path)


def test_save_picture_is_atomic_and_reports_unwritable_places(tmp_path):
    picture = np.zeros((4, 4, 3), np.uint8)
    target = filterviz.save_picture(picture, tmp_path / "out.png")
    assert np.asarray(Image.open(target)).shape == (4, 4, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    with pytest.raises(filterviz.OutputError, match="does not exist"):
        filterviz.save_picture(picture, tmp_path / "missing" / "out.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(filterviz.OutputError, match="is a directory"):
        filterviz.save_picture(picture, tmp_path / "folder.png")


def test_parse_filters():
    assert parse_filters("0-3,7,10-11", VGG16, "block1_conv1") == [0, 1, 2, 3, 7, 10, 11]
    assert parse_filters("all", VGG16, "block1_conv1") == list(range(64))
    with pytest.raises(filterviz.FilterIndexError, match="0-63"):
        parse_filters("60-64", VGG16, "block1_conv1")
    with pytest.raises(filterviz.FilterVizError, match="bad filter list"):
        parse_filters("a-b", VGG16, "block1_conv1")


def test_layers_and_summary(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "block5_conv3" in out and "512 filters" in out and len(out.splitlines()) == 18
    assert main(["summary", "--size", "224"]) == 0
    out = capsys.readouterr().out
    assert "(None, 7, 7, 512)" in out and "Total params: 14,714,688" in out


def test_version_and_every_option_s_help_states_its_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"filterviz {filterviz.__version__}\n"
    assert filterviz.__version__[0].isdigit()  # the installed package's, not "unknown"
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    silent = [
        f"{name} {action.option_strings[0]}"
        for name, command in commands.choices.items()
        for action in command._actions
        if action.option_strings
        and action.help != argparse.SUPPRESS  # an old spelling, hidden
        and not (action.required or action.nargs == 0)  # a flag or a required option has no default
        and "default" not in (action.help or "")
    ]
    assert silent == []


def test_filters_writes_a_grid_with_the_real_weights(weights_path, tmp_path, capsys):
    out = tmp_path / "grid.png"
    status = main(
        [
            "filters",
            "block1_conv2",
            "--filters",
            "0-3",
            "--size",
            "32",
            "--steps",
            "3",
            "--weights",
            str(weights_path),
        ]
        + ["--out", str(out)]
    )
    assert status == 0
    assert Image.open(out).size[0] > 100
    assert "4 filters of block1_conv2" in capsys.readouterr().err


def test_dream_on_a_photo_of_any_size(weights_path, tmp_path, photo):
    out = tmp_path / "dream.png"
    status = main(
        ["dream", str(photo), "--layer", "block3_conv1", "--filter", "2", "--steps", "3"]
        + ["--weights", str(weights_path), "--out", str(out)]
    )
    assert status == 0
    dreamed = np.asarray(Image.open(out))
    original = np.asarray(Image.open(photo))
    assert dreamed.shape == original.shape
    assert np.abs(dreamed.astype(int) - original.astype(int)).mean() > 0.5


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            ["filters", "block6_conv1", "--out", "{tmp}/x.png"],
            "unknown layer 'block6_conv1' in vgg16; valid layers: block1",
        ),
        (["filters", "block1_conv1", "--filters", "0-64", "--out", "{tmp}/x.png"], "valid: 0-63"),
        (["dream", "{tmp}/absent.jpg", "--out", "{tmp}/x.png"], "absent.jpg: no such file"),
        (["filters", "block1_conv1", "--out", "{tmp}/no/such/folder/x.png"], "does not exist"),
        (
            ["filters", "block1_conv1", "--weights", "{tmp}/absent.h5", "--out", "{tmp}/x.png"],
            "absent.h5: no such",
        ),
        (["filters", "block1_conv1", "--size", "big", "--out", "{tmp}/x.png"], "bad size 'big'"),
        (["filters", "block1_conv1", "--steps", "-1", "--out", "{tmp}/x.png"], "--steps: -1 is out of range"),
    ],
)
def test_user_errors_exit_2_with_one_line(arguments, message, tmp_path, capsys):
    assert main([argument.replace("{tmp}", str(tmp_path)) for argument in arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("filterviz: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_a_real_process_reports_bad_weights_in_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    result = subprocess.run(
        [sys.executable, "-m", "filterviz", "filters", "block1_conv1", "--weights", str(bad)]
        + ["--out", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"filterviz: error: {bad}: not an HDF5 file"
    assert "Traceback" not in result.stderr and not (tmp_path / "x.png").exists()


def test_a_reader_that_stops_early_gets_no_traceback():
    process = subprocess.Popen(
        [sys.executable, "-m", "filterviz", "layers"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        bufsize=0,
    )
    process.stdout.close()  # as `| head -0` would
    error = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "Traceback" not in error


def test_resize_image_keeps_float_values_and_gives_the_asked_size():
    flat = np.full((40, 52, 3), 100.5, np.float32)
    resized = photos.resize_image(flat, 16, 20)
    assert resized.shape == (16, 20, 3) and resized.dtype == np.float32
    np.testing.assert_allclose(resized, 100.5, atol=1e-3)
