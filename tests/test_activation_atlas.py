"""Activation atlases on small sizes: the grid's arithmetic, the layout, classes, icons, resuming, the
page in headless Chromium and the command line's errors."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from PIL import Image

import filterviz
from filterviz.cli import main
from filterviz.core.cells import cell_of, class_mix, grid_cells, nearest_members
from filterviz.sweeps import activation_atlas as atlas_module
from filterviz.sweeps.activation_atlas import umap_layout
from support import chromium

LAYER = "block1_conv2"
HOSTILE = '<img src=x onerror="document.title=1">&amp;'
SMALL = dict(layer=LAYER, grid=4, steps=3, icon_size=16, image_size=32, positions=4, min_count=2)


def _two_class_folder(folder, red="red", blue="blue", count=10):
    generator = np.random.default_rng(0)
    for name, colour in ((red, (200, 40, 40)), (blue, (40, 40, 200))):
        (folder / name).mkdir(parents=True)
        for index in range(count):
            patch = np.clip(np.array(colour) + generator.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(patch).save(folder / name / f"{index}.png")
    return folder


@pytest.fixture(scope="module")
def drawn(random_params, tmp_path_factory):
    folder = _two_class_folder(tmp_path_factory.mktemp("photos"), blue=HOSTILE)
    out = tmp_path_factory.mktemp("atlas")
    result = filterviz.activation_atlas(random_params, folder, out=out, progress=False, **SMALL)
    return folder, out, result


def test_cell_means_counts_and_neighbours_match_a_brute_force_count():
    generator = np.random.default_rng(1)
    vectors, layout = generator.normal(size=(300, 5)), generator.uniform(-3, 7, (300, 2))
    cells = grid_cells(vectors, layout, 6, min_count=4)
    low, high = layout.min(0), layout.max(0)
    for m in range(len(cells.counts)):
        inside = [
            i for i in range(300)
            if min(int((layout[i, 0] - low[0]) / (high[0] - low[0]) * 6), 5) == cells.columns[m]
            and min(int((layout[i, 1] - low[1]) / (high[1] - low[1]) * 6), 5) == cells.rows[m]
        ]  # fmt: skip
        assert len(inside) == cells.counts[m] >= 4
        np.testing.assert_allclose(cells.means[m], vectors[inside].mean(0), rtol=1e-5, atol=1e-6)
    kept = np.bincount(cell_of(layout, 6), minlength=36)
    assert sorted(cells.counts) == sorted(kept[kept >= 4])
    labels = generator.integers(0, 3, 300)
    mix = class_mix(labels, cells, 3)
    assert (mix.sum(1) == cells.counts).all()
    nearest = nearest_members(vectors, cells, 2)[0]
    members = cells.members[0]
    similarity = vectors[members] @ cells.means[0] / np.linalg.norm(vectors[members], axis=1)
    assert list(nearest) == list(members[np.argsort(-similarity)[:2]])
    with pytest.raises(filterviz.SettingError, match="too fine"):
        grid_cells(vectors, layout, 200, min_count=5)


def test_a_seeded_layout_is_reproducible():
    vectors = np.random.default_rng(2).normal(size=(40, 8)).astype(np.float32)
    first, second = umap_layout(vectors, seed=3), umap_layout(vectors, seed=3)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (40, 2) and np.isfinite(first).all()


def test_two_classes_land_in_different_cells_and_each_icon_raises_its_direction(drawn, random_params):
    _, _, result = drawn
    assert sorted(result.classes) == sorted(["red", HOSTILE]) and len(result.vectors) == 80
    cells = result.levels[4]
    mix = class_mix(result.labels, cells, 2)
    assert (mix.max(1) / cells.counts >= 0.9).all()  # every cell nearly pure
    assert set(mix.argmax(1)) == {0, 1}  # and both classes have cells of their own
    # Each icon beats the start image (0 steps, the same keys) on its own direction.
    start = filterviz.render(
        random_params,
        filterviz.direction(LAYER, cells.means),
        method="lucid",
        steps=0,
        size=16,
        progress=False,
    )
    assert (result.activations[4] > start.activations).all()


def test_the_record_and_files_hold_every_level(drawn):
    _, out, result = drawn
    record = json.loads((out / "activation-atlas.json").read_text())
    assert sorted(record["levels"]) == ["2", "4", "8"]
    for level, cells in record["levels"].items():
        assert len(cells) == len(result.levels[int(level)].counts)
        for cell in cells:
            with Image.open(out / cell["icon"]) as icon:
                assert icon.size == (16, 16)
            assert all((out / patch).is_file() for patch in cell["patches"]) and cell["patches"]
            assert sum(count for _, count in cell["classes"]) == cell["count"]


def test_a_killed_run_resumes_to_the_same_atlas(drawn, random_params, tmp_path, monkeypatch):
    folder, out, _ = drawn
    calls = []
    real = atlas_module.render

    def dies_after_one(*arguments, **settings):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*arguments, **settings)

    monkeypatch.setattr(atlas_module, "render", dies_after_one)
    settings = SMALL  # the first level's icons are drawn, the run dies drawing the second's
    with pytest.raises(KeyboardInterrupt):
        filterviz.activation_atlas(random_params, folder, out=tmp_path, progress=False, **settings)
    assert list(tmp_path.glob("icons/g2/*.png")) and not list(tmp_path.glob("icons/g4/*.png"))
    monkeypatch.setattr(atlas_module, "render", real)
    resumed = filterviz.activation_atlas(random_params, folder, out=tmp_path, progress=False, **settings)
    icons = sorted(path.relative_to(tmp_path) for path in tmp_path.glob("icons/*/*.png"))
    assert icons == sorted(path.relative_to(out) for path in out.glob("icons/*/*.png"))
    for icon in icons:  # the same pictures as the run that was never stopped
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / icon)), np.asarray(Image.open(out / icon))
        )
    assert resumed.levels[4].counts.tolist() == drawn[2].levels[4].counts.tolist()


def test_the_page_shows_hostile_class_names_as_text(drawn):
    _, out, result = drawn
    cells = result.levels[4]
    blue = int(
        np.flatnonzero(class_mix(result.labels, cells, 2).argmax(1) == result.classes.index(HOSTILE))[0]
    )
    url = (out / "atlas.html").resolve().as_uri() + f"#{cells.rows[blue]},{cells.columns[blue]}"
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    dom = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "Activation atlas of block1_conv2" in dom  # the script ran
    # The name is text, not an element: its markup shows escaped, no <img src=x> exists, the title stays.
    assert "&lt;img src=x onerror=" in dom and "<img src=x" not in dom and '<img src="x"' not in dom
    assert "<title>activation atlas</title>" in dom
    assert dom.count('alt="cell ') == len(cells.counts)  # one icon per kept cell
    assert 'alt="dataset patch"' in dom


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "block9_conv9"], "block9_conv9"),
        (["--layer", LAYER, "--grid", "1024", "--min-count", "50"], "too fine"),
    ],
)
def test_cli_errors_are_one_line(drawn, weights_path, tmp_path, capsys, extra, message):
    folder, _, _ = drawn
    command = ["activation-atlas", str(folder), "--out", str(tmp_path / "out"), "--size", "32", *extra]
    assert main([*command, "--weights", str(weights_path), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error


def test_cli_refuses_an_empty_folder(weights_path, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    command = ["activation-atlas", str(tmp_path / "empty"), "--layer", LAYER, "--out", str(tmp_path / "out")]
    assert main([*command, "--weights", str(weights_path)]) == 2
    assert "holds no images" in capsys.readouterr().err


def test_an_atlas_of_a_flax_network_of_ones_own(tmp_path):
    import flax.linen as nn
    import jax

    class Small(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(6, (3, 3), name="first")(x))
            return nn.relu(nn.Conv(8, (3, 3), strides=2, name="second")(x))

    module = Small()
    network, params = filterviz.from_flax(module, module.init(jax.random.key(0), np.zeros((1, 16, 16, 3))))
    folder = _two_class_folder(tmp_path / "photos", count=4)
    atlas = filterviz.activation_atlas(
        params, folder, "second", network=network, out=tmp_path / "atlas", grid=2, zoom=(2,), steps=2,
        icon_size=16, image_size=16, positions=2, min_count=1, progress=False,
    )  # fmt: skip
    assert atlas.vectors.shape == (16, 8) and len(atlas.levels[2].counts) >= 1
    assert all((tmp_path / "atlas" / f"icons/g2/{r}_{c}.png").is_file()
               for r, c in zip(atlas.levels[2].rows, atlas.levels[2].columns, strict=True))  # fmt: skip


COLLECT = """
import sys, numpy as np, jax, filterviz
from pathlib import Path
from filterviz.sweeps.activation_vectors import Reading, collect
assert jax.local_device_count() == 4
network = filterviz.network("vgg16")
params = network.init(jax.random.key(0))
root = Path(sys.argv[1])
paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
vectors, images, positions = collect(network, params, "block1_conv2", root, paths, Reading(6, 32, "crop", 2),
    count=3, seed=5, progress_file=None, settings={}, shown=False, save_seconds=1e9)
