"""A bar that moves while one chunk draws: a watched render runs its ascent in segments of steps from the
host (the same three programs for every segment), with the same result as the one program an unwatched
render runs."""

from __future__ import annotations

import time

import jax
import numpy as np
import pytest

import filterviz
from filterviz import progress
from filterviz.core.methods import Octaves
from filterviz.draw import rendering

GROWN = Octaves(stages=2, scale=1.5)  # a 24-pixel ascent from 16 pixels
REINJECTED = Octaves(2, 1.5, last_at_full_size=True, requantize=False, reinject_detail=True)  # a dream


@pytest.mark.parametrize(
    ("method", "start", "alpha", "octaves", "frame_every"),
    [
        ("notebook", True, False, None, None),
        ("lucid", False, True, None, 2),  # frames: two of 5 steps, and a remainder
        ("octaves", False, False, GROWN, 2),
        ("notebook", True, False, REINJECTED, None),
    ],
)
def test_a_watched_render_draws_what_an_unwatched_one_does(
    random_params, method, start, alpha, octaves, frame_every, capsys
):
    objective = filterviz.channel("block2_conv1", [0, 4, 9])
    photos = None
    if start:
        photos = np.stack([np.asarray(filterviz.random_image(jax.random.key(i), 24, 24)) for i in range(3)])
    settings = dict(method=method, size=24, steps=5, start=photos, batch_size=2, alpha=alpha)  # two chunks
    if octaves is not None:  # each stage's steps counted; random transforms: each stage's key matters
        settings.update(octaves=octaves, transforms="standard")
    settings["frame_every"] = frame_every
    whole = filterviz.render(random_params, objective, progress=False, **settings)
    segmented = filterviz.render(random_params, objective, progress=True, **settings)
    total = 15 * (octaves.stages if octaves else 1)
    assert f"{total}/{total}" in capsys.readouterr().err
    # Bit for bit where XLA fuses the loop alike; a float32 rounding apart where it does not.
    np.testing.assert_allclose(segmented.pixels, whole.pixels, rtol=0, atol=1e-3)
    np.testing.assert_allclose(segmented.activations, whole.activations, rtol=1e-5)
    assert (whole.alpha is None) == (segmented.alpha is None) == (not alpha)
    assert (whole.frames is None) == (segmented.frames is None) == (frame_every is None)
    if frame_every is not None:
        assert segmented.frames.shape == whole.frames.shape
        assert whole.frames.shape[0] == 2 * (octaves.stages if octaves else 1)  # [F, N, K, H, W, 3]
        np.testing.assert_allclose(segmented.frames, whole.frames, rtol=0, atol=1e-3)
    if whole.alpha is not None:
        np.testing.assert_allclose(segmented.alpha, whole.alpha, rtol=0, atol=1e-5)


def test_the_bar_moves_while_one_chunk_draws(random_params, monkeypatch):
    seen: list[tuple[float, int, float | None, str]] = []
    updated = progress.Progress.update

    def update(bar: progress.Progress, units: int = 1) -> None:
        updated(bar, units)
        shown = bar._bar.format_dict if bar._bar is not None else {}
        rate = shown.get("rate")
        left = (bar.total - bar.count) / rate if rate else None
        seen.append((time.monotonic(), bar.count, left, str(shown.get("prefix"))))

    monkeypatch.setattr(progress.Progress, "update", update)
    monkeypatch.setattr(rendering, "SEGMENT_SECONDS", 0.2)
    objective = filterviz.channel("block2_conv2", [0, 1, 2, 3])
    filterviz.render(random_params, objective, method="lucid", size=48, steps=60, progress=True)
    finished = time.monotonic()
    times, counts, lefts, prefixes = zip(*seen, strict=True)
    assert counts[-1] == 4 * 60 and len(seen) >= 6, counts  # in one chunk, yet counted many times
    assert list(counts) == sorted(counts)
    assert len(set(prefixes)) == 1 and prefixes[0].endswith("4 filters"), prefixes  # no ": " piled on
    gaps = np.diff(times)
    assert gaps.max() < 0.5 * (finished - times[0]), gaps  # no burst at the end after a long silence
    half = next(index for index, count in enumerate(counts) if count >= counts[-1] / 2)
    truth, estimate = finished - times[half], lefts[half]
    assert estimate is not None and truth / 2 <= estimate <= 2 * truth, (estimate, truth)


def test_a_job_of_many_renders_shows_one_bar_of_steps_that_moves_within_each(
    random_params, monkeypatch, tmp_path
):
    """An atlas's icons (jobs/drawing.draw_pictures): one bar, of steps, that the renders count into as
    their segments end; no render shows a bar of its own."""
    from filterviz.core.methods import get_method
    from filterviz.jobs.drawing import draw_pictures

    counts: list[int] = []
    made: list[str] = []
    updated, made_bar = progress.Progress.update, progress.Progress.__init__

    def update(bar: progress.Progress, units: int = 1) -> None:
        updated(bar, units)
        counts.append(bar.count)

    def init(bar: progress.Progress, total: int, unit: str, description: str = "", **rest) -> None:
        made.append(description)
        made_bar(bar, total, unit, description, **rest)

    monkeypatch.setattr(progress.Progress, "update", update)
    monkeypatch.setattr(progress.Progress, "__init__", init)
    monkeypatch.setattr(rendering, "SEGMENT_SECONDS", 0.05)
    achieved = draw_pictures(
        random_params, filterviz.network("vgg16"), lambda rows: filterviz.channel("block1_conv2", rows),
        range(5), 5, lambda i: tmp_path / f"{i}.png", lambda i: i, get_method("lucid", steps=12), tmp_path,
        size=16, seed=0, chunk=3, shown=True, noun="icon", title="drawing",
    )  # fmt: skip
    assert np.isfinite(achieved).all() and len(list(tmp_path.glob("*.png"))) == 5
    assert made == ["drawing, 5 icons"]  # one bar, the job's
    assert counts[-1] == 5 * 12 and list(counts) == sorted(counts)
    assert len(counts) >= 2 * 2 + 1  # several counts within each of the two chunks


@pytest.mark.slow
def test_render_splits_its_objectives_over_every_device_of_the_process():
    from support import run_worker

    request = {"layer": "block1_conv2", "filters": [1, 2, 4, 8, 9], "size": 16, "steps": 2}
    report = run_worker({"render": request}, devices=4)
    assert report["devices"] == 4
    for case in ("shared start", "a start each", "maco"):  # maco: random crops, noise, the alpha
        figures = report[case]
        assert figures["devices"] == ([4, 1, 4] if case == "shared start" else [4, 1]), case
        # Each objective's own keys, start and program: the same pictures wherever they are drawn (MaCo's
        # FFTs batched differently round differently in the last bits).
        assert figures["pixels"] <= (1e-3 if case == "maco" else 0.0), case
        assert figures["activations"] <= 1e-4 * (case == "maco"), case
    # Watched, the ascent runs in segments on the devices (the bar moves): the same pictures, to the
    # float32 rounding of a loop fused apart (as on one device, above).
    assert report["shared start"]["watched pixels"] <= 1e-3
    assert report["shared start"]["watched activations"] <= 1e-4
    assert report["maco"]["alpha"] <= 1e-5
