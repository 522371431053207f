"""Concepts on small sizes: dictionaries recover planted atoms, NMF reaches scikit-learn's objective, a fit
streamed from shards equals one in memory and resumes after a kill, the dictionary file is safetensors,
and the whole pass over a folder writes a page that stays text in Chromium."""

from __future__ import annotations

import json
import re
import subprocess
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import filterviz
from filterviz.concept_atlases import fit as fit_module
from filterviz.concept_atlases.concepts import concepts
from filterviz.concept_atlases.fit import fit
from filterviz.concept_atlases.heatmaps import concept_maps
from filterviz.concept_atlases.measures import concept_map, picture_measures, usage
from filterviz.concept_atlases.shards import InMemory, Shards, write_shard
from filterviz.core import dictionaries as dl
from filterviz.io.tensors import decode_safetensors, encode_safetensors
from support import chromium
from test_activation_atlas import HOSTILE, _two_class_folder


def planted(atoms: int, dims: int, count: int, *, non_negative: bool, seed: int = 0):
    """``count`` vectors, each a sum of 1 to 3 of ``atoms`` unit atoms (non-negative ones for NMF) with
    codes in [0.5, 2], plus a little noise; and the atoms."""
    generator = np.random.default_rng(seed)
    truth = generator.normal(size=(atoms, dims))
    truth = np.abs(truth) if non_negative else truth
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    codes = np.zeros((count, atoms))
    for row, active in enumerate(generator.integers(1, 4, count)):
        codes[row, generator.choice(atoms, active, replace=False)] = generator.uniform(0.5, 2.0, active)
    noise = 0.01 * np.abs(generator.normal(size=(count, dims)))
    return (codes @ truth + noise).astype(np.float32), truth


@pytest.mark.parametrize(
    ("kind", "atoms", "dims", "count", "steps"),
    [("topk", 16, 32, 4000, 600), ("nmf", 16, 32, 4000, 600), ("archetypal", 32, 64, 8000, 1000)],
)
def test_a_dictionary_recovers_planted_atoms(kind, atoms, dims, count, steps):
    vectors, truth = planted(atoms, dims, count, non_negative=kind == "nmf")
    dictionary = dl.Dictionary(kind, atoms, 3).check()
    batch = 256 if atoms == 16 else 512
    weights = fit(dictionary, InMemory(vectors), np.arange(count), steps=steps, batch_size=batch, seed=0)
    matched, _ = dl.matched_cosine(truth, np.asarray(dl.directions(dictionary, weights)))
    assert matched >= 0.95, matched


def test_batch_top_k_keeps_k_codes_per_vector_on_average_and_rebuilds_better_than_top_k():
    vectors, _ = planted(16, 32, 4000, non_negative=False)
    rebuilt = {}
    for kind in ("batchtopk", "topk"):
        dictionary = dl.Dictionary(kind, 16, 2).check()
        weights = fit(dictionary, InMemory(vectors), np.arange(4000), steps=400, batch_size=256, seed=0)
        batch = jnp.asarray(vectors[:256])
        training = dl.encode(dictionary, weights, batch, training=True)
        assert float(jnp.mean(jnp.sum(training > 0, -1))) == pytest.approx(2.0, abs=0.05)  # k * N kept
        codes = np.asarray(dl.encode(dictionary, weights, vectors))  # after training: its threshold
        rebuilt[kind] = dl.unexplained_variance(vectors, np.asarray(dl.decode(dictionary, weights, codes)))
        if kind == "batchtopk":
            assert 1.0 <= dl.mean_l0(codes) <= 3.0  # the learned threshold keeps about k per vector
    assert rebuilt["batchtopk"] < rebuilt["topk"]  # the batch's budget goes where it is needed


def test_jump_relu_learns_thresholds_that_keep_about_k_codes_and_recovers_planted_atoms():
    vectors, truth = planted(16, 32, 4000, non_negative=False)
    dictionary = dl.Dictionary("jumprelu", 16, 2).check()
    weights = fit(dictionary, InMemory(vectors), np.arange(4000), steps=1200, batch_size=256, seed=0)
    matched, _ = dl.matched_cosine(truth, np.asarray(dl.directions(dictionary, weights)))
    assert matched >= 0.95, matched
    codes = np.asarray(dl.encode(dictionary, weights, vectors))
    assert 1.5 <= dl.mean_l0(codes) <= 2.5  # the planted vectors hold 2 atoms on average
    thresholds = np.asarray(weights["trained"]["threshold"])
    assert (thresholds > 0).all() and np.ptp(thresholds) > 0  # learned, one per concept
    rebuilt = np.asarray(dl.decode(dictionary, weights, codes))
    assert dl.unexplained_variance(vectors, rebuilt) < 0.05


