"""filterviz under hostile input: sweep folders it does not own, damaged and hand-edited sweeps, concurrent
runs, outputs that must not be clobbered, photos and numbers that must be refused in one line, and a
random sequence of kills, resumes, damage and concurrent starts that must end with every filter once."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
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
from filterviz.io import files
from filterviz.sweeps.folder import FolderLock
from filterviz.sweeps.manifest import read_manifest, scan_manifest
from support import page_data, page_text, write_legacy_h5

TINY = {"size": (16, 16), "steps": 1}
WORKER = Path(__file__).with_name("sweep_worker.py")


def user_files(folder: Path) -> dict[str, bytes]:
    """Files a user keeps in a sweep folder: none of them is filterviz's to touch."""
    files = {
        "block1_conv1/mine.png": b"my own picture",
        "sheets/notes.txt": b"notes",
        "manifest-notes.jsonl": b'{"layer": "block1_conv1", "filter": 0, "png": "block1_conv1/mine.png"}\n',
        "block5_pool/user.txt": b"a layer not even swept",
        "mystuff/.draft.part": b"a hidden file of mine",
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def assert_untouched(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (folder / name).read_bytes() == data, name


# ----------------------------------------------------------------------------------------------------
# A sweep folder is owned, locked and verified.


def test_overwrite_deletes_only_what_the_sweep_wrote(random_params, tmp_path):
    filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=[0, 1], **TINY)
    filterviz.write_atlas(tmp_path)
    mine = user_files(tmp_path)
    result = filterviz.sweep(
        random_params, tmp_path, layers=["block1_conv1"], filters=[2], overwrite=True, size=(16, 16), steps=2
    )
    assert result.written == 1
    assert_untouched(tmp_path, mine)
    assert [(e["filter"], e["steps"]) for e in read_manifest(tmp_path)] == [(2, 2)]
    assert not (tmp_path / "block1_conv1" / "0000.png").exists()  # the old sweep's pictures are gone
    assert not (tmp_path / "index.html").exists() and not (tmp_path / "sheets" / "block1_conv1.png").exists()


def test_overwrite_refuses_a_folder_that_holds_no_sweep(random_params, tmp_path):
    mine = user_files(tmp_path)
    with pytest.raises(filterviz.SweepError, match=r"not a filterviz sweep|holds no filterviz sweep"):
        filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], overwrite=True, **TINY)
    assert_untouched(tmp_path, mine)
    (tmp_path / "sweep.json").write_text("my own settings, not JSON")
    with pytest.raises(filterviz.SweepError, match="not a filterviz sweep settings file"):
        filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], overwrite=True, **TINY)
    assert (tmp_path / "sweep.json").read_text() == "my own settings, not JSON"


def test_a_users_index_html_and_scripts_are_kept_and_the_page_goes_beside_them(random_params, tmp_path):
    (tmp_path / "index.html").write_text("<h1>my page</h1>")
    (tmp_path / "atlas").mkdir()
    (tmp_path / "atlas" / "block1_conv1.js").write_text("console.log('mine');\n")
    filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=[0], **TINY)
    page, problems = filterviz.write_atlas(tmp_path)
    assert page == tmp_path / "atlas.html" and len(problems) == 2
    assert any(problem.startswith("index.html was not written by filterviz") for problem in problems)
    assert any(
        problem.startswith("atlas/block1_conv1.js was not written by filterviz") for problem in problems
    )
    assert (tmp_path / "index.html").read_text() == "<h1>my page</h1>"
    assert (tmp_path / "atlas" / "block1_conv1.js").read_text() == "console.log('mine');\n"
    (layer,) = page_data(page)["layers"]  # that layer's data stay in the page instead
    assert "data" not in layer and layer["filters"][0]["png"] == "block1_conv1/0000.png"
    assert filterviz.write_atlas(tmp_path).page == page  # and again: its own page is replaced


