"""Everyday use: progress where it takes time (and quiet where nobody watches), grids that say which
filters responded, a hint when they stayed dead, README code that runs, and no side effects."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import filterviz
from filterviz import progress
from filterviz.cli import main
from filterviz.cli.commands import stall_hint
from filterviz.core.engine import Ascent, render_batch
from filterviz.core.methods import get_method, notebook_method
from filterviz.io import plots
from filterviz.sweeps.atlas import contact_sheet

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------
# Progress.


def run_on(command: list[str], *, terminal: bool, environment: dict | None = None) -> tuple[int, str]:
    """Run ``command`` with stderr on a pseudo-terminal (that reports no size) or a pipe; its stderr."""
    extra = environment or {}
    environment = {key: value for key, value in os.environ.items() if key != "CI"}
    environment.update({"JAX_PLATFORMS": "cpu", **extra})
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
        return done.returncode, done.stderr
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower, env=environment)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the other end closed
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "filterviz", *arguments]


@pytest.mark.slow
def test_the_cli_shows_progress_on_a_terminal_and_nowhere_else(weights_path, tmp_path):
    filters = cli(
        "filters", "block2_conv1", "--filters", "0-2", "--size", "16", "--steps", "10",
        "--weights", str(weights_path), "--out", str(tmp_path / "grid.png"),
    )  # fmt: skip
    code, shown = run_on(filters, terminal=True)
    assert code == 0, shown
    assert "block2_conv1, 3 filters" in shown and "30/30" in shown and "step/s" in shown
    code, piped = run_on(filters, terminal=False)
    assert code == 0 and "%|" not in piped and "wrote" in piped
    code, quiet = run_on([*filters, "--quiet"], terminal=True)
    assert code == 0 and "%|" not in quiet and "wrote" not in quiet
    code, ci = run_on(filters, terminal=True, environment={"CI": "true"})
    assert code == 0 and "%|" not in ci


def test_the_bar_says_when_it_waits_for_the_compiler(weights_path, tmp_path):
    lucid = cli(
        "filters", "block5_conv3", "--filters", "0", "--method", "lucid", "--size", "32", "--steps", "2",
        "--weights", str(weights_path), "--out", str(tmp_path / "grid.png"),
    )  # fmt: skip
    cold = {"FILTERVIZ_CACHE_DIR": str(tmp_path / "cache")}  # nothing compiled yet: the compiler runs
    code, shown = run_on(lucid, terminal=True, environment=cold)
    assert code == 0, shown
    waited = re.findall(r"compiling lucid for block5_conv3 \((\d+) s\)", shown)
    assert waited, shown  # the bar said so while XLA compiled, with the seconds so far
    assert "2/2" in shown and shown.rindex("2/2") > shown.index("compiling lucid")  # then it counted steps
    kept = [path.name for path in (tmp_path / "cache").iterdir()]
    # And the programs are kept on disk: watched, the ascent runs in segments (tests/test_progress_bar.py).
    assert any("advance_batch" in name for name in kept), kept


@pytest.mark.parametrize("method", ["notebook", "lucid"])
def test_no_compiled_program_calls_back_to_the_host(vgg16, random_params, method):
    # JAX keeps no program with a host callback in its persistent cache: the bar must count from outside.
    objective = filterviz.channel("block1_conv2", [0, 5])
    keys = jax.random.split(jax.random.key(0), 2)
    chosen = notebook_method(3) if method == "notebook" else get_method("lucid", steps=3)
    for frame_every in (None, 2):
        ascent = Ascent(vgg16, chosen, (16, 16), frame_every=frame_every)
        text = render_batch.lower(ascent, random_params, objective, None, keys).as_text()
        assert "callback" not in text.lower()


def test_the_api_shows_progress_when_watched(random_params, capsys, monkeypatch):
    start = filterviz.random_image(jax.random.key(0), 16, 16)
    filterviz.ascend(random_params, "block1_conv2", [0, 1, 2], start, steps=6)
    assert "%|" not in capsys.readouterr().err  # not watched: pytest's stderr is no terminal
    filterviz.ascend(random_params, "block1_conv2", [0, 1, 2], start, steps=6, progress=True)
    assert "18/18" in capsys.readouterr().err
    filterviz.render(
        random_params, filterviz.channel("block1_conv2", [0, 1]), size=16, steps=3, progress=True
    )
    assert "6/6" in capsys.readouterr().err
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.delenv("CI", raising=False)
    assert progress.wanted() and not progress.wanted(False)
    monkeypatch.setenv("CI", "1")
    assert not progress.wanted()


# ----------------------------------------------------------------------------------------------------
# Saying what happened.


def test_grids_label_each_filter_with_what_it_reached(random_params):
    start = filterviz.random_image(jax.random.key(0), 16, 16)
    figure = filterviz.show_filters(random_params, "block2_conv1", start, n=3, steps=2)
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert len(titles) == 3 and all(re.fullmatch(r"filter \d: (dead|[0-9.e+-]+)", t) for t in titles)
    images = filterviz.ascend(random_params, "block2_conv1", [0, 1, 2], start, steps=2)
    reached = filterviz.achieved(random_params, "block2_conv1", [0, 1, 2], images)
    assert titles == plots.filter_labels([0, 1, 2], reached)


@pytest.mark.parametrize("columns", [1, 3, 7, 10])
def test_titles_never_overlap_the_pictures(columns):
    pictures = np.zeros((20, 32, 32, 3), np.uint8)
    labels = [f"filter {i}: 123.4" for i in range(20)]
    figure = filterviz.filter_grid(pictures, labels, columns=columns, title="block4_conv1 (notebook)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [axis.get_window_extent(renderer) for axis in figure.axes]
    for index, axis in enumerate(figure.axes):
        if not axis.get_title():
            continue
        title = axis.title.get_window_extent(renderer)
        for other, box in enumerate(boxes):
            if other != index:
                assert not title.overlaps(box), (columns, index, other)


def test_contact_sheets_label_their_tiles():
    pictures = np.zeros((5, 16, 16, 3), np.uint8)
    plain = contact_sheet(pictures, columns=5, tile=16)
    labelled = contact_sheet(pictures, ["0", "1", "2", "3", "40"], columns=5, tile=16)
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] == plain.shape[1]
    caption = labelled[plain.shape[0] - 2 :]  # the strip under the tiles
    assert (caption < 128).any()  # dark text on white


def test_a_hint_when_most_filters_stayed_dead(weights_path, tmp_path, capsys):
    assert stall_hint("block5_conv3", [0.0, 0.0, 3.0], "notebook").startswith("2 of 3 filters")
    assert "--method lucid" in stall_hint("block5_conv3", [0.0, 0.0, 3.0], "notebook")
    assert "--method lucid" not in stall_hint("block5_conv3", [0.0, 0.0], "lucid")
    assert stall_hint("block1_conv1", [1.0, 0.0, 2.0], "notebook") is None
    arguments = ["--size", "16", "--steps", "2", "--weights", str(weights_path)]
    assert (
        main(["filters", "block5_conv3", "--filters", "0-3", *arguments, "--out", str(tmp_path / "a.png")])
        == 0
    )
    err = capsys.readouterr().err
    assert "wrote" in err and "4 filters of block5_conv3" in err and "stayed dead" in err
    assert (
        main(["filters", "block1_conv1", "--filters", "0", *arguments, "--out", str(tmp_path / "b.png")]) == 0
    )
    err = capsys.readouterr().err
    assert "1 filter of block1_conv1" in err and "2 steps" in err and "stayed dead" not in err


# ----------------------------------------------------------------------------------------------------
# The README's code runs, at tiny sizes.


GUIDES = ("getting-started", "models", "command-line", "methods", "sweeps", "activation-atlases", "examples")
GUIDES += ("devices", "performance", "concepts")
"""The guides whose Python blocks run after the README's, in this order (later blocks use earlier names)."""
HALVES = (GUIDES[:3], GUIDES[3:])
"""Two tests, each the README then half the guides (which use only the README's names), so that two
workers share the wait."""