def test_jump_relus_threshold_gradient_is_the_straight_through_window():
    codes = jnp.array([[0.10, 0.49, 0.52, 0.90]])  # the window is 0.475..0.525 around 0.5
    threshold = jnp.full(4, 0.5)
    through, at_threshold = jax.grad(lambda c, t: dl.jump(c, t).sum(), argnums=(0, 1))(codes, threshold)
    np.testing.assert_array_equal(through, [[0, 0, 1, 1]])  # the step's own gradient for the codes
    window = -0.5 / dl.JUMP_BANDWIDTH
    np.testing.assert_allclose(at_threshold, [0, window, window, 0])
    counted = jax.grad(lambda t: dl.active_count(codes, t).sum())(threshold)
    np.testing.assert_allclose(counted, [0, -1 / dl.JUMP_BANDWIDTH, -1 / dl.JUMP_BANDWIDTH, 0])
    assert float(dl.active_count(codes, threshold)[0]) == 2


def test_nmf_reaches_scikit_learns_objective():
    from sklearn.decomposition import NMF

    generator = np.random.default_rng(0)
    matrix = generator.uniform(size=(300, 6)) @ generator.uniform(size=(6, 40))
    matrix = (matrix + 0.1 * generator.uniform(size=(300, 40))).astype(np.float32)
    with warnings.catch_warnings():  # it stops at max_iter still improving in the eighth digit
        warnings.simplefilter("ignore")
        oracle = NMF(6, init="nndsvda", max_iter=2000, tol=1e-8, random_state=0).fit(matrix)
    theirs = np.sum(np.square(matrix - oracle.transform(matrix) @ oracle.components_))
    dictionary = dl.Dictionary("nmf", 6)
    weights = fit(dictionary, InMemory(matrix), np.arange(300), steps=600, batch_size=300, seed=1)
    codes = dl.encode(dictionary, weights, matrix)
    assert (np.asarray(codes) >= 0).all() and (np.asarray(dl.atoms(dictionary, weights)) >= 0).all()
    ours = np.sum(np.square(matrix - np.asarray(dl.decode(dictionary, weights, codes))))
    assert ours <= 1.01 * theirs, (ours, theirs)


def test_matched_cosine_is_the_best_one_to_one_matching():
    from itertools import permutations

    generator = np.random.default_rng(2)
    first, second = generator.normal(size=(5, 7)), generator.normal(size=(5, 7))
    unit = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in (first, second)]
    cosines = unit[0] @ unit[1].T
    best = max(np.mean([cosines[i, p[i]] for i in range(5)]) for p in permutations(range(5)))
    assert dl.matched_cosine(first, second)[0] == pytest.approx(best)
    assert dl.matched_cosine(first, 3 * first[[2, 0, 1, 4, 3]])[0] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def vectors():
    return planted(8, 12, 1000, non_negative=True)[0]


@pytest.mark.parametrize("kind", ["topk", "nmf"])
def test_a_fit_streamed_from_shards_equals_one_in_memory(tmp_path, vectors, kind):
    places = np.zeros((len(vectors), 3), np.int32)
    for number, (begin, end) in enumerate([(0, 300), (300, 301), (301, 1000)]):  # uneven shards
        write_shard(tmp_path, number, vectors[begin:end], places[begin:end])
    shards = Shards(tmp_path, 3, 12)
    rows = np.arange(50, 1000)
    dictionary = dl.Dictionary(kind, 8, 2)
    streamed = fit(dictionary, shards, rows, steps=12, batch_size=64, seed=3)
    in_memory = fit(dictionary, InMemory(vectors), rows, steps=12, batch_size=64, seed=3)
    for a, b in zip(jax.tree.leaves(streamed), jax.tree.leaves(in_memory), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["batchtopk", "jumprelu", "archetypal"])
