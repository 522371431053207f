"""filterviz under hostile input: sweep folders it does not own, damaged and hand-edited sweeps, concurrent
runs, outputs that must not be clobbered, photos and numbers that must be refused in one line, and a
random sequence of kills, resumes, damage and concurrent starts that must end with every filter once."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import filterviz
from filterviz.cli import main
from filterviz.io import files
from filterviz.jobs.folder import FolderLock
from filterviz.sweeps.manifest import read_manifest, scan_manifest
from support import WORKER, page_data, page_text

TINY = {"size": (16, 16), "steps": 1}


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
    from support import chromium

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
        filterviz.save_picture(picture[None], tmp_path / "movie.png")
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
# Random kills, resumes, damage and concurrent starts: every filter exactly once, every file whole,
# no user file touched.


def start_worker(folder: Path, plan: dict) -> subprocess.Popen:
    request = {"folder": str(folder), "sweep": plan}
    environment = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        # The suite's own flags kept (and so its compiled programs): one CPU device whatever else is set.
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=1".strip(),
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
