"""Dataset examples under hostile folders: nothing written outside the output folder, no silently wrong
result on resume or beside another sweep, no empty selection read as everything, no crash on a line."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import filterviz
from filterviz.cli import main
from filterviz.errors import OutputError, SettingError, SweepError

LAYER = "block1_conv1"


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for index in range(4):
        pixels = rng.uniform(0, 255, (20, 20, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    return folder


def run(params, photos, out, **settings):
    settings = {"image_size": 16, "count": 2, "progress": False, **settings}
    return filterviz.examples(params, photos, settings.pop("layers", [LAYER]), out=out, **settings)


def test_crops_are_never_written_through_a_link_or_a_name_that_leaves_the_folder(
    random_params, photos, tmp_path
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for linked in ("examples", f"examples/{LAYER}"):
        out = tmp_path / linked.replace("/", "_")
        (out / linked).parent.mkdir(parents=True, exist_ok=True)
        (out / linked).symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(OutputError, match="symbolic link"):
            run(random_params, photos, out)
        assert not os.listdir(elsewhere)  # refused before the pass: nothing went through the link
    linked_out = tmp_path / "linked_out"
    linked_out.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputError, match="symbolic link"):
        run(random_params, photos, linked_out)
    for empty in ("", " "):
        with pytest.raises(OutputError, match="no path"):
            run(random_params, photos, empty)
    assert main(["examples", str(photos), "--layers", LAYER, "--out", "", "--size", "16"]) == 2


def test_a_layer_named_dotdot_and_empty_selections_are_refused(random_params, photos, tmp_path):
    import jax.numpy as jnp

    network = filterviz.core.network.Network(
        name="dots",
        layers=(filterviz.core.network.Layer("..", "Conv", 3),),
        forward=lambda params, images, names, redirect: {"..": images * jnp.ones(3)},
        output_size=lambda layer, height, width: (height, width),
    )
    with pytest.raises(SettingError, match="cannot name a folder"):
        filterviz.examples({}, photos, [".."], network=network, out=tmp_path / "dots", image_size=16)
    assert not (tmp_path / "examples").exists()
    for nothing in ([], ()):
        with pytest.raises(SettingError, match="no layers chosen"):
            run(random_params, photos, tmp_path / "none", layers=nothing)
        with pytest.raises(SettingError, match="no layers chosen"):
            filterviz.sweep(random_params, tmp_path / "sweep", layers=nothing, size=16, steps=1)


def test_a_users_file_on_a_crop_path_is_refused_before_the_pass(random_params, photos, tmp_path):
    out = tmp_path / "out"
    (out / "examples" / LAYER).mkdir(parents=True)
    (out / "examples" / LAYER / "0000_0.png").write_bytes(b"my own picture")
    with pytest.raises(OutputError, match="not written by filterviz"):
        run(random_params, photos, out)
    assert (out / "examples" / LAYER / "0000_0.png").read_bytes() == b"my own picture"
    assert not (out / "examples.progress.npz").exists()  # refused before the pass saved anything


def test_a_rerun_with_fewer_hits_or_other_layers_leaves_no_stale_crops(random_params, photos, tmp_path):
    out = tmp_path / "out"
    run(random_params, photos, out, count=3, layers=[LAYER, "block1_conv2"])
    assert (out / "examples" / "block1_conv2").is_dir()
    again = run(random_params, photos, out, count=1)
    crops = sorted(str(p.relative_to(out)) for p in (out / "examples").rglob("*.png"))
    named = sorted(hit["crop"] for record in again.records for hit in record["hits"])
    assert crops == named and all(name.endswith("_0.png") for name in crops)


def test_changed_images_are_not_resumed_and_other_weights_stay_out_of_a_sweep(
    random_params, params, photos, tmp_path
):
    from filterviz.io.photos import images_digest

    paths = sorted(os.listdir(photos))
    before = images_digest(photos, paths)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(photos / paths[0])
    os.utime(photos / paths[0], ns=(1, 1))
    assert images_digest(photos, paths) != before  # a saved pass over these images does not resume
    sweep_folder = tmp_path / "sweep"
    filterviz.sweep(params, sweep_folder, layers=[LAYER], filters=[0, 1], size=16, steps=1, progress=False)
    with pytest.raises(SweepError, match="other weights"):
        run(random_params, photos, sweep_folder)
    assert not (sweep_folder / "examples.jsonl").exists()
    run(params, photos, sweep_folder)  # the sweep's own weights are welcome
    assert (sweep_folder / "examples.jsonl").exists()


def test_deeply_nested_lines_are_bad_lines_not_crashes(random_params, photos, tmp_path):
    out = tmp_path / "out"
    run(random_params, photos, out)
    deep = "[" * 100_000 + "]" * 100_000
    with open(out / "examples.jsonl", "a") as file:
        file.write(deep + "\n")
    assert main(["atlas", str(out)]) in (0, 2)  # a folder of examples alone has no sweep to show
    folder = tmp_path / "sweep"
    filterviz.sweep(random_params, folder, layers=[LAYER], filters=[0], size=16, steps=1, progress=False)
    with open(folder / "manifest.jsonl", "a") as file:
        file.write(deep + "\n")
    assert main(["atlas", str(folder)]) == 0
    settings = folder / "sweep.json"  # 1e999 parses as infinity, which no page can hold
    settings.write_text(settings.read_text().replace('"steps": 1', '"steps": 1e999'))
    assert main(["atlas", str(folder)]) == 2


def test_names_that_are_not_text_and_a_file_named_like_a_network(
    random_params, photos, tmp_path, monkeypatch, capsys
):
    odd = os.path.join(os.fsencode(photos), b"caf\xe9\x1b[31m.png")
    with open(odd, "wb") as file:
        file.write(b"not an image at all")
    found = run(random_params, photos, tmp_path / "out")  # hashed, scanned and listed, no crash
    assert len(found.skipped) == 1 and "caf" in found.skipped[0][0]
    weights = os.environ.get("FILTERVIZ_WEIGHTS")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vgg16").write_text("a file of mine")  # --model vgg16 still means the built-in
    arguments = ["examples", str(photos), "--layers", LAYER, "--out", "named", "--size", "16", "--k", "1"]
    assert main([*arguments, *(["--weights", weights] if weights else []), "--model", "vgg16"]) == 0
    printed = capsys.readouterr().err
    assert "\x1b" not in printed and "\\x1b" in printed  # the skipped name, escaped


def test_a_write_that_fails_takes_back_its_crops(random_params, photos, tmp_path, monkeypatch):
    from filterviz.dataset_examples import results as example_files

    real = example_files.atomic_write
    written = []

    def full_after_three(path, data, **options):
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        written.append(path)
        return real(path, data, **options)

    monkeypatch.setattr(example_files, "atomic_write", full_after_three)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space"):
        run(random_params, photos, out, workers=1)
    assert len(written) == 3 and not any(path.exists() for path in written)
    assert not list((out / "examples").rglob("*.png")) and not (out / "examples.jsonl").exists()
