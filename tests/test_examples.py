"""Dataset examples: the running top-k against a brute-force NumPy reference, receptive fields against
the networks' arithmetic, and the folder pass end to end (a red patch found by a red filter, unreadable
images skipped, crops and examples.jsonl written, the CLI's errors in one line)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import filterviz
from filterviz.cli import build_parser, main
from filterviz.core.hits import EMPTY, empty_top_k, image_responses, merge, merge_top_k, receptive_field
from filterviz.core.network import preprocess
from filterviz.errors import ImageError, OutputError, SettingError, SweepError
from filterviz.io.files import written_by_filterviz
from filterviz.io.photos import find_images, load_fitted
from filterviz.jobs.folder import FolderLock
from support import page_data, page_text, run_two_processes, run_worker


def brute_force_top_k(activations: np.ndarray, k: int, ranking: str = "max"):
    """Each filter's k best images, best first, ties to the lower index: NumPy, one image at a time."""
    count, height, width, channels = activations.shape
    flat = activations.reshape(count, height * width, channels)
    scores = flat.max(axis=1) if ranking == "max" else flat.mean(axis=1)
    where = flat.argmax(axis=1)
    result = []
    for channel in range(channels):
        order = sorted(range(count), key=lambda image: (-scores[image, channel], image))[:k]
        result.append([(image, divmod(int(where[image, channel]), width)) for image in order])
    return scores, result


@pytest.mark.parametrize("ranking", ["max", "mean"])
def test_top_k_in_any_batching_and_merged_from_parts_equals_brute_force(ranking):
    rng = np.random.default_rng(0)
    # Rounded values: many exact ties, which the order (score, then image) must break the same way.
    activations = np.round(rng.normal(size=(23, 5, 4, 6)), 1).astype(np.float32)
    k = 5
    scores, expected = brute_force_top_k(activations, k, ranking)

    def stream(first: int, last: int, batch: int):
        top = empty_top_k(6, k)
        for start in range(first, last, batch):
            chunk = activations[start : min(start + batch, last)]
            indices = np.arange(start, start + len(chunk), dtype=np.int32)
            pad = batch - len(chunk)  # a short last batch is padded, as the folder pass pads it
            chunk = np.concatenate([chunk, np.full((pad, *chunk.shape[1:]), 1e9, np.float32)])
            indices = np.concatenate([indices, np.full(pad, EMPTY, np.int32)])
            responses = image_responses(jnp.asarray(chunk))
            top = merge(top, responses.scores(ranking), indices, responses.positions)
        return top

    whole = stream(0, 23, 4)
    # Two "devices" with uneven shares, merged afterwards in either order.
    parts = [stream(0, 9, 3), stream(9, 23, 5)]
    for top in (whole, merge_top_k(*parts), merge_top_k(*parts[::-1])):
        for channel in range(6):
            got = [
                (int(i), tuple(int(v) for v in p))
                for i, p in zip(top.images[channel], top.positions[channel], strict=True)
            ]
            assert got == expected[channel]
            want = [scores[image, channel] for image, _ in expected[channel]]
            # max is exact; a mean's sum may round differently in XLA and NumPy (the order stays exact)
            np.testing.assert_allclose(
                np.asarray(top.scores[channel]), np.float32(want), rtol=1e-6 * (ranking == "mean")
            )


def test_fewer_images_than_k_leave_empty_slots():
    top = merge(
        empty_top_k(2, 4), jnp.ones((1, 2)), jnp.asarray([7], jnp.int32), jnp.zeros((1, 2, 2), jnp.int32)
    )
    assert top.images.tolist() == [[7, EMPTY, EMPTY, EMPTY]] * 2