np.savez(sys.argv[2], vectors=vectors, images=images, positions=positions)
"""


def test_the_collect_pass_splits_batches_over_devices_to_the_same_vectors(random_params, tmp_path):
    import os
    import sys

    from filterviz.sweeps.activation_vectors import Reading, collect

    folder = _two_class_folder(tmp_path / "photos", count=5)
    paths = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.png"))
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4"
    environment = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", COLLECT, str(folder), str(tmp_path / "four.npz")],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    network = filterviz.network("vgg16")
    one = collect(
        network, random_params, "block1_conv2", folder, paths, Reading(6, 32, "crop", 2), count=3, seed=5,
        progress_file=None, settings={}, shown=False, save_seconds=1e9,
    )  # fmt: skip
    with np.load(tmp_path / "four.npz") as four:
        np.testing.assert_array_equal(four["images"], one[1])
        np.testing.assert_array_equal(four["positions"], one[2])
        np.testing.assert_allclose(four["vectors"], one[0], rtol=1e-5, atol=1e-5)


def test_cli_never_writes_through_a_link_or_over_a_file(drawn, weights_path, tmp_path, capsys):
    folder, _, _ = drawn
    command = ["activation-atlas", str(folder), "--layer", LAYER, "--size", "32", "--grid", "2", "--quiet"]
    command += ["--weights", str(weights_path)]
    (tmp_path / "a-file").write_text("mine")
    assert main([*command, "--out", str(tmp_path / "a-file")]) == 2
    assert "a-file" in capsys.readouterr().err and (tmp_path / "a-file").read_text() == "mine"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "icons").symlink_to(elsewhere)
    assert main([*command, "--out", str(tmp_path / "out")]) == 2
    assert "symbolic link" in capsys.readouterr().err and not list(elsewhere.iterdir())
    assert main(["spectrum", str(folder), "--out", str(tmp_path / "spectrum.txt")]) == 2
    assert ".npy" in capsys.readouterr().err and not (tmp_path / "spectrum.txt").exists()