def test_a_sweep_refuses_to_replace_files_it_did_not_write(random_params, tmp_path):
    (tmp_path / "block1_conv1").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "block1_conv1" / "0003.png")  # a user's PNG, unmarked
    with pytest.raises(filterviz.SweepError, match=r"did not write.*block1_conv1/0003\.png"):
        filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=[2, 3], **TINY)
    assert not (tmp_path / "block1_conv1" / "0002.png").exists()  # refused before any work
    other = tmp_path / "other"
    other.mkdir()
    (other / "block1_conv1").symlink_to(tmp_path / "block1_conv1")  # a layer folder leading elsewhere
    with pytest.raises(filterviz.SweepError, match="symbolic link"):
        filterviz.sweep(random_params, other, layers=["block1_conv1"], filters=[0], **TINY)


def test_one_writer_at_a_time(random_params, tmp_path):
    with FolderLock(tmp_path, "test"):
        with pytest.raises(filterviz.SweepError, match="being written by another filterviz process"):
            filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=[0], **TINY)
        with pytest.raises(filterviz.SweepError, match="another filterviz process"):
            filterviz.write_atlas(tmp_path)
        # A real second process, from the command line: one line, exit 2, nothing written.
        done = subprocess.run(
            [sys.executable, "-m", "filterviz", "sweep", "--out", str(tmp_path), "--layers", "block1_conv1"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("filterviz: error: ") and len(done.stderr.strip().splitlines()) == 1
        assert "another filterviz process" in done.stderr and f"pid {os.getpid()}" in done.stderr
    assert not (tmp_path / "manifest.jsonl").exists()
    filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=[0], **TINY)  # free again


def test_damaged_pictures_are_redone_not_trusted(random_params, tmp_path):
    filters = [0, 1, 2, 3, 4]
    filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=filters, **TINY)
    folder = tmp_path / "block1_conv1"
    cut = folder / "0000.png"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (folder / "0001.png").write_bytes(b"")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    Image.new("RGB", (16, 16), "red").save(outside)
    (folder / "0002.png").unlink()
    (folder / "0002.png").symlink_to(outside)
    scan = scan_manifest(tmp_path)
    assert [e["filter"] for e in scan.entries] == [3, 4]
    assert len(scan.problems) == 3
    # The views skip them rather than crash.
    assert [e["filter"] for e in filterviz.top_filters(tmp_path, "block1_conv1")] != []
    assert main(["top", str(tmp_path), "--layer", "block1_conv1", "--out", str(tmp_path / "top.png")]) == 0
    result = filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=filters, **TINY)
    assert (result.written, result.skipped, len(result.problems)) == (3, 2, 3)
    assert [e["filter"] for e in read_manifest(tmp_path)] == filters
    assert not (folder / "0002.png").is_symlink() and outside.is_file()
    for picture in folder.glob("*.png"):
        assert filterviz.load_image(picture).shape == (16, 16, 3)


def test_a_manifest_without_its_settings_is_refused(random_params, tmp_path):
    filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=[0, 1], **TINY)
    (tmp_path / "sweep.json").unlink()
    with pytest.raises(filterviz.SweepError, match=r"no sweep\.json"):
        filterviz.sweep(
            random_params, tmp_path, layers=["block1_conv1"], filters=[0, 1], size=(16, 16), steps=2
        )
    result = filterviz.sweep(
        random_params,
        tmp_path,
        layers=["block1_conv1"],
        filters=[0, 1],
        overwrite=True,
        size=(16, 16),
        steps=2,
    )
    assert result.written == 2 and {e["steps"] for e in read_manifest(tmp_path)} == {2}


# ----------------------------------------------------------------------------------------------------
# The atlas is safe to open.