@pytest.mark.parametrize(
    "name, layer, size, stride, first",
    # VGG16: 'same' 3x3 convolutions and 2x2 pools; ResNet50: a 7x7 stride-2 convolution after a 3-pixel pad.
    # `first`: where the field of position (0, 0) starts, above and left of the image.
    [
        ("vgg16", "block1_conv1", 3, 1, -1),
        ("vgg16", "block1_conv2", 5, 1, -2),
        ("vgg16", "block1_pool", 6, 2, -2),
        ("vgg16", "block3_conv1", 24, 4, -10),
        ("resnet50", "conv1_conv", 7, 2, -3),
    ],
)
def test_receptive_fields_match_the_layers_arithmetic(name, layer, size, stride, first, random_params):
    network = filterviz.network(name)
    if name == "vgg16":
        params = random_params
    else:  # constant weights: a field is the network's structure (and they cost no initialising pass)
        shapes = network.parameter_shapes
        params = {
            group: {key: jnp.full(shape, 0.01) for key, shape in names.items()}
            for group, names in shapes.items()
        }
    box, strides = receptive_field(network, params, layer)
    assert box == (first, first, first + size, first + size) and strides == (stride, stride)


def test_photos_are_fitted_by_cropping_the_middle_or_resizing(tmp_path):
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 30:50] = 255  # a bright band in the middle
    Image.fromarray(image).save(tmp_path / "band.png")
    cropped = load_fitted(tmp_path / "band.png", 20, "crop")
    assert cropped.dtype == np.uint8 and cropped.shape == (20, 20, 3)
    assert cropped[:, 8:12].min() > 200 and cropped[:, 0].max() < 60
    resized = load_fitted(tmp_path / "band.png", 20, "resize")
    assert resized.shape == (20, 20, 3) and resized[:, 9].min() > 200 and resized[:, 5].max() < 60
    # A large JPEG is decoded reduced (its 1/4 draft covers 100 pixels), the same picture as in full.
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.uniform(0, 255, (12, 16, 3)).astype(np.uint8)).resize((1600, 1200))
    smooth.save(tmp_path / "large.jpg", quality=95)
    reduced = load_fitted(tmp_path / "large.jpg", 100).astype(np.float32)
    full = np.asarray(smooth.crop((200, 0, 1400, 1200)).resize((100, 100), Image.Resampling.BICUBIC))
    assert np.abs(reduced - full).mean() < 3
    with pytest.raises(SettingError, match="unknown fit"):
        load_fitted(tmp_path / "band.png", 20, "squeeze")


