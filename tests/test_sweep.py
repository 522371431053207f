"""Sweeps: files and manifest, equality with the plain ascent, resume, refusal, failures, sharding over
devices and processes, kill-and-resume, the atlas views."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import filterviz
from filterviz.networks import weights
from filterviz.sweeps import sweep as sweep_module  # the package's `sweep` is the function
from filterviz.sweeps.manifest import read_manifest
from support import run_two_processes, run_worker

SMALL = {"size": (24, 24), "steps": 3}


def raw_images(folder: Path) -> dict[tuple[str, int], np.ndarray]:
    return {(e["layer"], e["filter"]): np.load(folder / e["raw"]) for e in read_manifest(folder)}


def manifest_keys(folder: Path) -> list[tuple[str, int]]:
    """Every (layer, filter) of every manifest line of ``folder``, repeats included."""
    keys = []
    for path in folder.glob("manifest*.jsonl"):
        keys += [(e["layer"], e["filter"]) for e in map(json.loads, path.read_text().splitlines())]
    return keys


# ----------------------------------------------------------------------------------------------------
# One process, one device.


def test_sweep_writes_a_picture_and_a_manifest_line_per_filter(random_params, tmp_path):
    result = filterviz.sweep(
        random_params, tmp_path, layers=["block1_conv2", "block2_pool"], filters=[0, 5, 9], raw=True, **SMALL
    )
    assert (result.written, result.skipped) == (6, 0)
    entries = read_manifest(tmp_path)
    assert [(e["layer"], e["filter"]) for e in entries] == [
        (layer, f) for layer in ("block1_conv2", "block2_pool") for f in (0, 5, 9)
    ]
    start = np.asarray(filterviz.random_image(jax.random.key(0), 24, 24))
    for entry in entries:
        assert (entry["seed"], entry["steps"], entry["height"], entry["precision"]) == (0, 3, 24, "float32")
        picture = filterviz.load_image(tmp_path / entry["png"])
        assert picture.shape == (24, 24, 3)
        image = np.load(tmp_path / entry["raw"])
        # The recorded activation is the filter's mean activation on its own ascended image, which rose.
        achieved = filterviz.activations(random_params, image, entry["layer"])[0, ..., entry["filter"]].mean()
        before = filterviz.activations(random_params, start, entry["layer"])[0, ..., entry["filter"]].mean()
        assert entry["activation"] == pytest.approx(float(achieved), rel=1e-4, abs=1e-5)
        # A filter silent on the start gets no gradient (a dead filter, flagged by the atlas).
        assert entry["activation"] > before or entry["activation"] == before == 0
        np.testing.assert_array_equal(picture, filterviz.as_image(image))
    settings = json.loads((tmp_path / "sweep.json").read_text())["settings"]
    assert settings["weights"] == weights.content_digest(random_params)


def test_sweep_pictures_equal_the_plain_ascent(random_params, tmp_path):
    filters = [3, 1, 7, 2, 11]
    filterviz.sweep(random_params, tmp_path, layers=["block3_conv1"], filters=filters, raw=True, **SMALL)
    start = filterviz.random_image(jax.random.key(0), 24, 24)
    expected = filterviz.ascend(random_params, "block3_conv1", sorted(filters), start, steps=3)
    saved = raw_images(tmp_path)
    for row, f in enumerate(sorted(filters)):
        np.testing.assert_allclose(saved["block3_conv1", f], expected[row], rtol=0, atol=1e-4)


def test_programs_compile_once_and_ahead_from_many_threads(random_params):
    """A sweep compiles later layers' programs on host threads: a program asked for by several threads
    at once is compiled once, and the pictures are those of the plain ascent."""
    start = np.asarray(filterviz.random_image(jax.random.key(0), 16, 16))
    from filterviz.core.methods import notebook_method
    from filterviz.sweeps.filter_chunks import ShardedAscent

    vgg16 = filterviz.network("vgg16")
    ascent = ShardedAscent(vgg16, random_params, notebook_method(steps=2), start, size=(16, 16))
    compiles = []

    def count(event: str, seconds: float, **_) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(seconds)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        ascent.compile_ahead([("block1_conv2", 3), ("block2_conv1", 2)], threads=4).shutdown(wait=True)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda _: ascent.program("block1_conv2", ascent.chunk_size("block1_conv2", 3)), range(4)
                )
            )
        assert len(compiles) == 2  # one program per layer, however many threads asked
        chunks = list(ascent.run("block2_conv1", np.array([5, 1])))
        assert len(compiles) == 2  # run() used the program compiled ahead
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    images = np.concatenate([np.asarray(chunk.images)[: len(chunk.filters)] for chunk in chunks])
    expected = filterviz.ascend(random_params, "block2_conv1", [5, 1], start, steps=2)
    np.testing.assert_allclose(images, expected, rtol=0, atol=1e-4)


def test_a_photo_start_is_used_and_recorded(random_params, tmp_path):
    photo = np.linspace(0, 255, 20 * 30 * 3, dtype=np.float32).reshape(20, 30, 3)
    filterviz.sweep(
        random_params, tmp_path, layers=["block1_conv1"], filters=[2], start=photo, steps=0, raw=True
    )
    (entry,) = read_manifest(tmp_path)
    assert entry["start"].startswith("image sha256:")
    np.testing.assert_array_equal(np.load(tmp_path / entry["raw"]), photo)  # zero steps: the photo itself


def test_running_again_finishes_only_what_is_missing(random_params, tmp_path, monkeypatch):
    first = filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=range(4), **SMALL)
    assert (first.written, first.skipped) == (4, 0)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "block1_conv1").iterdir()}
    # A wider plan with the same settings: only the new filters are computed.
    second = filterviz.sweep(
        random_params, tmp_path, layers=["block1_conv1", "block1_conv2"], filters=range(6), **SMALL
    )
    assert (second.written, second.skipped) == (8, 4)
    for name, mtime in before.items():
        assert (tmp_path / "block1_conv1" / name).stat().st_mtime_ns == mtime
    assert sorted(manifest_keys(tmp_path)) == sorted(
        (layer, f) for layer in ("block1_conv1", "block1_conv2") for f in range(6)
    )
    third = filterviz.sweep(
        random_params, tmp_path, layers=["block1_conv1", "block1_conv2"], filters=range(6), **SMALL
    )
    assert (third.written, third.skipped) == (0, 12)


def test_other_settings_are_refused_unless_overwritten(random_params, tmp_path):
    filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=[0, 1], **SMALL)
    with pytest.raises(filterviz.SweepError, match=r"steps: 3 in the folder, 4 asked"):
        filterviz.sweep(
            random_params, tmp_path, layers=["block1_conv1"], filters=[0, 1], size=(24, 24), steps=4
        )
    with pytest.raises(filterviz.SweepError, match="seed"):
        filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=[0], seed=1, **SMALL)
    assert len(read_manifest(tmp_path)) == 2  # the refused calls changed nothing
    result = filterviz.sweep(
        random_params, tmp_path, layers=["block1_conv2"], filters=[3], size=(24, 24), steps=4, overwrite=True
    )
    assert result.written == 1
    assert [(e["layer"], e["steps"]) for e in read_manifest(tmp_path)] == [("block1_conv2", 4)]
    assert not (tmp_path / "block1_conv1").exists()


def test_a_sweep_records_its_network_and_refuses_another(random_params, tmp_path):
    filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=[0], **SMALL)
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert record["settings"]["network"] == "vgg16" and record["layers"]["block5_conv3"] == 512
    vgg19 = filterviz.network("vgg19")
    with pytest.raises(filterviz.SweepError, match=r"network: 'vgg16' in the folder, 'vgg19' asked"):
        filterviz.sweep(
            vgg19.init(jax.random.key(0)),
            tmp_path,
            layers=["block1_conv1"],
            filters=[0],
            network=vgg19,
            **SMALL,
        )
    assert len(read_manifest(tmp_path)) == 1


BEFORE_NETWORKS = Path(__file__).with_name("data") / "sweep_before_networks"
"""A sweep folder written by filterviz before networks were values (sweep.json without a network or a
layer table): block1_conv1 filters 0 and 1 at 24x24, 2 steps, the ImageNet weights."""


def test_a_folder_written_before_networks_still_resumes(params, tmp_path):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(BEFORE_NETWORKS, folder)
    old = {name: (folder / "block1_conv1" / name).read_bytes() for name in ("0000.png", "0001.png")}
    settings = {"layers": ["block1_conv1"], "size": (24, 24), "steps": 2, "progress": False}
    result = filterviz.sweep(params, folder, filters=range(4), **settings)
    assert (result.written, result.skipped) == (2, 2)
    assert json.loads((folder / "sweep.json").read_text())["settings"]["network"] == "vgg16"
    fresh = tmp_path / "fresh"
    filterviz.sweep(params, fresh, filters=range(4), **settings)
    for index in range(4):  # the old pictures kept, and the engine draws them again byte for byte
        name = f"{index:04d}.png"
        ours = (folder / "block1_conv1" / name).read_bytes()
        assert ours == (fresh / "block1_conv1" / name).read_bytes()
        if name in old:
            assert ours == old[name]
    assert filterviz.write_atlas(folder).problems == ()


def test_bad_arguments_raise_typed_errors_before_any_work(random_params, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(filterviz.UnknownLayerError, match="valid layers"):
        filterviz.sweep(random_params, out, layers=["block9_conv1"])
    with pytest.raises(filterviz.FilterIndexError, match="0-63"):
        filterviz.sweep(random_params, out, layers=["block1_conv1"], filters=[64])
    with pytest.raises(filterviz.SettingError, match="precision"):
        filterviz.sweep(random_params, out, layers=["block1_conv1"], precision="float16")
    with pytest.raises(filterviz.ImageError):
        filterviz.sweep(random_params, out, layers=["block1_conv1"], start=np.zeros((4, 4)))
    assert not out.exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(filterviz.OutputError):
        filterviz.sweep(random_params, a_file, layers=["block1_conv1"], filters=[0], **SMALL)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "sweep.json").write_text("not json")
    with pytest.raises(filterviz.SweepError, match="not a filterviz sweep"):
        filterviz.sweep(random_params, foreign, layers=["block1_conv1"], filters=[0], **SMALL)


def test_a_full_disk_stops_the_sweep_and_keeps_finished_work(random_params, tmp_path, monkeypatch):
    real_write = sweep_module.atomic_write
    calls = []

    def write_until_full(path, data, **kwargs):
        calls.append(path)
        if len(calls) > 2:  # the pictures' writes (sweep.json is written by the folder's module)
            raise filterviz.OutputError(path, "cannot write (No space left on device)")
        return real_write(path, data, **kwargs)

    monkeypatch.setattr(sweep_module, "atomic_write", write_until_full)
    with pytest.raises(filterviz.OutputError, match="No space left"):
        filterviz.sweep(
            random_params, tmp_path, layers=["block1_conv1"], filters=range(8), writer_threads=1, **SMALL
        )
    # Two pictures were written, each recorded, then the disk filled: nothing half-written.
    assert [e["filter"] for e in read_manifest(tmp_path)] == [0, 1]
    assert sorted(p.name for p in (tmp_path / "block1_conv1").iterdir()) == ["0000.png", "0001.png"]
    monkeypatch.setattr(sweep_module, "atomic_write", real_write)
    result = filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=range(8), **SMALL)
    assert (result.written, result.skipped) == (6, 2)


def test_a_cut_manifest_line_and_stale_temporaries_are_cleaned_up(random_params, tmp_path):
    filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=range(3), **SMALL)
    manifest = tmp_path / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    # As a kill leaves them: the last line half written, a temporary file never renamed.
    manifest.write_text("".join(lines[:2]) + lines[2][:17])
    stale = tmp_path / "block1_conv1" / ".0002.png.abc123.part"
    stale.write_bytes(b"\x89PNG half")
    # Writers finish in any order: the lines kept are the first two, whichever filters they hold.
    kept = sorted(json.loads(line)["filter"] for line in lines[:2])
    assert [e["filter"] for e in read_manifest(tmp_path)] == kept
    result = filterviz.sweep(random_params, tmp_path, layers=["block1_conv1"], filters=range(3), **SMALL)
    assert (result.written, result.skipped) == (1, 2)
    assert not stale.exists()
    assert sorted(json.loads(line)["filter"] for line in manifest.read_text().splitlines()) == [0, 1, 2]


def test_precision_is_a_setting_and_bfloat16_still_ascends(random_params, tmp_path):
    result = filterviz.sweep(
        random_params,
        tmp_path,
        layers=["block2_conv1"],
        filters=[0, 1],
        precision="bfloat16",
        raw=True,
        **SMALL,
    )
    assert result.written == 2
    start = filterviz.random_image(jax.random.key(0), 24, 24)
    for entry in read_manifest(tmp_path):
        assert np.load(tmp_path / entry["raw"]).dtype == np.float32  # image state stays float32
        before = filterviz.activations(random_params, start, "block2_conv1")[0, ..., entry["filter"]].mean()
        assert entry["activation"] > before > 0
    with pytest.raises(filterviz.SweepError, match="precision"):
        filterviz.sweep(random_params, tmp_path, layers=["block2_conv1"], filters=[0], **SMALL)


# ----------------------------------------------------------------------------------------------------
# Several devices, several processes, a kill: each in processes of their own.

SHARDED_PLAN = {"layers": ["block1_conv2", "block2_pool"], "filters": list(range(7)), "raw": True, **SMALL}


@pytest.fixture(scope="module")
def one_device_sweep(tmp_path_factory) -> dict[tuple[str, int], np.ndarray]:
    folder = tmp_path_factory.mktemp("one_device")
    filterviz.sweep(filterviz.network("vgg16").init(jax.random.key(0)), folder, **SHARDED_PLAN)
    return raw_images(folder)


def assert_same_pictures(folder: Path, reference: dict[tuple[str, int], np.ndarray]) -> None:
    keys = manifest_keys(folder)
    assert len(keys) == len(set(keys)), "a filter was written twice"
    images = raw_images(folder)
    assert sorted(images) == sorted(reference), "filters missing or extra"
    for key, image in images.items():
        np.testing.assert_allclose(image, reference[key], rtol=0, atol=1e-3, err_msg=str(key))


@pytest.mark.slow
def test_four_devices_give_the_one_device_result(tmp_path, one_device_sweep):
    # 7 filters a layer over 4 devices: chunks are padded, and the padding is never written.
    report = run_worker({"folder": str(tmp_path), "sweep": {**SHARDED_PLAN, "size": [24, 24]}}, devices=4)
    assert report == {"written": 14, "skipped": 0, "devices": 4}
    assert_same_pictures(tmp_path, one_device_sweep)


@pytest.mark.slow
def test_two_processes_split_a_sweep_with_nothing_missing_or_repeated(tmp_path, one_device_sweep):
    reports = run_two_processes({"folder": str(tmp_path), "sweep": {**SHARDED_PLAN, "size": [24, 24]}})
    assert [r["devices"] for r in reports] == [4, 4]
    written = [r["written"] for r in reports]
    assert sum(written) == 14 and min(written) > 0  # both took a share
    assert sorted(p.name for p in tmp_path.glob("manifest*.jsonl")) == [
        "manifest.p0.jsonl",
        "manifest.p1.jsonl",
    ]
    shares = [{tuple(k) for k in manifest_keys_of(tmp_path / f"manifest.p{i}.jsonl")} for i in range(2)]
    assert not shares[0] & shares[1]
    assert_same_pictures(tmp_path, one_device_sweep)


def manifest_keys_of(path: Path) -> list[tuple[str, int]]:
    return [(e["layer"], e["filter"]) for e in map(json.loads, path.read_text().splitlines())]


@pytest.mark.slow
def test_a_killed_sweep_resumes_where_it_stopped(tmp_path):
    plan = {"layers": ["block3_conv1"], "filters": list(range(40)), "size": [32, 32], "steps": 10}
    request = {"folder": str(tmp_path), "sweep": plan}
    worker = run_worker(request, wait=False)
    manifest = tmp_path / "manifest.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and worker.poll() is None:
        if manifest.is_file() and manifest.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    assert worker.poll() is None, "the sweep ended before it could be killed"
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    finished = len(read_manifest(tmp_path))
    assert 3 <= finished < 40
    # No visible file is partial: every picture in the layer folder opens as a whole image.
    for picture in (tmp_path / "block3_conv1").glob("*.png"):
        assert filterviz.load_image(picture).shape == (32, 32, 3)
    report = run_worker(request)
    assert report["skipped"] == finished and report["written"] == 40 - finished
    keys = manifest_keys(tmp_path)
    assert sorted(keys) == [("block3_conv1", f) for f in range(40)]
