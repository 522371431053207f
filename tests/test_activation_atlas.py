"""Activation atlases on small sizes: the grid's arithmetic, the layout, classes, icons, resuming, the
page in headless Chromium and the command line's errors."""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

import filterviz
from filterviz.activation_atlases import atlas as atlas_module
from filterviz.activation_atlases.atlas import umap_layout
from filterviz.activation_atlases.cells import cell_of, class_mix, grid_cells, nearest_members
from filterviz.activation_atlases.checks import zoom_levels
from filterviz.cli import main
from filterviz.jobs import drawing
from support import chromium

LAYER = "block1_conv2"
HOSTILE = '<img src=x onerror="document.title=1">&amp;'
SMALL = dict(layer=LAYER, grid=4, steps=3, size=16, image_size=32, positions=4, min_count=2)


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


def test_the_exact_neighbours_are_scikit_learns_and_zero_vectors_follow_umaps_rule():
    from sklearn.neighbors import NearestNeighbors

    from filterviz.activation_atlases.layout import cosine_neighbours

    vectors = np.random.default_rng(4).normal(size=(700, 12)).astype(np.float32)
    indices, distances = cosine_neighbours(vectors, 9, block=256)  # blocks that do not divide N
    oracle = NearestNeighbors(n_neighbors=9, metric="cosine", algorithm="brute").fit(vectors)
    expected_distances, expected_indices = oracle.kneighbors(vectors)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, atol=1e-6)
    vectors[[3, 5]] = 0.0  # two dead positions: each other's nearest, at distance 0
    indices, distances = cosine_neighbours(vectors, 3)
    assert indices[3, :2].tolist() == [3, 5] and distances[3, :2].tolist() == [0.0, 0.0]
    assert distances[3, 2] == 1.0


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
    real = drawing.render

    def dies_after_one(*arguments, **settings):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*arguments, **settings)

    monkeypatch.setattr(drawing, "render", dies_after_one)
    settings = {**SMALL, "batch_size": 4}  # every level's icons share chunks; the run dies after the first
    with pytest.raises(KeyboardInterrupt):
        filterviz.activation_atlas(random_params, folder, out=tmp_path, progress=False, **settings)
    total = len(list(out.glob("icons/*/*.png")))
    assert 0 < len(list(tmp_path.glob("icons/*/*.png"))) < total
    monkeypatch.setattr(drawing, "render", real)
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
        (["--layer", LAYER, "--spectrum", "1/f"], "use it with --method maco"),  # filters' method options
        (["--layer", LAYER, "--method", "maco", "--spectrum", "missing.npy"], "missing.npy"),
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


def _own_network(framework: str):
    # A small network of one's own in each framework filterviz takes: (network, params, layer, channels).
    if framework == "flax":
        import flax.linen as nn
        import jax

        class Small(nn.Module):
            @nn.compact
            def __call__(self, x):
                x = nn.relu(nn.Conv(6, (3, 3), name="first")(x))
                return nn.relu(nn.Conv(8, (3, 3), strides=2, name="second")(x))

        module = Small()
        variables = module.init(jax.random.key(0), np.zeros((1, 16, 16, 3)))
        return (*filterviz.from_flax(module, variables), "second", 8)
    if framework == "keras":
        import keras

        inputs = keras.Input((None, None, 3))
        hidden = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="first")(inputs)
        outputs = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="second")(hidden)
        return (*filterviz.from_keras(keras.Model(inputs, outputs)), "second", 8)
    from my_torch_net import small

    return (*filterviz.from_torch(small()), "conv2", 6)


@pytest.mark.parametrize("framework", ["flax", "keras", "torch"])
def test_an_atlas_of_a_network_of_ones_own(framework, tmp_path):
    network, params, layer, channels = _own_network(framework)
    folder = _two_class_folder(tmp_path / "photos", count=4)
    atlas = filterviz.activation_atlas(
        params, folder, layer, network=network, out=tmp_path / "atlas", grid=2, zoom=(2,), steps=2,
        icon_size=16, image_size=16, positions=2, min_count=1, progress=False,
    )  # fmt: skip
    assert atlas.vectors.shape == (16, channels) and len(atlas.levels[2].counts) >= 1
    assert all((tmp_path / "atlas" / f"icons/g2/{r}_{c}.png").is_file()
               for r, c in zip(atlas.levels[2].rows, atlas.levels[2].columns, strict=True))  # fmt: skip
    assert np.isfinite(atlas.activations[2]).all()


