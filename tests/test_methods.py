"""Optimizers, octaves, the method presets built from them, rendering, and methods through sweeps and
the CLI."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import filterviz
from filterviz.core import methods
from filterviz.core import parameterizations as param
from filterviz.core.engine import filter_keys, render_batch
from filterviz.core.methods import Method, Octaves, Optimizer, get_method
from filterviz.core.objectives import channel, deepdream
from filterviz.core.relu import redirected_relu
from filterviz.draw.rendering import render

SIZE = 32


def test_normalized_gradient_is_the_notebook_step():
    gradient = jax.random.normal(jax.random.key(0), (8, 8, 3))
    image = jnp.full((8, 8, 3), 100.0)
    optimizer = Optimizer("normalized", 0.5).build()
    # optax descends, so it is given the gradient of minus the objective.
    updates, _ = optimizer.update(-gradient, optimizer.init(image), image)
    rms = np.sqrt(np.mean(np.square(np.asarray(gradient, np.float64))))
    expected = 100.0 + 0.5 * np.asarray(gradient, np.float64) / (rms + 1e-5)  # the notebook's step
    np.testing.assert_allclose(np.asarray(optax.apply_updates(image, updates)), expected, rtol=1e-6)
    assert isinstance(Optimizer("adam", 0.05).build(), optax.GradientTransformation)
    with pytest.raises(filterviz.SettingError, match="unknown optimizer"):
        get_method("lucid", optimizer=Optimizer("adamm", 0.05))


@pytest.mark.parametrize("name", ["normalized", "adam", "sgd"])
def test_a_learning_rate_given_at_run_time_steps_as_the_fixed_one(name):
    # The engine feeds the rate as a traced value (one program for every step size): same updates.
    gradient = jax.random.normal(jax.random.key(0), (8, 8, 3))
    image = jnp.full((8, 8, 3), 100.0)
    fixed = Optimizer(name, 0.3).build()
    traced = Optimizer(name, 1.0).build(jnp.float32(0.3))
    fixed_state, traced_state = fixed.init(image), traced.init(image)
    for _ in range(3):
        expected, fixed_state = fixed.update(gradient, fixed_state, image)
        updates, traced_state = jax.jit(traced.update)(gradient, traced_state, image)
        np.testing.assert_allclose(np.asarray(updates), np.asarray(expected), rtol=1e-6, atol=1e-7)


def test_one_program_serves_every_learning_rate(random_params):
    objective = channel("block1_conv2", [0, 1])
    render(random_params, objective, method="lucid", size=16, steps=2, optimizer=Optimizer("adam", 0.05))
    compiled = render_batch._cache_size()
    other = render(
        random_params, objective, method="lucid", size=16, steps=2, optimizer=Optimizer("adam", 0.2)
    )
    assert render_batch._cache_size() == compiled
    first = render(
        random_params, objective, method="lucid", size=16, steps=2, optimizer=Optimizer("adam", 0.05)
    )
    assert not np.array_equal(np.asarray(other.pixels), np.asarray(first.pixels))


def test_any_optax_optimizer_object_works(random_params):
    method = get_method("lucid", optimizer=optax.sgd(10.0), steps=2)
    result = render(random_params, channel("block1_conv2", [0, 1]), method=method, size=16)
    assert result.pixels.shape == (2, 1, 16, 16, 3)


# ----------------------------------------------------------------------------------------------------
# Presets and their references


def test_presets_keep_their_references_defaults():
    notebook = methods.METHODS["notebook"]
    assert (notebook.steps, notebook.optimizer, notebook.preprocessing) == (
        20,
        Optimizer("normalized", 1.0),
        "raw",
    )
    assert notebook.parameterization == param.Pixels(127.0, 10.0) and notebook.transforms == ()
    lucid = methods.METHODS["lucid"]  # Lucid's render_vis: Adam(0.05), 512 steps, image(fft, decorrelate)
    assert (lucid.steps, lucid.optimizer) == (512, Optimizer("adam", 0.05))
    assert lucid.parameterization == param.Fourier(sd=0.01, decay_power=1.0, decorrelate=True)
    assert lucid.redirect_relu and lucid.preprocessing == "network"  # each network's own convention
    assert lucid.resolved(filterviz.network("vgg16")).preprocessing == "caffe"
    pad, jitter8, scale, rotate, jitter4 = lucid.transforms  # Lucid's standard_transforms
    assert (pad.width, pad.mode, pad.fill, jitter8.distance, jitter4.distance) == (
        12,
        "constant",
        127.5,
        8,
        4,
    )
    assert scale.scales == pytest.approx([1 + (i - 5) / 50 for i in range(11)])
    assert list(rotate.angles) == list(range(-10, 11)) + [0] * 5
    # MaCo's reference code: NAdam(1.0) with its momentum warm-up, phase N(0, 1), 6 crops a step.
    maco = methods.METHODS["maco"]
    assert (maco.optimizer, maco.transform_copies, maco.parameterization.phase_sd) == (
        Optimizer("scheduled_nadam", 1.0),
        6,
        1.0,
    )
    octaves = methods.METHODS["octaves"]  # Keras' conv_filter_visualization.py
    assert (octaves.steps, octaves.octaves.stages, octaves.octaves.scale) == (15, 9, 1.2)
    assert octaves.parameterization == param.Pixels(128.0, 10.0, uniform=True) and octaves.picture == "keras"
    assert dict(octaves.optimizer.options) == {"epsilon": 1e-7}


def test_octave_sizes_follow_the_keras_example():
    # The Keras example: start at int(412 / 1.2**9), then after each of its 9 stages of 15 steps,
    # grow to int(412 / 1.2**up) for up = 8 ... 0; the last growth has no steps after it.
    output, factor, stages = 412, 1.2, 9
    sizes, dim = [], int(output / factor**stages)
    for up in reversed(range(stages)):
        sizes.append((dim, dim))
        dim = int(output / factor**up)
    assert Octaves(stages, factor).sizes(output, output) == sizes
    assert Octaves(3, 1.4, last_at_full_size=True).sizes(100, 200) == [(51, 102), (71, 142), (100, 200)]


def test_notebook_preset_reproduces_the_notebook_ascent(params):
    start = filterviz.random_image(jax.random.key(0), SIZE, SIZE)
    expected = filterviz.ascend(params, "block3_conv1", [0, 7], start, steps=10)
    result = render(params, channel("block3_conv1", [0, 7]), method="notebook", start=start, steps=10)
    # One engine: the notebook preset is ascend's own path, bit for bit.
    np.testing.assert_array_equal(np.asarray(result.pixels[:, 0]), np.asarray(expected))
    np.testing.assert_array_equal(result.pictures[:, 0], filterviz.as_image(expected))


def test_redirected_relu_changes_gradients_not_values():
    x = jnp.array([[-1.0, -2.0, 3.0], [-1.0, -2.0, -3.0]])
    assert np.array_equal(redirected_relu(x), jax.nn.relu(x))
    # Cotangent of a loss to minimise: -1 asks to raise x, +1 to lower it.
    cotangent = jnp.array([[-1.0, 1.0, -1.0], [-1.0, 1.0, -1.0]])
    _, backward = jax.vjp(redirected_relu, x)
    (gradient,) = backward(cotangent)
    # Row 0 has a live unit: plain ReLU gradient. Row 1 is off everywhere: let through what raises x.
    np.testing.assert_array_equal(np.asarray(gradient), [[0.0, 0.0, -1.0], [-1.0, 0.0, -1.0]])


# ----------------------------------------------------------------------------------------------------
# render: batching, keys, frames, errors


def test_render_is_deterministic_and_batching_changes_nothing(random_params):
    objective = channel("block2_conv1", [3, 9, 11])
    method = get_method("lucid", steps=3)
    together = render(random_params, objective, method=method, size=SIZE, seed=4)
    again = render(random_params, objective, method=method, size=SIZE, seed=4, batch_size=2)
    np.testing.assert_allclose(np.asarray(together.pixels), np.asarray(again.pixels), atol=1e-3)
    other_seed = render(random_params, objective, method=method, size=SIZE, seed=5)
    assert not np.allclose(np.asarray(together.pixels), np.asarray(other_seed.pixels))
    one = render(
        random_params, channel("block2_conv1", [9]), method=method, size=SIZE, keys=together_keys(4)[1:2]
    )
    np.testing.assert_allclose(np.asarray(one.pixels[0]), np.asarray(together.pixels[1]), atol=1e-3)


def together_keys(seed):
    return filter_keys(seed, np.arange(3))


def test_each_method_runs_in_bfloat16(random_params):
    for name in methods.METHODS:
        # Two octave stages rather than nine: the same code, a fraction of the compiling.
        method = get_method(name, octaves=Octaves(2)) if name == "octaves" else name
        result = render(
            random_params,
            channel("block1_conv2", [0]),
            method=method,
            size=SIZE,
            steps=2,
            precision="bfloat16",
        )
        assert np.isfinite(np.asarray(result.pixels)).all()


def test_frames_and_gif(random_params, tmp_path):
    from PIL import Image

    result = render(random_params, channel("block1_conv2", [0, 1]), size=SIZE, steps=10, frame_every=3)
    assert result.frames.shape == (3, 2, 1, SIZE, SIZE, 3) and result.frames.dtype == np.uint8
    final = render(random_params, channel("block1_conv2", [0, 1]), size=SIZE, steps=9)
    np.testing.assert_array_equal(result.frames[-1], final.pictures)  # frame 3 is after step 9
    path = filterviz.save_picture(result.frames[:, 0, 0], tmp_path / "ascent.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 3 and gif.size == (SIZE, SIZE)
    two_stages = get_method("octaves", octaves=Octaves(2))
    octave = render(
        random_params, channel("block1_conv2", [0]), method=two_stages, size=SIZE, steps=4, frame_every=2
    )
    assert octave.frames.shape == (2 * 2, 1, 1, SIZE, SIZE, 3)


def test_dead_filters_are_flagged(params):
    result = render(params, channel("block5_conv3", [0, 1, 2, 3]), method="notebook", size=SIZE, steps=2)
    assert result.dead.shape == (4,)
    np.testing.assert_array_equal(result.dead, result.activations <= 0)


def test_render_refuses_what_cannot_work(random_params):
    objective = channel("block1_conv1", 0)
    photo = np.zeros((20, 20, 3), np.float32)
    with pytest.raises(filterviz.SettingError, match="pixel method"):
        render(random_params, objective, method="lucid", start=photo)
    with pytest.raises(filterviz.SettingError, match="unknown method 'dream'; choose one of notebook"):
        render(random_params, objective, method="dream")
    with pytest.raises(filterviz.SettingError, match="batch_size must be a whole number of at least 1"):
        render(random_params, objective, size=16, steps=2, batch_size=0)
    with pytest.raises(filterviz.SettingError, match="frame_every"):
        render(random_params, objective, size=16, steps=2, frame_every=5)
    with pytest.raises(filterviz.SettingError, match="octaves grow a pixel image"):
        get_method("lucid", octaves=Octaves())
    with pytest.raises(filterviz.SettingError, match="bad method setting"):
        get_method("lucid", learning_rate=0.1)
    with pytest.raises(filterviz.ImageError, match=r"\[H, W, 3\]"):
        render(random_params, objective, method="notebook", start=np.zeros((4, 4)))


def test_octave_dream_on_a_photo_keeps_its_size(random_params):
    photo = np.random.default_rng(0).uniform(0, 255, (45, 61, 3)).astype(np.float32)
    method = Method(
        optimizer=Optimizer("normalized", 1.0),
        steps=2,
        octaves=Octaves(3, 1.4, last_at_full_size=True, requantize=False, reinject_detail=True),
        picture="clip",
    )
    result = render(random_params, deepdream("block1_conv2"), method=method, start=photo)
    assert result.pixels.shape == (1, 1, 45, 61, 3)
    # Zero steps: shrinking and growing with detail put back returns the photo itself.
    still = render(
        random_params, deepdream("block1_conv2"), method=dataclasses.replace(method, steps=0), start=photo
    )
    np.testing.assert_allclose(np.asarray(still.pixels[0, 0]), photo, atol=1e-2)


def test_render_batch_compiles_once_per_method_and_size(random_params):
    method = get_method("lucid", steps=1)
    render(random_params, channel("block1_conv2", [0, 1]), method=method, size=16, batch_size=2)
    before = render_batch._cache_size()
    render(random_params, channel("block1_conv2", [5, 9, 20, 33]), method=method, size=16, batch_size=2)
    assert render_batch._cache_size() == before  # other filters, same program


# ----------------------------------------------------------------------------------------------------
# Methods in sweeps and on the command line


def _png(path):
    from PIL import Image

    with Image.open(path) as picture:
        return np.asarray(picture)


def test_sweep_with_a_method_matches_render_and_resumes(random_params, tmp_path):
    folder = tmp_path / "lucid"
    settings = dict(layers=["block1_conv2"], filters=[0, 3, 5], size=(SIZE, SIZE), method="lucid", steps=3)
    result = filterviz.sweep(random_params, folder, progress=False, **settings)
    assert (result.written, result.skipped) == (3, 0)
    method = get_method("lucid", steps=3)
    keys = filter_keys(0, [0, 3, 5])
    expected = render(random_params, channel("block1_conv2", [0, 3, 5]), method=method, size=SIZE, keys=keys)
    entries = sorted(filterviz.read_manifest(folder), key=lambda e: e["filter"])
    for row, entry in enumerate(entries):
        assert entry["method"] == "lucid" and entry["steps"] == 3 and entry["step_size"] == 0.05
        picture = _png(folder / entry["png"])
        assert np.abs(picture.astype(int) - expected.pictures[row, 0].astype(int)).max() <= 1
        assert entry["activation"] == pytest.approx(float(expected.activations[row]), rel=1e-4, abs=1e-4)
    again = filterviz.sweep(random_params, folder, progress=False, **settings)
    assert (again.written, again.skipped) == (0, 3)
    with pytest.raises(filterviz.SweepError, match="method: 'lucid' in the folder, 'maco' asked"):
        filterviz.sweep(random_params, folder, progress=False, **{**settings, "method": "maco"})
    other = get_method("lucid", steps=3, transforms=())
    with pytest.raises(filterviz.SweepError, match="lucid transforms"):
        without_steps = {key: value for key, value in settings.items() if key != "steps"}
        filterviz.sweep(random_params, folder, progress=False, **{**without_steps, "method": other})
    with pytest.raises(filterviz.SettingError, match="pixel method"):
        filterviz.sweep(random_params, tmp_path / "x", progress=False, **settings, start=np.zeros((8, 8, 3)))
    with pytest.raises(filterviz.SettingError, match=r"filterviz.core.methods.Optimizer\(name, rate\)"):
        optax_method = get_method("lucid", optimizer=optax.adam(0.1))
        filterviz.sweep(random_params, tmp_path / "y", progress=False, **{**settings, "method": optax_method})
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.slow
def test_a_method_sweep_on_four_devices_equals_one(tmp_path):
    from support import run_worker

    request = {"layers": ["block1_conv2"], "filters": [1, 2, 4, 8, 9], "size": [SIZE, SIZE]}
    request.update(method="lucid", steps=2)  # random transforms each step: keyed by filter, not device
    one = run_worker({"folder": str(tmp_path / "one"), "sweep": request}, devices=1)
    four = run_worker({"folder": str(tmp_path / "four"), "sweep": request}, devices=4)
    assert (one["devices"], four["devices"], four["written"]) == (1, 4, 5)
    for index in request["filters"]:
        name = f"block1_conv2/{index:04d}.png"
        np.testing.assert_array_equal(_png(tmp_path / "one" / name), _png(tmp_path / "four" / name))


def test_cli_draws_with_a_method_and_writes_an_animation(weights_path, tmp_path, capsys):
    from PIL import Image

    from filterviz.cli import main

    out, gif = tmp_path / "grid.png", tmp_path / "ascent.gif"
    arguments = ["filters", "block2_conv1", "--filters", "0-2", "--size", "32", "--method", "lucid"]
    arguments += ["--steps", "4", "--frame-every", "2", "--gif", str(gif), "--out", str(out)]
    assert main([*arguments, "--weights", str(weights_path)]) == 0
    assert "lucid method, 4 steps" in capsys.readouterr().err
    assert _png(out).ndim == 3
    with Image.open(gif) as animation:
        assert animation.n_frames == 2
    # Knobs on top of a preset, and the neuron objective with diversity.
    arguments = [
        "filters",
        "block1_conv2",
        "--filters",
        "3",
        "--size",
        "24",
        "--method",
        "maco",
        "--steps",
        "2",
    ]
    arguments += [
        "--optimizer",
        "adam",
        "--step-size",
        "0.1",
        "--images-per-filter",
        "2",
        "--diversity",
        "10",
    ]
    arguments += ["--objective", "neuron", "--transforms", "none", "--out", str(out)]
    assert main([*arguments, "--weights", str(weights_path)]) == 0


def test_cli_octave_deep_dream_keeps_the_photo_size(weights_path, tmp_path, capsys):
    from filterviz.cli import main

    photo = tmp_path / "photo.png"
    filterviz.save_picture(np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8), photo)
    out = tmp_path / "dream.png"
    arguments = ["dream", str(photo), "--layer", "block2_conv1", "--objective", "deepdream", "--octaves", "3"]
    assert main([*arguments, "--steps", "2", "--out", str(out), "--weights", str(weights_path)]) == 0
    assert _png(out).shape == (40, 52, 3)
    assert "deep dream" in capsys.readouterr().err


def test_cli_sweep_with_a_method(weights_path, tmp_path):
    from filterviz.cli import main

    out = tmp_path / "sweep"
    arguments = [
        "sweep",
        "--layers",
        "block1_conv1",
        "--filters",
        "0-1",
        "--size",
        "24",
        "--method",
        "octaves",
    ]
    assert (
        main(
            [*arguments, "--steps", "2", "--quiet", "--cpu-devices", "1", "--out", str(out)]
            + [
                "--weights",
                str(weights_path),
            ]
        )
        == 0
    )
    assert {entry["method"] for entry in filterviz.read_manifest(out)} == {"octaves"}


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            ["filters", "block1_conv1", "--method", "lucid", "--optimizer", "adamm"],
            "unknown optimizer 'adamm'",
        ),
        (["filters", "block1_conv1", "--method", "lucid", "--octaves", "3"], "octaves grow a pixel image"),
        (
            ["filters", "block1_conv1", "--steps", "4", "--gif", "{tmp}/a.gif", "--frame-every", "9"],
            "frame_every",
        ),
    ],
)
def test_cli_method_errors_exit_2_with_one_line(arguments, message, tmp_path, capsys):
    from filterviz.cli import main

    full = [argument.replace("{tmp}", str(tmp_path)) for argument in arguments] + [
        "--out",
        str(tmp_path / "o.png"),
    ]
    assert main(full) == 2
    err = capsys.readouterr().err
    assert err.startswith("filterviz: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "a.gif").exists()


def test_cli_top_draws_the_strongest_filters_first(weights_path, tmp_path, monkeypatch):
    import filterviz.io.plots as plotting
    from filterviz.cli import parser as cli

    drawn, original = {}, plotting.filter_grid

    def spy(pictures, labels, **kwargs):
        drawn["labels"] = labels
        return original(pictures, labels, **kwargs)

    monkeypatch.setattr(plotting, "filter_grid", spy)
    arguments = ["filters", "block2_conv1", "--filters", "0-5", "--size", "24", "--steps", "3", "--top", "3"]
    assert cli.main([*arguments, "--out", str(tmp_path / "top.png"), "--weights", str(weights_path)]) == 0
    assert len(drawn["labels"]) == 3
    values = [float(label.split(": ")[1]) for label in drawn["labels"]]
    assert values == sorted(values, reverse=True)
    # The notebook's method from the notebook's shared noise start (seed 0), as the command draws it.
    params = filterviz.load_weights(weights_path)
    start = filterviz.random_image(jax.random.key(0), 24, 24)
    images = filterviz.ascend(params, "block2_conv1", range(6), start, steps=3)
    best = np.argsort(-filterviz.achieved(params, "block2_conv1", range(6), images))[:3]
    assert [label.split(":")[0] for label in drawn["labels"]] == [f"filter {i}" for i in best]