@pytest.fixture
def photo_folder(tmp_path):
    """Seven grey photos in two class folders (one with a red patch), one broken file, one symlink."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    for index in range(7):
        pixels = np.full((40, 48, 3), 128.0) + rng.normal(0, 3, (40, 48, 3))
        if index == 3:
            pixels[12:22, 20:30] = (255, 0, 0)
        (folder / "ab"[index % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / "ab"[index % 2] / f"{index}.png")
    (folder / "a" / "broken.jpg").write_text("not an image")
    (folder / "b" / "link.png").symlink_to(folder / "a" / "0.png")
    return folder


def red_filter(params) -> int:
    # The block1_conv1 filter that prefers red over grey the most, in the network's own input convention
    # (the photos of a dataset go in as the weights were trained: caffe's BGR minus the mean).
    vgg16 = filterviz.network("vgg16")
    images = preprocess(jnp.asarray([np.full((8, 8, 3), (255.0, 0, 0)), np.full((8, 8, 3), 128.0)]), "caffe")
    activation = vgg16.apply(params, images, ["block1_conv1"])["block1_conv1"][:, 4, 4]
    return int(jnp.argmax(activation[0] - activation[1]))


def test_a_red_patch_is_the_red_filters_best_example(params, photo_folder, tmp_path):
    readable = ["a/0.png", "a/2.png", "a/4.png", "a/6.png", "b/1.png", "b/3.png", "b/5.png"]
    assert find_images(photo_folder) == [*readable[:4], "a/broken.jpg", *readable[4:]]  # no symlink
    out = tmp_path / "out"
    found = filterviz.examples(
        params, photo_folder, ["block1_conv1", "block2_conv1"], out=out, k=3, size=32, batch_size=4
    )
    assert [path for path, _ in found.skipped] == ["a/broken.jpg"] and "b/link.png" not in found.images
    lines = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert lines == found.records and len(lines) == 64 + 128
    red = lines[red_filter(params)]
    best = red["hits"][0]
    assert best["image"] == "b/3.png" and red["images"] == 7
    # The hit lies on the patch: rows 12-22 and columns 20-30 of 40x48, fitted to 32x32 (scaled by 0.8,
    # the middle 32 of 38 columns kept).
    assert 9 <= best["y"] <= 18 and 12 <= best["x"] <= 22
    crop = out / best["crop"]
    assert written_by_filterviz(crop)
    pixels = np.asarray(Image.open(crop))
    assert pixels.shape == (3, 3, 3) and pixels[..., 0].mean() > pixels[..., 1].mean() + 50
    assert sum(red["histogram"]) == 7 and 0 <= red["fired"] <= 1

    # The same top-k as a brute force over the same fitted images.
    fitted = np.asarray([load_fitted(photo_folder / path, 32) for path in readable], np.float32)
    inputs = preprocess(jnp.asarray(fitted), "caffe")
    activations = np.asarray(
        filterviz.network("vgg16").apply(params, inputs, ["block2_conv1"])["block2_conv1"]
    )
    _, expected = brute_force_top_k(activations, 3)
    for record in lines[64:]:
        got = [(hit["image"], (hit["y"], hit["x"])) for hit in record["hits"]]
        assert got == [(readable[i], position) for i, position in expected[record["filter"]]]


def test_examples_refuse_bad_settings_and_folders(params, photo_folder, tmp_path):
    with pytest.raises(ImageError, match="no such folder"):
        filterviz.examples(params, tmp_path / "missing", ["block1_conv1"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no images"):
        filterviz.examples(params, tmp_path / "empty", ["block1_conv1"])
    with pytest.raises(SettingError, match="count must be"):
        filterviz.examples(params, photo_folder, ["block1_conv1"], count=0)
    with pytest.raises(SettingError, match="unknown ranking"):
        filterviz.examples(params, photo_folder, ["block1_conv1"], ranking="median")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "examples.jsonl").write_text("my own notes\n")
    with pytest.raises(OutputError, match="not written by filterviz"):
        filterviz.examples(params, photo_folder, ["block1_conv1"], out=theirs, size=32)
    assert (theirs / "examples.jsonl").read_text() == "my own notes\n"


def test_cli_examples_writes_and_reports_errors_in_one_line(weights_path, photo_folder, tmp_path, capsys):
    out = tmp_path / "out"
    arguments = ["examples", str(photo_folder), "--out", str(out), "--layers", "block1_conv1"]
    arguments += ["--size", "32", "--k", "2", "--weights", str(weights_path), "--quiet"]
    assert main(arguments) == 0
    assert "skipped a/broken.jpg: not an image Pillow can read\n" in capsys.readouterr().err
    assert len((out / "examples.jsonl").read_text().splitlines()) == 64
    assert main(arguments) == 0  # its own results are replaced
    capsys.readouterr()
    assert main(["examples", str(tmp_path / "missing"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no such folder" in error
    assert main([*arguments[:2], "--out", str(out), "--layers", "block9_conv9"]) == 2
    # An output folder inside the images: its crops never become images of the next run.
    inside = [*arguments[:2], "--out", str(photo_folder / "results"), *arguments[4:]]
    assert main(inside) == 0 and main(inside) == 0
    record = json.loads((photo_folder / "results" / "examples.jsonl").read_text().splitlines()[0])
    assert record["images"] == 7 and len(find_images(photo_folder)) > 8  # the crops are there
    # Several hosts join as for a sweep (the two-process pass itself is tested below, from the API).
    cluster = ["--coordinator", "host:1234", "--num-processes", "2", "--process-id", "1"]
    parsed = build_parser().parse_args([*arguments, *cluster])
    assert (parsed.coordinator, parsed.num_processes, parsed.process_id) == ("host:1234", 2, 1)


# ----------------------------------------------------------------------------------------------------
# At scale: every device, a kill, a second writer.

SETTINGS = {"layers": ["block1_conv2", "block2_conv1"], "k": 4, "size": 32, "batch_size": 2}


def grey_photos(folder: Path, count: int) -> Path:
    """``count`` small noisy photos, some with a coloured square, and one broken file."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for index in range(count):
        pixels = np.full((24, 28, 3), 120.0) + rng.normal(0, 20, (24, 28, 3))
        if index % 5 == 0:
            y, x = rng.integers(0, 14, 2)
            pixels[y : y + 8, x : x + 8] = rng.uniform(0, 255, 3)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{index:03d}.png")
    (folder / "050_broken.png").write_bytes(b"\x89PNG broken")
    return folder