def hostile_folder(random_params, folder: Path) -> Path:
    """A real sweep, then manifest lines an attacker wrote, and a picture that met NaN."""
    filterviz.sweep(random_params, folder, layers=["block1_conv1"], filters=[0, 1], **TINY)
    good = read_manifest(folder)[1]
    outside = folder.parent / f"{folder.name}-secret.png"
    Image.new("RGB", (16, 16), "red").save(outside)
    lines = [
        {**good, "png": "javascript:alert(document.domain)"},
        {**good, "png": str(outside)},
        {**good, "png": f"../{outside.name}"},
        {**good, "layer": "<!--<script>", "png": "<!--<script>/0001.png"},
        {**good, "layer": "block1_conv1</script><script>alert(1)</script>"},
        {**good, "filter": 99, "png": "block1_conv1/0099.png"},
        "not json at all",
        {**good, "activation": "NaN"},  # a whole picture whose filter met NaN
    ]
    with open(folder / "manifest.jsonl", "a") as manifest:
        for line in lines:
            manifest.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return folder


def test_the_atlas_trusts_no_manifest_line(random_params, tmp_path):
    folder = hostile_folder(random_params, tmp_path / "sweep")
    page, problems = filterviz.write_atlas(folder)
    assert len(problems) == 7  # every hostile line, each named; the NaN line is a whole picture
    text = page_text(page)
    for needle in ("javascript:", "secret.png", "<!--<script>", "alert(1)"):
        assert needle not in text
    data = page_data(page)
    (layer,) = data["layers"]
    assert [f["png"] for f in layer["filters"]] == ["block1_conv1/0000.png", "block1_conv1/0001.png"]
    assert layer["filters"][1]["activation"] == "NaN"  # valid JSON, shown as such
    top = filterviz.top_filters(folder, "block1_conv1")
    assert [e["filter"] for e in top] == [0, 1]  # NaN ranks last
    assert main(["atlas", str(folder)]) == 0


def test_the_hostile_atlas_renders_in_a_browser(random_params, tmp_path):
    from test_sweep import chromium

    browser = chromium()
    folder = hostile_folder(random_params, tmp_path / "sweep")
    page = filterviz.write_atlas(folder).page
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom"]
        + ["--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = done.stdout
    assert 'data-rendered="2"' in dom and 'data-loaded="2"' in dom and 'data-failed="0"' in dom
    assert "NaN" in dom and "javascript:" not in dom


# ----------------------------------------------------------------------------------------------------
# Writes never clobber.


def test_outputs_refuse_links_devices_fifos_and_folders(tmp_path):
    picture = np.zeros((4, 4, 3), np.uint8)
    target = tmp_path / "target.png"
    target.write_bytes(b"the link's target")
    (tmp_path / "link.png").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "folder.png").mkdir()
    for name, kind in (("link.png", "symbolic link"), ("fifo.png", "FIFO"), ("folder.png", "directory")):
        with pytest.raises(filterviz.OutputError, match=kind):
            filterviz.save_picture(picture, tmp_path / name)
    with pytest.raises(filterviz.OutputError, match="device"):
        files.check_writable("/dev/null")
    assert target.read_bytes() == b"the link's target" and (tmp_path / "link.png").is_symlink()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo.png").st_mode)
    assert main(["filters", "block1_conv1", "--out", "/dev/stdout"]) == 2


def test_outputs_get_the_usual_mode_and_the_type_their_extension_names(tmp_path):
    picture = np.zeros((4, 4, 3), np.uint8)
    old = os.umask(0o022)
    try:
        written = filterviz.save_picture(picture, tmp_path / "a.png")
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    for name, kind in (("b.jpg", "JPEG"), ("c.JPEG", "JPEG"), ("d.gif", "GIF"), ("e.png", "PNG")):
        with Image.open(filterviz.save_picture(picture, tmp_path / name)) as image:
            assert image.format == kind
    for name in ("f.bmp", "g", "h.png.txt"):
        with pytest.raises(filterviz.OutputError, match="extension"):
            filterviz.save_picture(picture, tmp_path / name)
    with pytest.raises(filterviz.OutputError, match="extension"):
        filterviz.save_gif(picture[None], tmp_path / "movie.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg", "c.JPEG", "d.gif", "e.png"]