def test_two_processes_share_the_collect_pass_and_the_icons(drawn, tmp_path):
    from support import run_two_processes

    folder, _, alone = drawn
    out = tmp_path / "atlas"
    reports = run_two_processes(
        {
            "folder": str(folder),
            "activation_atlas": {**SMALL, "out": str(out), "chunk": 2},
            "principal_layout": True,
        }
    )
    assert [report["devices"] for report in reports] == [4, 4]
    # Each process decoded only its share of the photos, and each drew its share of the cells.
    assert sum(report["decoded"] for report in reports) == 20 and min(r["decoded"] for r in reports) > 0
    cells = {int(g): len(values) for g, values in reports[0]["activations"].items()}
    assert sum(report["chunks"] for report in reports) == sum(-(-count // 2) for count in cells.values())
    assert min(report["chunks"] for report in reports) > 0
    # Every process holds the whole result: the same vectors as one process on one device, one layout.
    for key in ("vectors", "images", "layout", "activations", "page"):
        assert reports[0][key] == reports[1][key], key
    np.testing.assert_array_equal(reports[0]["images"], alone.images)
    np.testing.assert_allclose(reports[0]["vectors"], alone.vectors, rtol=1e-5, atol=1e-5)
    assert all(np.isfinite(values).all() for values in reports[0]["activations"].values())
    record = json.loads((out / atlas_module.RECORD).read_text())
    for grid, count in cells.items():
        icons = [cell["icon"] for cell in record["levels"][str(grid)]]
        assert len(icons) == count and all((out / icon).is_file() for icon in icons)
    assert reports[0]["page"] == str(out / "atlas.html") and (out / "atlas.html").is_file()


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


def test_a_grid_is_counted_in_memory_that_follows_the_vectors_and_zoom_keeps_the_main_grid():
    generator = np.random.default_rng(4)
    vectors, layout = generator.normal(size=(200, 512)), generator.normal(size=(200, 2))
    finest = grid_cells(vectors, layout, 1024)  # 1024 x 1024 cells of 512 channels: no dense sum
    assert finest.counts.sum() == 200 and finest.means.shape == (len(finest.counts), 512)
    assert zoom_levels(1024, None) == [512, 1024]  # the default zoom stops at the largest grid
    assert zoom_levels(6, []) == [6] and zoom_levels(6, [3]) == [3, 6]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(batch_size=10**9), "batch_size"),
        (dict(image_batch_size=10**9), "image_batch_size"),
        (dict(positions=10**9), "positions"),
        (dict(fit="stretch"), "unknown fit"),
        (dict(grid=2, zoom=[2048]), "grid must be"),
    ],
)
def test_settings_that_cannot_work_are_refused_before_anything_is_written(
    drawn, random_params, tmp_path, settings, message
):
    folder, _, _ = drawn
    with pytest.raises(filterviz.SettingError, match=message):
        filterviz.activation_atlas(
            random_params, folder, out=tmp_path / "out", progress=False, **{**SMALL, **settings}
        )
    assert not (tmp_path / "out").exists()


def test_the_users_files_under_an_atlas_s_names_are_kept(drawn, random_params, tmp_path):
    folder, _, _ = drawn
    for name in ("layout.npy", "vectors.npz"):
        out = tmp_path / name.split(".")[0]
        out.mkdir()
        np.save(out / "mine.npy", np.zeros(3))
        (out / "mine.npy").rename(out / name)
        before = (out / name).read_bytes()
        for overwrite in (False, True):  # overwrite clears an atlas, never files with no record beside them
            with pytest.raises(filterviz.OutputError, match="not written by filterviz"):
                filterviz.activation_atlas(
                    random_params, folder, out=out, progress=False, overwrite=overwrite, **SMALL
                )
        assert (out / name).read_bytes() == before and sorted(p.name for p in out.iterdir()) == [name]
    icons = tmp_path / "icons-file"
    icons.mkdir()
    (icons / "icons").write_text("mine")
    with pytest.raises(filterviz.OutputError, match="not a folder"):
        filterviz.activation_atlas(random_params, folder, out=icons, progress=False, **SMALL)
    assert (icons / "icons").read_text() == "mine"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("activation-atlas.json", "[" * 100_000, "not a record"),
        ("activation-atlas.json", "[1, 2]", "not a record"),
        ("layout.npy", b"\x93NUMPY damaged", "damaged"),
    ],
)
def test_a_damaged_atlas_folder_is_one_line_not_a_traceback(
    drawn, random_params, tmp_path, name, content, message
):
    folder, out, _ = drawn
    copy = tmp_path / "copy"
    copy.mkdir()
    for kept in ("activation-atlas.json", "layout.npy", "vectors.npz"):
        (copy / kept).write_bytes((out / kept).read_bytes())
    target = copy / name
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(filterviz.OutputError, match=message):
        filterviz.activation_atlas(random_params, folder, out=copy, progress=False, **SMALL)


def test_a_changed_photo_makes_a_finished_atlas_a_new_one_and_out_inside_the_photos_resumes(
    random_params, tmp_path
):
    photos = _two_class_folder(tmp_path / "photos", count=4)
    out = photos / "atlas"  # inside the photo folder: its own icons are never read as photos
    settings = {**SMALL, "grid": 2, "min_count": 1}
    first = filterviz.activation_atlas(random_params, photos, out=out, progress=False, **settings)
    again = filterviz.activation_atlas(random_params, photos, out=out, progress=False, **settings)
    assert first.paths == again.paths and not any(path.startswith("atlas/") for path in again.paths)
    changed = photos / "red" / "0.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(changed)
    with pytest.raises(filterviz.OutputError, match="images_digest"):
        filterviz.activation_atlas(random_params, photos, out=out, progress=False, **settings)


def test_overwrite_starts_again_and_deletes_only_the_atlas_s_own_files(drawn, random_params, tmp_path):
    folder, out, _ = drawn
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    mine = {"notes.txt": b"mine", "icons/g4/mine.png": _png_bytes(), "patches/extra/keep.txt": b"kept"}
    for name, data in mine.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    other = {**SMALL, "seed": 1}
    with pytest.raises(filterviz.OutputError, match=r"seed: 0 in the folder, 1 asked.*--overwrite"):
        filterviz.activation_atlas(random_params, folder, out=copy, progress=False, **other)
    redrawn = filterviz.activation_atlas(
        random_params, folder, out=copy, progress=False, overwrite=True, **other
    )
    assert {name: (copy / name).read_bytes() for name in mine} == mine
    record = json.loads((copy / "activation-atlas.json").read_text())
    assert record["settings"]["seed"] == 1 and redrawn.page == copy / "atlas.html"
    drawn_icons = {str(path.relative_to(copy)) for path in copy.glob("icons/*/*.png")} - {"icons/g4/mine.png"}
    wanted_icons = {cell["icon"] for cells in record["levels"].values() for cell in cells}
    assert drawn_icons == wanted_icons  # no icon of the earlier atlas is left behind


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