def readme_blocks(guides: tuple[str, ...] = GUIDES) -> list[str]:
    pages = [ROOT / "README.md", *(ROOT / "docs" / f"{guide}.md" for guide in guides)]
    found = (re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S) for page in pages)
    return [block for blocks in found for block in blocks]


TINY = [
    (r'"block4_conv1", range\(8\)\), method="lucid"', '"block2_conv1", range(2)), method="lucid"'),
    (r"\b128, 128\b", "32, 32"),
    (r"range\((64|16|8)\)", "range(2)"),
    (r"\bsteps=\d+", "steps=2"),  # not fit_steps=, which the concepts line below sets
    (r"frame_every=\d+", "frame_every=1"),
    (r"count=20", "count=2"),
    (r"conv4_block6_out", "conv2_block1_out"),  # a shallower ResNet50 layer: less to compile
    (r"size=224", "size=32"),
    (r"size=512", "size=48"),
    # One level of small icons, from small photos, drawn in 2 steps (the atlas sets its icons' own steps).
    (r"grid=20\)", "grid=2, zoom=[2], size=16, image_size=32, steps=2)"),
    (r"levels\[20\]", "levels[2]"),
    (r'weights="DEFAULT"', "weights=None"),  # torchvision's published weights: no download in the suite
    (r'"layer3\.5"', '"layer1.0"'),  # a shallower layer of the torchvision ResNet50: less to compile
    (r"Octaves\(3,", "Octaves(2,"),  # one octave fewer to compile
    (
        r'"block4_conv3", out="concepts", concepts=128, active=8, fit_steps=2000',
        '"block1_conv2", out="concepts", concepts=4, active=2, fit_steps=5, fit_batch_size=64, '
        'image_size=32, size=16, stability=False, method="notebook"',
    ),  # four concepts on the shallowest layer, drawn by the cheapest program
    # Shallower layers than the pages name (after the lines above that match their names): less to
    # compile and to run.
    (r'"block4_conv[13]"', '"block2_conv2"'),
    (r'"block5_conv[13]"', '"block2_conv1"'),
    (r"view=\d+", "view=32"),
]


