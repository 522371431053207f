"""A sweep's views and its command line: ranking, contact sheets, the atlas page in headless Chromium,
the CLI, the compilation cache, progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import filterviz
from filterviz.sweeps.atlas import contact_sheet
from support import chromium, page_data

SMALL = {"size": (24, 24), "steps": 3}


# ----------------------------------------------------------------------------------------------------
# Views of a sweep: ranking, contact sheets, the atlas page.


@pytest.fixture
def small_sweep(random_params, tmp_path) -> Path:
    filterviz.sweep(
        random_params, tmp_path, layers=["block1_conv1", "block2_conv1"], filters=range(6), **SMALL
    )
    return tmp_path


def test_top_filters_rank_by_achieved_activation(small_sweep):
    ranked = filterviz.top_filters(small_sweep, "block1_conv1")
    activations = [e["activation"] for e in ranked]
    assert activations == sorted(activations, reverse=True) and len(ranked) == 6
    assert filterviz.top_filters(small_sweep, "block1_conv1", 2) == ranked[:2]
    with pytest.raises(filterviz.SweepError, match="no filterviz sweep"):
        filterviz.top_filters(small_sweep / "block1_conv1", "block1_conv1")


def test_contact_sheet_tiles_every_picture():
    pictures = np.stack([np.full((10, 20, 3), value, np.uint8) for value in (0, 100, 200)])
    sheet = contact_sheet(pictures, columns=2, tile=8, gap=1)
    assert sheet.shape == (2 * 9 + 1, 2 * 17 + 1, 3)  # tiles 8x16 (aspect kept), 2 rows of 2
    assert sheet[1, 1, 0] == 0 and sheet[1, 18, 0] == 100 and sheet[10, 1, 0] == 200
    assert sheet[10, 18, 0] == 255  # the empty fourth cell


def test_atlas_page_and_sheets_are_written(small_sweep):
    page, problems = filterviz.write_atlas(small_sweep)
    assert problems == ()
    assert page == small_sweep / "index.html"
    data = page_data(page)  # each layer's filters in its own data file
    assert [layer["data"] for layer in data["layers"]] == ["atlas/block1_conv1.js", "atlas/block2_conv1.js"]
    assert "block1_conv1/0005.png" in [f["png"] for f in data["layers"][0]["filters"]]
    assert "0005.png" not in page.read_text()
    for layer in ("block1_conv1", "block2_conv1"):
        sheet = filterviz.load_image(small_sweep / "sheets" / f"{layer}.png")
        assert sheet.shape[0] > 64 and sheet.shape[1] > 64
    assert not list(small_sweep.glob("*.part"))


@pytest.mark.parametrize("layer", ["", "block2_conv1"])
def test_atlas_renders_its_thumbnails_in_a_headless_browser(small_sweep, layer):
    browser = chromium()
    page = filterviz.write_atlas(small_sweep).page
    url = page.resolve().as_uri() + (f"#{layer}" if layer else "")
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    dom = done.stdout
    assert "<body" in dom, done.stderr[-2000:]
    body = dom[dom.index("<body") : dom.index(">", dom.index("<body"))]
    # The page's script counts images that loaded and that failed; all six of the layer must load.
    assert 'data-rendered="6"' in body and 'data-loaded="6"' in body and 'data-failed="0"' in body, body
    shown = layer or "block1_conv1"
    channels = filterviz.network("vgg16").layer(shown).channels
    assert f'alt="{shown} filter 0"' in dom and f"{shown}: 6 of {channels} filters" in dom


def test_a_whole_network_atlas_keeps_its_page_small_and_opens_any_layer(random_params, tmp_path):
    # One real picture, then a manifest naming a copy of it for each of VGG16's 4,224 conv filters.
    filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=[0], size=(16, 16), steps=1)
    template = json.loads((tmp_path / "manifest.jsonl").read_text())
    picture = (tmp_path / template["png"]).read_bytes()
    lines = []
    network = filterviz.network("vgg16")
    for name in network.visual_layers:
        (tmp_path / name).mkdir(exist_ok=True)
        for index in range(network.layer(name).channels):
            path = f"{name}/{index:04d}.png"
            (tmp_path / path).write_bytes(picture)
            lines.append(json.dumps({**template, "layer": name, "filter": index, "png": path}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    atlas = filterviz.write_atlas(tmp_path)
    assert atlas.problems == ()
    data = page_data(atlas.page)
    assert sum(len(layer["filters"]) for layer in data["layers"]) == 4224
    assert atlas.page.stat().st_size < 25_000  # the layer list; each layer's filters load with it

    def shown(layer: str) -> str:
        command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
        url = atlas.page.resolve().as_uri() + f"#{layer}"
        return subprocess.run(
            [*command, "--dump-dom", url], capture_output=True, text=True, timeout=120
        ).stdout

    dom = shown("block5_conv3")
    assert 'data-rendered="512"' in dom and "block5_conv3: 512 of 512 filters" in dom
    (tmp_path / "atlas" / "block4_conv1.js").unlink()  # a layer whose data went missing says so
    assert "block4_conv1: its data file is missing" in shown("block4_conv1")


# ----------------------------------------------------------------------------------------------------
# The command line.


def test_cli_sweep_builds_a_browsable_atlas_and_resumes(weights_path, tmp_path, capsys):
    from filterviz.cli import main

    out = tmp_path / "atlas"

    def command(filters="0-3", steps="2"):
        return ["sweep", "--layers", "block1_conv1,block5_conv3", "--filters", filters, "--size", "32"] + [
            "--steps",
            steps,
            "--weights",
            str(weights_path),
            "--out",
            str(out),
        ]

    assert main(command()) == 0
    err = capsys.readouterr().err
    assert "8 filters written, 0 already done" in err and "index.html" in err
    assert (out / "index.html").is_file() and (out / "sheets" / "block5_conv3.png").is_file()
    assert main(command(filters="0-5")) == 0
    assert "4 filters written, 8 already done" in capsys.readouterr().err
    assert (
        main(["top", str(out), "--layer", "block1_conv1", "--count", "3", "--out", str(tmp_path / "top.png")])
        == 0
    )
    assert filterviz.load_image(tmp_path / "top.png").shape[1] > 100
    strongest = filterviz.top_filters(out, "block1_conv1", 1)[0]["filter"]
    assert "strongest filters of block1_conv1" in capsys.readouterr().err
    assert main(["atlas", str(out)]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    # Other settings into the same folder: one line, exit 2, nothing touched.
    assert main(command(steps="3")) == 2
    err = capsys.readouterr().err
    assert err.startswith("filterviz: error: ") and "steps: 2 in the folder, 3 asked" in err
    assert len(err.strip().splitlines()) == 1
    assert filterviz.top_filters(out, "block1_conv1", 1)[0]["filter"] == strongest


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            ["sweep", "--layers", "block1_conv1,nope", "--out", "{tmp}/o"],
            "unknown layer 'nope' in vgg16; valid layers",
        ),
        (["sweep", "--layers", "block1_conv1", "--filters", "60-70", "--out", "{tmp}/o"], "valid: 0-63"),
        (["sweep", "--layers", ",", "--out", "{tmp}/o"], "bad layer list ','"),
        (["examples", "{tmp}", "--layers", "block1_conv1,,block2_conv1", "--out", "{tmp}/o"], "bad layer"),
        (["sweep", "--start", "{tmp}/absent.jpg", "--out", "{tmp}/o"], "absent.jpg: no such file"),
        (["top", "{tmp}", "--layer", "block1_conv1", "--out", "{tmp}/t.png"], "holds no filterviz sweep"),
        (["atlas", "{tmp}"], "holds no filterviz sweep"),
    ],
)
def test_cli_sweep_user_errors_exit_2_with_one_line(arguments, message, tmp_path, capsys):
    from filterviz.cli import main

    assert main([argument.replace("{tmp}", str(tmp_path)) for argument in arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("filterviz: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


CACHE_PROBE = """
import sys, jax
hits = []
jax.monitoring.register_event_listener(lambda event, **_: hits.append(event))
from filterviz.cli import main
status = main(sys.argv[1:])
counts = [hits.count(f"/jax/compilation_cache/cache_{kind}") for kind in ("hits", "misses")]
print(status, *counts)
"""


def test_a_second_run_takes_its_programs_from_the_compilation_cache(weights_path, tmp_path):
    environment = {**os.environ, "FILTERVIZ_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    environment.pop("JAX_COMPILATION_CACHE_DIR", None)
    runs = []
    for attempt in range(2):
        command = [sys.executable, "-c", CACHE_PROBE, "sweep", "--layers", "block2_conv1", "--filters", "0-1"]
        command += ["--size", "16", "--steps", "2", "--weights", str(weights_path)]
        command += ["--out", str(tmp_path / f"run{attempt}"), "--quiet"]
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append([int(word) for word in done.stdout.split()])
    (status, hits, misses), (status_again, hits_again, misses_again) = runs
    assert status == status_again == 0
    assert hits == 0 and misses > 0  # the first run compiled everything
    assert misses_again == 0 and hits_again == misses  # the second compiled nothing


def test_progress_bar_counts_filters_when_asked_and_is_quiet_otherwise(random_params, tmp_path, capsys):
    filterviz.sweep(
        random_params, tmp_path / "a", layers=["block1_conv1"], filters=range(3), progress=True, **SMALL
    )
    bar = capsys.readouterr().err
    assert "3/3" in bar and "filter/s" in bar and "block1_conv1" in bar
    filterviz.sweep(
        random_params, tmp_path / "b", layers=["block1_conv1"], filters=range(3), progress=False, **SMALL
    )
    assert capsys.readouterr().err == ""
