"""The benchmark script still runs (at toy size; its figures are measured by running it, not here)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def torch_installed() -> bool:
    """Whether PyTorch, the benchmarks' extra ('.[bench]') and not the tests', is here to be timed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_flop_count_of_a_step():
    sys.path.insert(0, str(BENCH))
    import filterviz
    from flops import ascent_step_flops, compiled_flops, conv_flops

    vgg16 = filterviz.network("vgg16")
    # block1_conv2 at 128x128: block1_conv1 in full, one channel of block1_conv2, each forward and back.
    expected = 2 * (conv_flops(128, 128, 3, 64) + conv_flops(128, 128, 64, 1))
    assert ascent_step_flops(vgg16, "block1_conv2", 128, 128) == expected
    full = 2 * (conv_flops(128, 128, 3, 64) + conv_flops(128, 128, 64, 64))
    assert ascent_step_flops(vgg16, "block1_pool", 128, 128, full_target=True) == full
    # XLA's own count of one compiled step agrees with the hand count (the convolutions dominate).
    import jax
    import jax.numpy as jnp

    from filterviz.core.engine import Ascent, render_batch
    from filterviz.core.methods import notebook_method

    compiled = render_batch.lower(
        Ascent(vgg16, notebook_method(1), (32, 32), measure=False),
        {  # shapes are all lowering needs
            group: {key: jax.ShapeDtypeStruct(shape, jnp.float32) for key, shape in names.items()}
            for group, names in vgg16.parameter_shapes.items()
        },
        filterviz.channel("block2_conv2", jnp.zeros(1, jnp.int32)),
        jnp.zeros((32, 32, 3)),
        jax.random.split(jax.random.key(0), 1),
    ).compile()
    assert compiled_flops(compiled) == pytest.approx(
        ascent_step_flops(vgg16, "block2_conv2", 32, 32), rel=0.05
    )


@pytest.mark.slow
def test_the_pytorch_networks_compute_what_ours_do():
    # PyTorch is the benchmarks' extra ('.[bench]'), not the tests': where it is installed, the networks the
    # benchmark times it on must be ours.
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(BENCH))
    import jax
    import numpy as np

    import filterviz
    from torch_reference import torch_network

    images = np.asarray([filterviz.random_image(jax.random.key(seed), 40, 40) for seed in range(2)]) - 120
    for name, layer in [("vgg19", "block3_conv4"), ("resnet50", "conv2_block2_out")]:
        network = filterviz.network(name)
        params = network.init(jax.random.key(0))
        ours = np.asarray(network.apply(params, images, [layer])[layer])
        with torch.no_grad():
            theirs = torch_network(network, params, layer)(torch.from_numpy(images.transpose(0, 3, 1, 2)))
        theirs = theirs.numpy().transpose(0, 2, 3, 1)
        assert np.linalg.norm(ours - theirs) <= 1e-4 * np.linalg.norm(ours), name