@pytest.mark.slow
@pytest.mark.parametrize("guides", HALVES, ids=["first-guides", "later-guides"])
def test_every_python_block_of_the_readme_runs(params, tmp_path, monkeypatch, guides):
    from PIL import Image

    from filterviz.core.methods import METHODS
    from filterviz.draw import rendering

    assert len(readme_blocks(guides)) >= 2
    monkeypatch.chdir(tmp_path)
    gradient = np.linspace(0, 255, 40 * 52 * 3).reshape(40, 52, 3).astype(np.uint8)
    Image.fromarray(gradient).save(tmp_path / "cat.jpg")
    (tmp_path / "photos" / "cats").mkdir(parents=True)  # a folder of photos for the dataset examples
    for index in range(3):
        Image.fromarray(np.roll(gradient, 7 * index, axis=1)).save(
            tmp_path / "photos" / "cats" / f"{index}.jpg"
        )
    shutil.copy(os.environ["FILTERVIZ_SPECTRUM"], tmp_path / "spectrum.npy")  # a reader's own spectrum
    # Tiny sizes where the README relies on defaults: every preset's steps (show_filters' and
    # layer_image's too), render's size, a sweep's filters.
    for name, preset in METHODS.items():
        monkeypatch.setitem(METHODS, name, filterviz.get_method(preset, steps=2))
    monkeypatch.setattr(rendering, "DEFAULT_SIZE", 32)
    monkeypatch.setitem(filterviz.sweep.__wrapped__.__kwdefaults__, "filters", [0, 1])
    monkeypatch.setitem(filterviz.sweep.__wrapped__.__kwdefaults__, "size", (32, 32))
    # What the README's readers have of their own: ResNet50's weights (random here; the real ones are not
    # on this machine), a Keras classifier file, a Flax module and its variables.
    import flax.linen as nn
    import keras

    from support import write_network_h5

    resnet = filterviz.network("resnet50")
    constant = {  # the values do not matter here, and constants cost no initialising pass
        group: {key: np.full(shape, 0.01, np.float32) for key, shape in names.items()}
        for group, names in resnet.parameter_shapes.items()
    }
    weights = write_network_h5(tmp_path / "resnet50.h5", resnet, constant)
    monkeypatch.setenv("FILTERVIZ_WEIGHTS_RESNET50", str(weights))
    inputs = keras.Input((None, None, 3))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2d")(inputs)
    hidden = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2d_1")(hidden)
    classes = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(hidden))
    keras.Model(inputs, classes).save(tmp_path / "my_classifier.keras")

    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Conv(4, (3, 3), name="conv")(x)

    module = Tiny()
    namespace: dict = {"module": module, "variables": module.init(jax.random.key(0), np.zeros((1, 8, 8, 3)))}
    for block in readme_blocks(guides):
        for pattern, replacement in TINY:
            block = re.sub(pattern, replacement, block)
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "block3_conv1.png").is_file() and (tmp_path / "atlas" / "index.html").is_file()
    assert (tmp_path / "neuron.gif").is_file() == ("methods" in guides)
    assert (tmp_path / "examples" / "examples.jsonl").is_file() == ("examples" in guides)


def test_the_readme_names_only_functions_that_exist():
    pages = [ROOT / "README.md", *(page for page in (ROOT / "docs").glob("*.md") if page.stem != "changelog")]
    text = "".join(page.read_text() for page in pages if page.name != "vocabulary.md")
    for name in set(re.findall(r"`filterviz\.([a-z_]+(?:\.[a-z_]+)*)\(", text)):
        target = filterviz
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # the guides teach no retired name
            for part in name.split("."):
                assert hasattr(target, part), f"filterviz.{name} in the README or the guides does not exist"
                target = getattr(target, part)
        assert callable(target), name


# ----------------------------------------------------------------------------------------------------
# No side effects.


def test_the_suite_writes_nothing_into_the_users_home():
    from filterviz.networks.weights import keras_cache_dir
    from filterviz.runtime import compilation_cache_dir

    temporary = Path(tempfile.gettempdir()).resolve()
    assert temporary in Path.home().resolve().parents
    assert Path.home().resolve() in compilation_cache_dir().resolve().parents
    assert Path.home().resolve() in keras_cache_dir().resolve().parents
