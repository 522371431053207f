"""The viewing scale, MaCo's spectrum and crops, and the transparency map, on small sizes."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import filterviz
from filterviz.cli import main
from filterviz.core import parameterizations as param
from filterviz.core.engine import measured_value
from filterviz.core.methods import MACO_BOX, Method, get_method
from filterviz.core.network import preprocess
from filterviz.core.pictures import alpha_map
from filterviz.core.transforms import Jitter, Noise, RandomCrop, View, compose, with_view
from filterviz.io.spectrum import compute_spectrum, load_spectrum, maco, save_spectrum

LAYER = "block1_conv2"


def _bilinear_aligned(image: np.ndarray, height: int, width: int) -> np.ndarray:
    # Corner-aligned bilinear resizing, one axis at a time with np.interp: the reference for View.
    rows = np.linspace(0, image.shape[0] - 1, height)
    columns = np.linspace(0, image.shape[1] - 1, width)
    along_columns = np.stack(
        [np.stack([np.interp(columns, np.arange(image.shape[1]), line[:, c]) for c in range(3)], -1)
         for line in image]
    )  # fmt: skip
    return np.stack(
        [np.stack([np.interp(rows, np.arange(image.shape[0]), along_columns[:, x, c]) for c in range(3)], -1)
         for x in range(width)], 1
    )  # fmt: skip


def test_view_resizes_the_longer_side_as_bilinear_with_aligned_corners():
    image = np.asarray(jax.random.uniform(jax.random.key(0), (10, 6, 3)) * 255)
    viewed = np.asarray(View(25)(jax.random.key(1), jnp.asarray(image)))
    assert viewed.shape == (25, 15, 3)
    np.testing.assert_allclose(viewed, _bilinear_aligned(image, 25, 15), atol=1e-3)


def test_the_view_comes_after_the_geometry_and_before_the_noise():
    chain = with_view((Jitter(2), Noise(1.0)), 16)
    assert [type(t).__name__ for t in chain] == ["Jitter", "View", "Noise"]
    assert with_view((Noise(1.0),), 16)[0] == View(16) and with_view((Jitter(2),), None) == (Jitter(2),)


def test_the_gradient_flows_through_the_view(random_params, vgg16):
    method = get_method("lucid", view=40, steps=1)
    objective = filterviz.channel(LAYER, 3)
    from filterviz.core.engine import objective_value

    pixels = jax.random.uniform(jax.random.key(2), (1, 24, 24, 3), minval=0, maxval=255)
    gradient = jax.grad(lambda p: objective_value(vgg16, random_params, objective, method, p, None))(pixels)
    # Every picture pixel reaches the 40-pixel view, so every one gets a gradient; and it matches the
    # one through the reference resize.
    assert np.count_nonzero(np.abs(np.asarray(gradient)).sum(-1)) == 24 * 24

    def through_reference(p):
        rows = jnp.linspace(0, 23, 40)
        weights = jnp.maximum(0, 1 - jnp.abs(rows[:, None] - jnp.arange(24)[None, :]))  # [40, 24]
        viewed = jnp.einsum("ij,njkc,lk->nilc", weights, p, weights)
        inputs = preprocess(viewed, vgg16.preprocessing)
        return jnp.mean(vgg16.apply(random_params, inputs, [LAYER])[LAYER][..., 3])

    np.testing.assert_allclose(gradient, jax.grad(through_reference)(pixels), rtol=1e-4, atol=1e-7)


def test_a_viewed_render_raises_its_objective_and_is_measured_at_the_view(random_params, vgg16):
    objective = filterviz.channel(LAYER, [1, 2])
    settings = dict(network=vgg16, method="lucid", size=20, view=32, progress=False)
    start = filterviz.render(random_params, objective, steps=0, **settings)
    ended = filterviz.render(random_params, objective, steps=6, **settings)
    assert (ended.activations > start.activations).all()
    pixels = np.asarray(ended.pixels[0, 0], np.float64)
    viewed = _bilinear_aligned(pixels, 32, 32)[None].astype(np.float32)
    inputs = preprocess(jnp.asarray(viewed), vgg16.preprocessing)
    expected = jnp.mean(vgg16.apply(random_params, inputs, [LAYER])[LAYER][..., 1])
    np.testing.assert_allclose(ended.activations[0], expected, rtol=1e-4)


def test_a_sweep_records_the_view_and_resumes_only_with_it(random_params, tmp_path):
    folder = tmp_path / "sweep"
    method = get_method("lucid", view=36, steps=2)
    settings = dict(layers=[LAYER], filters=[0, 1], size=24, progress=False)
    filterviz.sweep(random_params, folder, method=method, **settings)
    record = json.loads((folder / "sweep.json").read_text())
    assert json.loads(record["settings"]["method_settings"])["view"] == 36
    pictures = sorted(folder.rglob("*.png"))
    times = [p.stat().st_mtime_ns for p in pictures]
    filterviz.sweep(random_params, folder, method=method, **settings)  # resumed: nothing redrawn
    assert [p.stat().st_mtime_ns for p in pictures] == times
    with pytest.raises(filterviz.SweepError, match="view"):
        filterviz.sweep(random_params, folder, method=get_method("lucid", view=48, steps=2), **settings)


def test_maco_crops_are_small_boxes_viewed_at_the_view():
    # A picture whose pixels hold their own row and column: a crop's view shows which box it sampled.
    side = 200
    rows, columns = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    coordinates = jnp.asarray(np.stack([rows, columns, rows], -1), jnp.float32)
    low, high = MACO_BOX
    chain = compose(with_view((RandomCrop(box=MACO_BOX, centre_sd=0.15),), 32))
    for seed in range(20):
        crop = np.asarray(chain(jax.random.key(seed), coordinates))
        assert crop.shape == (32, 32, 3)
        spans = [crop[..., 0].max() - crop[..., 0].min(), crop[..., 1].max() - crop[..., 1].min()]
        assert all(low * (side - 1) - 1e-3 <= span <= high * (side - 1) + 1e-3 for span in spans)
        assert crop.min() >= 0 and crop.max() <= side - 1  # kept inside the picture


def test_spectrum_of_a_folder_is_the_mean_decorrelated_magnitude(tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    generator = np.random.default_rng(0)
    photos = [generator.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(3)]
    for index, photo in enumerate(photos):
        Image.fromarray(photo).save(folder / ("sub" if index else ".") / f"p{index}.png")
    (folder / "broken.jpg").write_bytes(b"not a photo")
    spectrum, used = compute_spectrum(folder, size=24)
    assert used == 3 and spectrum.magnitude.shape == (3, 24, 13)
    mix = np.array(param.COLOR_CORRELATION_SQRT) / np.max(
        np.linalg.norm(param.COLOR_CORRELATION_SQRT, axis=0)
    )
    # Decorrelated colours d solve rgb = d @ mix.T, photo by photo.
    decorrelated = [np.linalg.solve(mix, (p / 255.0).reshape(-1, 3).T).T.reshape(24, 24, 3) for p in photos]
    expected = np.mean([np.abs(np.fft.rfft2(np.moveaxis(d, -1, 0))) for d in decorrelated], 0)
    np.testing.assert_allclose(spectrum.magnitude, expected, rtol=1e-4, atol=1e-4)
    out = tmp_path / "spectrum.npy"
    assert main(["spectrum", str(folder), "--out", str(out), "--size", "24"]) == 0
    assert "spectrum of 3 photos" in capsys.readouterr().out
    assert load_spectrum(out) == spectrum
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["spectrum", str(empty), "--out", str(tmp_path / "e.npy")]) == 2
    assert "no readable images" in capsys.readouterr().err and not (tmp_path / "e.npy").exists()


def test_maco_takes_its_magnitude_from_the_spectrum_file(tmp_path):
    magnitude = np.abs(np.random.default_rng(1).normal(size=(3, 16, 9))).astype(np.float32) + 0.1
    path = save_spectrum(param.Spectrum(magnitude), tmp_path / "s.npy")
    method = maco(path, steps=1)
    template = method.parameterization.magnitude(16, 16)
    np.testing.assert_allclose(template, magnitude / np.sqrt(np.mean(magnitude**2)), rtol=1e-5)
    raw = method.parameterization.init(jax.random.key(0), 1, 16, 16)
    spatial = np.fft.irfft2(np.asarray(template * jnp.exp(1j * (raw - raw.mean()) / raw.std())), s=(16, 16))
    ratio = np.abs(np.fft.rfft2(spatial[0]))[:, 1:, 1:-1] / template[:, 1:, 1:-1]
    assert ratio.std() / ratio.mean() < 1e-3  # the phase moves, the magnitude is the file's


def test_maco_pixels_are_horamas_preconditioner():
    # Horama's MaCo image, in the normalised input space its networks take, mapped back to 0-255 pixels.
    torch = pytest.importorskip("torch")
    from horama.maco_fv import maco_preconditioner

    magnitude = np.abs(np.random.default_rng(2).normal(size=(3, 20, 11))).astype(np.float32) + 0.1
    phase = np.random.default_rng(3).normal(size=(3, 20, 11)).astype(np.float32)
    normalised = maco_preconditioner(torch.from_numpy(magnitude), torch.from_numpy(phase), (-2.5, 2.5), "cpu")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    expected = (normalised.permute(1, 2, 0).numpy() * std + mean) * 255.0
    pixels = param.Maco(spectrum=param.Spectrum(magnitude)).to_pixels(jnp.asarray(phase)[None], 20, 20)
    np.testing.assert_allclose(np.asarray(pixels[0]), expected, rtol=1e-3, atol=0.05)
    assert expected.min() < 0 or expected.max() > 255  # MaCo's range reaches past the valid pixels


def test_maco_pictures_are_clipped_before_they_are_measured(random_params, vgg16):
    method = maco(None, steps=2, view=16, transform_copies=1)
    wide = dataclasses.replace(method.parameterization, values_range=(-6.0, 6.0))
    method = get_method(method, parameterization=wide)
    drawn = filterviz.render(
        random_params, filterviz.channel(LAYER, [0, 1]), network=vgg16, method=method, size=16, progress=False
    )
    assert drawn.pixels.min() >= 0 and drawn.pixels.max() <= 255
    assert (drawn.pixels == 0).any() and (drawn.pixels == 255).any()  # a range this wide saturates
    for index in (0, 1):  # the achieved value is the clipped picture's
        objective = filterviz.channel(LAYER, index)
        value = measured_value(vgg16, random_params, objective, method, drawn.pixels[index])
        np.testing.assert_allclose(drawn.activations[index], value, rtol=1e-5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.zeros((3, 16, 8), np.float32), "S // 2 \\+ 1"),
        (np.full((3, 8, 5), np.nan, np.float32), "finite"),
        (np.array([{"a": 1}], dtype=object), "not a .npy array"),
    ],
)
def test_a_bad_spectrum_file_is_one_line(tmp_path, capsys, weights_path, content, message):
    path = tmp_path / "bad.npy"
    np.save(path, content, allow_pickle=True)
    with pytest.raises(filterviz.WeightsError, match=message):
        load_spectrum(path)
    arguments = ["filters", LAYER, "--method", "maco", "--spectrum", str(path), "--size", "16"]
    assert (
        main([*arguments, "--steps", "1", "--out", str(tmp_path / "o.png"), "--weights", str(weights_path)])
        == 2
    )
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_alpha_is_the_normalised_mean_absolute_pixel_gradient(random_params, vgg16):
    start = np.asarray(jax.random.uniform(jax.random.key(4), (16, 16, 3), minval=0, maxval=255))
    method = Method(parameterization=param.Pixels(), steps=1, alpha=True, preprocessing="network")
    drawn = filterviz.render(
        random_params, filterviz.channel(LAYER, 5), network=vgg16, method=method, start=start, progress=False
    )

    def value(pixels):
        inputs = preprocess(pixels, vgg16.preprocessing)
        return jnp.mean(vgg16.apply(random_params, inputs, [LAYER])[LAYER][..., 5])

    attribution = jnp.mean(jnp.abs(jax.grad(value)(jnp.asarray(start)[None])), -1)
    np.testing.assert_allclose(drawn.alpha[0], alpha_map(attribution), atol=1e-5)
    assert drawn.alpha.min() >= 0 and drawn.alpha.max() == 1.0
    assert drawn.pictures.shape == (1, 1, 16, 16, 4)
    np.testing.assert_array_equal(drawn.pictures[..., 3], np.round(drawn.alpha * 255).astype(np.uint8))


def test_maco_writes_rgba_pictures_into_files_sweeps_and_the_atlas(random_params, weights_path, tmp_path):
    out = tmp_path / "maco.png"
    arguments = ["filters", LAYER, "--filters", "0,1", "--method", "maco", "--spectrum", "1/f"]
    arguments += ["--size", "24", "--view", "16", "--steps", "2", "--out", str(out)]
    assert main([*arguments, "--weights", str(weights_path)]) == 0
    assert out.is_file()
    folder = tmp_path / "sweep"
    method = maco(None, steps=2, view=16)
    filterviz.sweep(
        random_params, folder, method=method, layers=[LAYER], filters=[0, 1], size=24, progress=False
    )
    drawn = sorted(folder.glob(f"{LAYER}/*.png")) or sorted(folder.rglob("*filter*.png"))
    assert drawn
    with Image.open(drawn[0]) as picture:
        assert picture.mode == "RGBA"
        alpha = np.asarray(picture)[..., 3]
    assert alpha.min() < 255 and alpha.max() == 255
    filterviz.write_atlas(folder)
    page = (folder / "index.html").read_text() + "".join(p.read_text() for p in folder.glob("atlas/*.js"))
    assert f"{LAYER}/{drawn[0].name}" in page  # the page shows the RGBA file itself


def test_sizes_are_checked_at_the_size_the_network_sees(random_params, vgg16):
    objective = filterviz.channel("block5_conv1", 0)
    with pytest.raises(filterviz.SettingError, match="too small"):
        filterviz.render(random_params, objective, network=vgg16, size=12, steps=1, progress=False)
    seen = filterviz.render(
        random_params, objective, network=vgg16, size=12, view=32, steps=1, progress=False
    )
    assert seen.pictures.shape == (1, 1, 12, 12, 3)  # drawn at 12, seen at 32


def test_the_command_line_names_every_transform_set():
    from filterviz.cli.commands import method_from_arguments
    from filterviz.cli.parser import build_parser
    from filterviz.core.transforms import TRANSFORM_SETS, WIDE_SCALES

    for name, transforms in TRANSFORM_SETS.items():
        command = ["filters", "block1_conv1", "--method", "lucid", "--transforms", name, "--view", "176"]
        method = method_from_arguments(build_parser().parse_args([*command, "--out", "x.png"]))
        assert method.transforms == transforms and method.view == 176
    # Viewed at 176, the wide scales show a 128-pixel picture from its own size to 224 pixels.
    np.testing.assert_allclose([176 * min(WIDE_SCALES), 176 * max(WIDE_SCALES)], [128, 224], atol=1.0)


def test_scheduled_nadam_steps_as_pytorchs_nadam():
    import optax
    import torch

    from filterviz.core.methods import Optimizer

    gradients = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32)
    weights = torch.zeros(6, requires_grad=True)
    theirs = torch.optim.NAdam([weights], lr=0.5)
    ours = Optimizer("scheduled_nadam", 1.0).build(jnp.float32(0.5))  # a traced rate, as the engine gives
    state, values = ours.init(jnp.zeros(6)), jnp.zeros(6)
    for gradient in gradients:
        weights.grad = torch.from_numpy(gradient)
        theirs.step()
        updates, state = ours.update(jnp.asarray(gradient), state, values)
        values = optax.apply_updates(values, updates)
    np.testing.assert_allclose(values, weights.detach().numpy(), rtol=2e-5, atol=2e-5)
    assert get_method("maco").optimizer.name == "scheduled_nadam"


def test_a_spectrum_whose_header_claims_terabytes_is_refused_unread(tmp_path, monkeypatch):
    # 88 bytes on disk whose .npy header claims a [3, 2**20, 2**19] float32 array (6 TiB): the size the
    # header claims is checked before anything that size is read.
    header = {"descr": "<f4", "fortran_order": False, "shape": (3, 2**20, 2**19 + 1)}
    path = tmp_path / "huge.npy"
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
    assert path.stat().st_size < 200
    with pytest.raises(filterviz.WeightsError, match=r"is not a \.npy array|is over"):
        load_spectrum(path)
    # A whole, readable array over the limit is refused as too large, not as something else.
    monkeypatch.setattr("filterviz.io.spectrum.LARGEST_SPECTRUM_BYTES", 64)
    np.save(tmp_path / "large.npy", np.ones((3, 8, 5), np.float32))
    with pytest.raises(filterviz.WeightsError, match="is over"):
        load_spectrum(tmp_path / "large.npy")