@pytest.mark.slow
def test_benchmark_runs_and_reports_every_contender(weights_path, tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    import ascent_bench

    out = tmp_path / "bench.json"
    arguments = [
        "--layers",
        "block2_pool",
        "--size",
        "16",
        "--steps",
        "2",
        "--filters",
        "2",
        "--repeats",
        "1",
    ]
    arguments += ["--methods", "notebook,lucid", "--weights", str(weights_path), "--json", str(out)]
    # variants, timed in the real runs; PyTorch rows where the bench extra is installed
    torch_rows = ["torch"] if torch_installed() else []
    arguments += ["--skip", "torch-1,default,loop" + ("" if torch_rows else ",torch")]
    assert ascent_bench.main(arguments) == 0
    printed = capsys.readouterr().out
    assert "| lucid | block2_pool |" in printed and "engine / floor" in printed
    notebook, lucid = json.loads(out.read_text())["rows"]
    assert (notebook["method"], lucid["method"]) == ("notebook", "lucid")
    for contender in ["engine", "floor", "full", *torch_rows]:
        assert notebook[contender] > 0, contender
        # Every contender did the same work: the same pictures, up to float rounding.
        assert notebook[f"{contender}_agreement"] > 0.99, contender
    assert all(lucid[contender] > 0 for contender in ["full", *torch_rows])
    # ResNet50 runs through the same code (--network resnet50), measured in the real runs; its compile
    # would double this test's time.


@pytest.mark.slow
def test_quality_report_runs_and_tabulates_every_method(weights_path, tmp_path):
    sys.path.insert(0, str(BENCH))
    import quality

    assert quality.main(["--quick", "--out", str(tmp_path), "--weights", str(weights_path)]) == 0
    report = (tmp_path / "QUALITY.md").read_text()
    for name in ("notebook", "lucid", "maco", "octaves"):
        assert f"{name} s/filter" in report
    assert "| block2_conv2 |" in report
    assert (tmp_path / "docs" / "quality" / "methods.jpg").stat().st_size > 0
    record = json.loads((tmp_path / "docs" / "quality" / "quality.json").read_text())
    assert len(record["rows"]) == 4 and all(math.isfinite(row["achieved"]) for row in record["rows"])


def test_atlas_estimate_adds_up_each_layers_filters(weights_path):
    sys.path.insert(0, str(BENCH))
    import filterviz
    import quality

    params = filterviz.load_weights(weights_path)
    estimate = quality.atlas_estimate(
        params, "lucid", 16, 1, "float32", layers=["block1_conv1", "block2_conv1"]
    )
    layers = estimate["layers"]
    assert set(layers) == {"block1_conv1", "block2_conv1"} and all(v["chunk"] >= 1 for v in layers.values())
    expected = (
        64 * layers["block1_conv1"]["seconds_per_filter"] + 128 * layers["block2_conv1"]["seconds_per_filter"]
    )
    assert estimate["seconds"] == pytest.approx(expected)


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_part_and_says_when_there_is_no_gpu(weights_path, tmp_path):
    """The GPU check in --smoke mode (tiny sizes, one layer, one step), started as a user starts it: every
    part runs (all in one process) and the report has the figures the GPU runs are read from."""
    out = tmp_path / "out"
    # A day's budget: the smoke parts take seconds, so none is cut short however busy the machine is.
    arguments = ["--weights", str(weights_path), "--out", str(out), "--smoke", "--budget", "86400"]
    environment = {**os.environ, "PYTHONPATH": str(BENCH.parent / "src")}
    run = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), *arguments],
        env=environment,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["failures"] == [], report["failures"]
    assert all(state["status"] == "ok" for state in report["parts"].values())
    sys.path.insert(0, str(BENCH))
    from gpu.harness import PARTS

    assert list(report["parts"]) == list(PARTS)
    for key in ("device", "notebook_atlas_seconds", "lucid_atlas_seconds", "speedup_vs_loop", "mfu"):
        assert key in report
    assert report["lucid_atlas_estimated"] is True
    # Figures, not placeholders: the atlas swept (one precision in a smoke run), every comparison made.
    assert set(report["notebook_atlas_seconds"]) == {"tf32"}  # the smoke run's one precision
    assert all(seconds > 0 for seconds in report["notebook_atlas_seconds"].values())
    assert report["speedup_vs_loop"]["block1_conv2"] > 0
    assert report["mfu"]["float32"]["block1_conv2"] > 0
    details = report["details"]
    assert details["correctness"]["activations"]["passed"]
    assert all(case["passed"] for case in details["correctness"]["ascent"])
    assert set(details["correctness"]["methods"]) == {"notebook", "lucid", "maco", "octaves"}
    for precision in ("tf32",):
        runs = details["sweep"]["runs"][precision]
        assert [run["returncode"] for run in runs["runs"]] == [0, 0]
        assert all(run["pictures"] == 4 and run["atlas_page"] for run in runs["runs"])
        assert runs["same_pictures_both_runs"]
        assert (out / f"sheet_{precision}.png").stat().st_size > 0
    # The dataset-examples pass over its folder: every filter of the two layers, each with k hits.
    examples = details["examples"]
    assert examples["filters"] == examples["filters_with_9_hits"] == 128 and examples["seconds"] > 0
    assert examples["decode_images_per_second"] > 0 and report["examples"]["images_per_second"] > 0
    # The time to the first picture, each phase measured, for both methods.
    waits = report["first_picture_seconds"]
    assert set(waits) == {"notebook block1_conv2 float32", "lucid block1_conv2 float32"}
    for row in details["latency"]["latency"]:
        assert 0 < row["compile"] < row["wait"] and row["lower"] > 0 and row["first"] > 0
    assert "### latency" in (out / "gpu_check.md").read_text()
    # Lucent against from_torch: a row per layer where Lucent is installed, else a note saying why not.
    lucent = details["lucent"]
    assert lucent.get("rows") or "Lucent cannot be imported" in lucent.get("note", "")
    for row in lucent.get("rows", []):
        assert row["speedup"] > 0 and row["activation_ratio"] is not None
    # No GPU here: the report says so rather than passing the CPU off as one.
    if not report["accelerator"]:
        assert any("no GPU" in note for note in report["notes"])
        assert "no GPU" in (out / "gpu_check.md").read_text()