def test_a_killed_fit_resumes_to_the_same_dictionary(tmp_path, vectors, kind, monkeypatch):
    dictionary = dl.Dictionary(kind, 8, 2, anchors=64)
    settings = dict(steps=9, batch_size=64, seed=0, save_every=4)
    whole = fit(dictionary, InMemory(vectors), np.arange(1000), **settings)
    real_step, calls = fit_module._step, []

    def dies_at_the_seventh(*arguments):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real_step(*arguments)

    checkpoint = tmp_path / "fit.safetensors"
    monkeypatch.setattr(fit_module, "_step", dies_at_the_seventh)
    with pytest.raises(KeyboardInterrupt):
        fit(dictionary, InMemory(vectors), np.arange(1000), checkpoint=checkpoint, **settings)
    monkeypatch.setattr(fit_module, "_step", real_step)
    resumed = fit(dictionary, InMemory(vectors), np.arange(1000), checkpoint=checkpoint, **settings)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    other = dl.Dictionary(kind, 8, 3, anchors=64)
    with pytest.raises(filterviz.OutputError, match="other settings"):
        fit(other, InMemory(vectors), np.arange(1000), checkpoint=checkpoint, **settings)


def test_safetensors_written_here_are_read_by_the_safetensors_library(tmp_path):
    safetensors = pytest.importorskip("safetensors.numpy")
    arrays = {
        "b": np.arange(6, dtype=np.int32).reshape(2, 3),
        "a": np.float32(2.5) * np.ones(()),
        "c": np.eye(3),
    }
    path = tmp_path / "d.safetensors"
    path.write_bytes(encode_safetensors(arrays, {"about": "test"}))
    for name, value in safetensors.load_file(str(path)).items():
        np.testing.assert_array_equal(value, arrays[name])
    decoded, metadata = decode_safetensors(path.read_bytes())
    assert metadata == {"about": "test"} and all(np.array_equal(decoded[k], arrays[k]) for k in arrays)
    for damaged in (b"", b"\xff" * 8 + b"{}", encode_safetensors(arrays)[:-5]):
        with pytest.raises(filterviz.WeightsError):
            decode_safetensors(damaged, "d.safetensors")


def test_dictionary_settings_that_cannot_work_are_one_line():
    for settings, words in (
        (dict(kind="pca"), "no dictionary kind"),
        (dict(concepts=4, active=5), "exceeds the 4 concepts"),
        (dict(concepts=0), "whole number from 1"),
    ):
        with pytest.raises(filterviz.SettingError, match=words):
            dl.Dictionary(**settings).check()
    with pytest.raises(filterviz.SettingError, match="at least as many vectors"):
        dl.Dictionary(concepts=64).check(vectors=10)


def test_the_concept_objective_is_the_rectified_code():
    activations = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 3, 4)), jnp.float32)
    vector, bias = np.array([1.0, -2.0, 0.5, 0.0], np.float32), -0.25
    expected = np.mean(np.maximum(np.asarray(activations) @ vector + bias, 0))
    assert float(filterviz.core.objectives.concept("x", vector, bias)({"x": activations})) == pytest.approx(
        expected, rel=1e-6
    )
    batched = filterviz.core.objectives.concept("x", np.stack([vector, -vector]), [bias, 0.0])
    assert batched.batch_size() == 2
    with pytest.raises(filterviz.SettingError, match="bias"):
        filterviz.core.objectives.concept("x", np.stack([vector, -vector]), [0.0, 1.0, 2.0])
    # Off at every position: the value is 0, yet the loss's gradient (the engine minimises minus the
    # objective) still points the way that turns it on; a plain ReLU's would be zero, and the picture
    # would stay as it started.
    off = filterviz.core.objectives.concept("x", vector, -100.0)
    value, gradient = jax.value_and_grad(lambda a: -off({"x": a}))(activations)
    assert float(value) == 0.0 and np.all(np.asarray(gradient) @ vector < 0)


def test_a_heatmap_is_the_concepts_code_at_every_position_of_its_strongest_photo():
    # Two photos of a 3x4 map; one strong planted vector at photo 1, row 2, column 1.
    places = np.array([(i, y, x) for i in range(2) for y in range(3) for x in range(4)], np.int32)
    vectors = np.random.default_rng(0).uniform(0, 0.1, (24, 8)).astype(np.float32)
    vectors[12 + 2 * 4 + 1, 3] += 5
    source = InMemory(vectors, places)
    dictionary = dl.Dictionary("nmf", 3)
    weights = fit(dictionary, source, np.arange(24), steps=30, batch_size=24, seed=0)
    used = usage(dictionary, weights, source, np.zeros(2, np.int64), 1, 2)
    maps = concept_maps(dictionary, weights, source, used.top)
    codes = np.asarray(dl.encode(dictionary, weights, vectors))
    assert maps and set(maps) == {k for k in range(3) if used.top[k, 0] >= 0}
    for k, (image, grid) in maps.items():
        assert image == places[used.top[k, 0], 0]
        np.testing.assert_allclose(grid, codes[places[:, 0] == image, k].reshape(3, 4), rtol=1e-5, atol=1e-6)
    planted_concept = int(codes[12 + 9].argmax())
    image, grid = maps[planted_concept]
    assert image == 1 and np.unravel_index(grid.argmax(), grid.shape) == (2, 1)