def assert_same_records(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs)
    for mine, other in zip(ours, theirs, strict=True):
        strip = ("activation",)
        assert [{k: v for k, v in hit.items() if k not in strip} for hit in mine["hits"]] == [
            {k: v for k, v in hit.items() if k not in strip} for hit in other["hits"]
        ]
        np.testing.assert_allclose(
            [hit["activation"] for hit in mine["hits"]],
            [hit["activation"] for hit in other["hits"]],
            rtol=1e-5,
        )
        assert (mine["images"], mine["fired"], mine["histogram"]) == (
            other["images"],
            other["fired"],
            other["histogram"],
        )
        np.testing.assert_allclose(
            [mine["mean"], mine["spatial_mean"]], [other["mean"], other["spatial_mean"]], rtol=1e-5
        )


def read_records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "examples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def grey_pass(random_params, tmp_path_factory):
    """100 small photos and a broken file, and the one-device pass over them, checked against a
    brute-force NumPy top-k of their activations."""
    photos = grey_photos(tmp_path_factory.mktemp("grey") / "photos", 100)
    expected = filterviz.examples(random_params, photos, **SETTINGS, progress=False)
    assert [path for path, _ in expected.skipped] == ["050_broken.png"]
    readable = [path for path in expected.images if path not in dict(expected.skipped)]
    pixels = np.stack([load_fitted(photos / path, SETTINGS["size"]) for path in readable]).astype(np.float32)
    network = filterviz.network("vgg16")
    activations = network.apply(random_params, preprocess(jnp.asarray(pixels), "caffe"), SETTINGS["layers"])
    records = iter(expected.records)
    for layer in SETTINGS["layers"]:
        _, best = brute_force_top_k(np.asarray(activations[layer]), SETTINGS["k"])
        for channel, hits in enumerate(best):
            record = next(records)
            assert (record["layer"], record["filter"]) == (layer, channel)
            assert [(h["image"], (h["y"], h["x"])) for h in record["hits"]] == [
                (readable[image], position) for image, position in hits
            ]
    return photos, expected


@pytest.mark.slow
def test_four_devices_give_the_one_device_result(grey_pass, tmp_path):
    photos, expected = grey_pass
    report = run_worker({"folder": str(photos), "examples": {**SETTINGS, "out": str(tmp_path)}}, devices=4)
    assert report["devices"] == 4
    assert_same_records(read_records(tmp_path), expected.records)


@pytest.mark.slow
def test_a_killed_pass_resumes_on_two_processes_losing_and_repeating_nothing(
    grey_pass, random_params, tmp_path
):
    photos, expected = grey_pass
    request = {"folder": str(photos), "examples": {**SETTINGS, "out": str(tmp_path), "save_seconds": 0}}
    worker = run_worker(request, wait=False)
    saved = tmp_path / "examples.progress.npz"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and worker.poll() is None and not saved.exists():
        time.sleep(0.01)
    assert worker.poll() is None, "the pass ended before it could be killed"
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    with np.load(saved) as progress:
        done = json.loads(str(progress["record"]))["done"]
    assert 0 < done < 101 and not (tmp_path / "examples.jsonl").exists()
    # Other settings do not take up this progress.
    with pytest.raises(OutputError, match="progress of other settings"):
        filterviz.examples(random_params, photos, **{**SETTINGS, "k": 3}, out=tmp_path, progress=False)
    # The same settings finish it, here on two processes (jax.distributed) of two devices each: each
    # decodes only its share of the images not yet done, and their hits merge with the saved ones exactly.
    reports = run_two_processes(request)
    assert [report["devices"] for report in reports] == [4, 4]
    decoded = [report["decoded"] for report in reports]
    assert sum(decoded) == 101 - done and abs(decoded[0] - decoded[1]) <= SETTINGS["batch_size"]
    assert reports[0]["records"] == reports[1]["records"]  # every process returns the whole result
    assert [path for path, _ in reports[0]["skipped"]] == ["050_broken.png"] and reports[0]["skipped"] == [
        list(item) for item in expected.skipped
    ]
    assert_same_records(read_records(tmp_path), expected.records)
    assert not saved.exists()