def test_examples_benchmark_runs_every_contender(weights_path, tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    import examples_bench

    out = tmp_path / "examples.json"
    arguments = ["--images", "6", "--size", "32", "--layers", "block1_conv1,block2_conv1", "--repeats", "1"]
    arguments += ["--batch-size", "4", "--weights", str(weights_path), "--json", str(out)]
    assert examples_bench.main(arguments + ([] if torch_installed() else ["--skip", "torch"])) == 0
    row = json.loads(out.read_text())
    for contender in ["engine", "decode", "decode-1", *(["torch"] if torch_installed() else [])]:
        assert row[f"{contender}_images_per_second"] > 0, contender
    assert row["forward_gflops_per_image"] > 0 and "| engine |" in capsys.readouterr().out
    if torch_installed():  # the same work: each filter's best image is the same
        assert row["torch_best_image_agreement"] == 1.0


def test_concepts_benchmark_fits_every_contender_on_real_vectors(weights_path, tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    import concepts_bench

    out = tmp_path / "concepts.json"
    arguments = [
        "--layer",
        "block5_conv3",
        "--concepts",
        "8",
        "--active",
        "2",
        "--steps",
        "5",
        "--photo-size",
        "96",
    ]
    arguments += ["--batch-size", "64", "--weights", str(weights_path), "--json", str(out)]
    overcomplete = importlib.util.find_spec("overcomplete") is not None
    assert concepts_bench.main(arguments + ([] if overcomplete else ["--skip", "overcomplete"])) == 0
    report = json.loads(out.read_text())
    vectors = 19 * 6 * 6  # every position of block5_conv3 on the 19 sample photos at 96
    assert report["vectors"] == {"train": vectors - vectors // 5, "held_out": vectors // 5, "channels": 512}
    kinds = ["topk", "batchtopk", "jumprelu", "archetypal", "nmf"]
    expected = {f"filterviz {kind}" for kind in kinds} | {"scikit-learn minibatch nmf"}
    expected |= (
        {"overcomplete topk", "overcomplete batchtopk", "overcomplete nmf (full batch)"}
        if overcomplete
        else set()
    )
    assert set(report["rows"]) == expected
    for name, row in report["rows"].items():
        assert 0 <= row["dead_fraction"] <= 1 and row["seconds"] > 0 and row["mean_l0"] >= 0, name
        assert np.isfinite(row["unexplained_variance"]), name
    assert report["rows"]["filterviz topk"]["mean_l0"] <= 2 + 1e-6  # TopK keeps at most `active` codes
    assert "filterviz nmf" in capsys.readouterr().out