def test_the_concept_map_is_the_first_two_principal_components_and_keeps_clusters_apart():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    centres = np.eye(16)[[0, 8]] * 4  # two clusters of directions, far apart
    directions = np.concatenate([centre + rng.normal(0, 0.3, (6, 16)) for centre in centres])
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    place = concept_map(directions)
    assert place.shape == (12, 2) and place.min() == 0 and place.max() == 1
    theirs = PCA(2).fit_transform(directions)
    for axis in range(2):
        assert abs(np.corrcoef(place[:, axis], theirs[:, axis])[0, 1]) > 1 - 1e-6
    within = max(np.ptp(place[:6, 0]), np.ptp(place[6:, 0]))
    assert abs(place[:6, 0].mean() - place[6:, 0].mean()) > 3 * within


def test_picture_measures_count_live_concepts_shown_best_and_above_their_strongest_vector():
    codes = np.array([[3.0, 1.0, 0.0], [2.0, 1.0, 0.5], [0.0, 0.0, 0.2]])  # row i: concept i's picture
    patch = np.array([2.0, 2.0, 0.1])
    measures = picture_measures(codes, patch, np.array([True, True, False]))
    # Concept 0 is shown best and beats its vector; concept 1 neither; concept 2 is dead (not counted).
    assert measures == {"pictures_own_code_largest": 0.5, "pictures_above_best_vector": 0.5}
    assert picture_measures(codes, patch, np.ones(3, bool))["pictures_own_code_largest"] == 2 / 3


SMALL = dict(
    layer="block1_conv2", concepts=6, active=2, fit_steps=20, fit_batch_size=256, image_size=32, size=16
)
DRAWN_BY = dict(method="notebook", steps=2)  # the cheapest program: the pictures' method is not tested here


@pytest.fixture(scope="module")
def drawn(random_params, tmp_path_factory):
    folder = _two_class_folder(tmp_path_factory.mktemp("photos"), blue=HOSTILE, count=4)
    out = tmp_path_factory.mktemp("concepts")
    return folder, out, concepts(random_params, folder, out=out, progress=False, **DRAWN_BY, **SMALL)


def test_a_concept_pass_draws_every_concept_and_resumes(drawn, random_params):
    folder, out, found = drawn
    assert sorted(found.order) == list(range(6)) and np.isfinite(found.activations).all()
    shown = {"pictures_own_code_largest", "pictures_above_best_vector"}
    assert set(found.measures) >= {"unexplained_variance", "mean_l0", "dead_fraction", "stability"} | shown
    assert all(0 <= found.measures[name] <= 1 for name in shown)
    assert all((out / f"pictures/concept-{k}.png").exists() for k in range(6))
    record = json.loads((out / "concepts.json").read_text())
    assert [card["index"] for card in record["concepts"]] == [int(k) for k in found.order]
    tensors, metadata = decode_safetensors((out / "dictionary.safetensors").read_bytes())
    assert tensors["directions"].shape == (6, 64) and "stability" in metadata["filterviz"]
    again = concepts(random_params, folder, out=out, progress=False, **DRAWN_BY, **SMALL)
    np.testing.assert_array_equal(again.directions, found.directions)
    with pytest.raises(filterviz.OutputError, match="other settings"):
        concepts(random_params, folder, out=out, progress=False, **DRAWN_BY, **{**SMALL, "active": 1})


@pytest.mark.slow
def test_two_processes_of_two_devices_learn_the_dictionary_one_process_does(drawn, tmp_path):
    from support import run_two_processes

    folder, _, found = drawn
    settings = {**DRAWN_BY, **SMALL, "out": str(tmp_path / "two")}
    reports = run_two_processes({"folder": str(folder), "concepts": settings})
    assert [report["devices"] for report in reports] == [4, 4]
    for report in reports:  # each minibatch split over 4 devices: the same sums, added in another order
        np.testing.assert_allclose(report["directions"], found.directions, rtol=0, atol=1e-4)
        assert report["order"] == found.order.tolist()