def test_the_cli_writes_the_type_its_extension_names(weights_path, tmp_path, photo):
    arguments = ["--size", "16", "--steps", "1", "--filters", "0", "--weights", str(weights_path)]
    assert main(["filters", "block1_conv1", *arguments, "--out", str(tmp_path / "grid.jpg")]) == 0
    with Image.open(tmp_path / "grid.jpg") as image:
        assert image.format == "JPEG"
    dream = ["dream", str(photo), "--layer", "block1_conv1", "--steps", "1", "--weights", str(weights_path)]
    assert main([*dream, "--out", str(tmp_path / "dream.npy")]) == 0
    assert np.load(tmp_path / "dream.npy").shape == filterviz.load_image(photo).shape
    assert main([*dream, "--out", str(tmp_path / "dream.tiff")]) == 2


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
    assert time.monotonic() - began < 5  # refused, not opened (which would wait for a writer)
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
        lambda p, s: filterviz.save_gif(np.zeros((1, 4, 4, 3), np.uint8), "/tmp/never.gif", frame_ms=0),
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


# ----------------------------------------------------------------------------------------------------
# Random kills, resumes, damage and concurrent starts: every filter exactly once, every file whole,
# no user file touched.


def start_worker(folder: Path, plan: dict) -> subprocess.Popen:
    request = {"folder": str(folder), "sweep": plan}
    environment = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    }
    return subprocess.Popen(
        [sys.executable, str(WORKER), json.dumps(request)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.slow
def test_random_kills_resumes_damage_and_concurrent_starts_end_whole(tmp_path):
    rng = random.Random(int(os.environ.get("FILTERVIZ_SAFETY_SEED", "7")))
    plan = {"layers": ["block2_conv1"], "filters": list(range(32)), "size": [24, 24], "steps": 8}
    folder = tmp_path / "sweep"
    folder.mkdir()
    mine = user_files(folder)
    manifest = folder / "manifest.jsonl"
    middle = ["kill", "damage", "concurrent"]
    rng.shuffle(middle)
    actions = ["kill", *middle, "resume"]  # every kind, in a random order, with random kill points
    for action in actions:
        if action == "damage":
            pictures = sorted((folder / "block2_conv1").glob("*.png"))
            if pictures:
                victim = rng.choice(pictures)
                victim.write_bytes(victim.read_bytes()[: rng.randrange(0, victim.stat().st_size)])
            with open(manifest, "a") as lines:
                lines.write('{"layer": "block2_conv1", "filter": 3, "png": "../escape.png"}\n{"cut')
            continue
        before = lines_in(manifest)
        workers = [start_worker(folder, plan) for _ in range(2 if action == "concurrent" else 1)]
        if action == "kill":
            # Mid-run: once a few more filters are done, a random signal.
            wanted, deadline = before + rng.randint(1, 6), time.monotonic() + 120
            while workers[0].poll() is None and lines_in(manifest) < wanted and time.monotonic() < deadline:
                time.sleep(0.02)
            workers[0].send_signal(rng.choice([signal.SIGKILL, signal.SIGTERM, signal.SIGINT]))
        for worker in workers:
            worker.wait(timeout=300)
        if action == "concurrent":  # one of them sweeps; the other is refused (or finds it all done)
            codes = sorted(worker.returncode for worker in workers)
            assert codes[0] == 0, [w.stderr.read().decode()[-2000:] for w in workers]
        if action == "resume":
            assert workers[0].returncode == 0, workers[0].stderr.read().decode()[-2000:]
    entries = read_manifest(folder)
    assert [e["filter"] for e in entries] == plan["filters"]  # every filter exactly once, each whole
    for picture in (folder / "block2_conv1").iterdir():
        assert picture.suffix == ".png" and not picture.name.startswith("."), picture
        assert filterviz.load_image(picture).shape == (24, 24, 3)
    assert not (tmp_path / "escape.png").exists()
    assert_untouched(folder, mine)