def test_a_second_writer_is_refused(random_params, photo_folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with FolderLock(out, "examples"), pytest.raises(SweepError, match="being written by another"):
        filterviz.examples(random_params, photo_folder, ["block1_conv1"], out=out, size=32)


# ----------------------------------------------------------------------------------------------------
# One atlas: a sweep's pictures beside their dataset examples.


def test_the_atlas_shows_pictures_beside_their_examples_in_a_browser(random_params, photo_folder, tmp_path):
    from support import chromium

    folder = tmp_path / "atlas"
    filterviz.sweep(random_params, folder, layers=["block1_conv1"], filters=range(4), size=(24, 24), steps=2)
    filterviz.examples(
        random_params, photo_folder, ["block1_conv1"], out=folder, k=3, size=32, progress=False
    )
    # A hostile line among filterviz's: a crop outside the folder and markup in an image name.
    lines = (folder / "examples.jsonl").read_text().splitlines()
    hostile = json.loads(lines[1])
    hostile["hits"][0]["crop"] = "../../outside.png"
    marked = json.loads(lines[2])
    marked["hits"][0]["image"] = "<script>alert(1)</script>.png"
    lines[1:3] = [json.dumps(hostile), json.dumps(marked)]
    (folder / "examples.jsonl").write_text("\n".join(lines) + "\n")

    written = filterviz.write_atlas(folder)
    assert any("line 2: crop '../../outside.png'" in problem for problem in written.problems)
    page = page_text(written.page)
    assert "<script>alert" not in page and "outside.png" not in page
    data = page_data(written.page)
    filters = {entry["filter"]: entry for entry in data["layers"][0]["filters"]}
    assert "examples" not in filters[1] and len(filters[0]["examples"]["hits"]) == 3
    assert filters[2]["examples"]["hits"][0]["image"] == "<script>alert(1)</script>.png"  # as text

    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    done = subprocess.run(
        [*command, "--dump-dom", written.page.resolve().as_uri()], capture_output=True, text=True, timeout=120
    )
    dom = done.stdout
    assert "<body" in dom, done.stderr[-2000:]
    body = dom[dom.index("<body") : dom.index(">", dom.index("<body"))]
    assert 'data-loaded="4"' in body and 'data-failed="0"' in body, body
    # Three filters show their examples (filter 1's line was refused), each with its statistics.
    assert dom.count('alt="dataset example"') == 9 and dom.count('class="statistics">fires on ') == 3
    assert dom.count('class="histogram"') == 3 and "photos in (-Infinity, 0]" in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in dom and "<script>alert(1)" not in dom


def test_a_record_names_the_settings_that_differ_and_refuses_foreign_files(tmp_path):
    from filterviz.jobs.folder import read_record, settings_differences

    assert settings_differences({"steps": 20, "size": 64}, {"steps": 10, "size": 64}) == [
        "steps: 20 in the folder, 10 asked"
    ]
    assert settings_differences([1, 2], {"steps": 10}) == ["the folder records no settings"]
    assert read_record(tmp_path / "absent.json") is None
    for name, content in [("list.json", "[1, 2]"), ("deep.json", "[" * 100_000), ("text.json", "not json")]:
        (tmp_path / name).write_text(content)
        with pytest.raises(OutputError, match="not a record filterviz wrote"):
            read_record(tmp_path / name)
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(OutputError, match="not a record filterviz wrote"):
        read_record(tmp_path / "folder.json")