def test_the_concept_page_shows_hostile_class_names_as_text(drawn):
    _, out, _ = drawn
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    url = (out / "concepts.html").resolve().as_uri()
    dom = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "Concepts of block1_conv2" in dom  # the script ran
    assert "pictures show their own concept most" in dom
    assert "&lt;img src=x onerror=" in dom and "<img src=x" not in dom and '<img src="x"' not in dom
    assert "<title>concepts</title>" in dom
    assert dom.count('class="card"') == 6 and dom.count('alt="dataset patch"') >= 6
    heatmaps = [card["heatmap"] for card in json.loads((out / "concepts.json").read_text())["concepts"]]
    assert dom.count('alt="where concept ') == sum(path is not None for path in heatmaps) > 0
    assert all((out / path).is_file() for path in heatmaps if path)
    on_the_map = re.findall(r'alt="concept \d+ on the map"', dom)  # the 2-D map links to each card
    assert dom.count('href="#concept-') >= 6 and len(on_the_map) == 6


def test_concepts_refuse_an_empty_folder_and_too_many_concepts(random_params, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(filterviz.ImageError, match="no images"):
        concepts(random_params, tmp_path / "empty", out=tmp_path / "out", progress=False, **SMALL)
    photos = _two_class_folder(tmp_path / "photos", count=1)
    with pytest.raises(filterviz.SettingError, match="at least as many vectors"):
        concepts(random_params, photos, out=tmp_path / "out", progress=False, positions=1, **SMALL)


def test_the_command_line_learns_and_draws_concepts_and_refuses_bad_settings(
    drawn, weights_path, tmp_path, capsys
):
    from filterviz.cli import main

    folder, _, _ = drawn
    common = ["concepts", str(folder), "--layer", "block1_conv2", "--weights", str(weights_path), "--quiet"]
    small = [
        "--concepts",
        "4",
        "--active",
        "2",
        "--fit-steps",
        "5",
        "--fit-batch-size",
        "128",
        "--image-size",
        "32",
    ]
    assert (
        main(
            [
                *common,
                *small,
                "--out",
                str(tmp_path / "c"),
                "--size",
                "16",
                "--method",
                "notebook",
                "--steps",
                "1",
                "--no-stability",
            ]
        )
        == 0
    )
    assert (tmp_path / "c" / "concepts.html").exists() and (
        tmp_path / "c" / "dictionary.safetensors"
    ).exists()
    capsys.readouterr()
    for extra, message in (
        (["--active", "9", "--concepts", "4"], "exceeds the 4 concepts"),
        (["--layer", "block9_conv9"], "block9_conv9"),
    ):
        assert main([*common, "--out", str(tmp_path / "d"), *extra]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error


def test_neuron_groups_split_a_two_part_photo_and_factorise_as_scikit_learn_does(random_params, vgg16):
    from sklearn.decomposition import NMF

    from filterviz.concept_atlases.groups import neuron_groups

    photo = np.zeros((32, 32, 3), np.uint8)
    photo[:, :16] = (200, 40, 40)  # the planted truth: two parts, two groups
    photo[:, 16:] = (30, 160, 220)
    photo[::4] = 255  # stripes on both halves, so neither is a flat colour
    found = neuron_groups(random_params, photo, "block2_conv1", groups=2, **DRAWN_BY, size=16)
    assert found.maps.shape == (2, 16, 16) and found.pictures.shape == (2, 16, 16, 3)
    assert found.overlay.shape == photo.shape and found.overlay.dtype == np.uint8
    strongest = found.maps.argmax(0)[:, 2:-2]  # away from the edges, where padding mixes the parts
    assert strongest[:, :4].std() == 0 and strongest[:, -4:].std() == 0  # three columns from the boundary
    assert strongest[0, 0] != strongest[0, -1]
    fed = filterviz.core.network.preprocess(jnp.asarray(photo[None], jnp.float32), vgg16.preprocessing)
    vectors = np.asarray(vgg16.apply(random_params, fed, ["block2_conv1"])["block2_conv1"][0]).reshape(
        256, -1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = NMF(2, init="nndsvda", max_iter=2000, tol=1e-8, random_state=0).fit(vectors)
    theirs = np.sum(np.square(vectors - oracle.transform(vectors) @ oracle.components_))
    ours = np.sum(np.square(vectors - found.maps.reshape(2, -1).T @ _unscaled_atoms(found, vectors)))
    assert ours <= 1.01 * theirs, (ours, theirs)


def _unscaled_atoms(found, vectors):
    # The atoms in the layer's units: least squares of the vectors on the found codes.
    return np.linalg.lstsq(found.maps.reshape(len(found.maps), -1).T, vectors, rcond=None)[0]
