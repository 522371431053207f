"""What a first call waits for besides the ascent itself: no program compiled per tensor, per index cast
or per gather. Each of these would be compiled (and traced) before the first picture."""

from __future__ import annotations

import logging

import jax
import pytest

import filterviz

# Besides the ascent's own program: the parameter check (one program for the whole tree), the filters'
# PRNG keys (one program for all of them), and joining the pictures of several chunks on the device
# (for ascend, with the first image of each filter taken).
ALLOWED = {"_all_finite", "_fold_in_each", "concatenate", "_first_images"}


def compiled_programs(caplog: pytest.LogCaptureFixture, call) -> list[str]:
    """The names of the programs ``call()`` compiles in a process whose in-memory caches are empty."""
    jax.clear_caches()  # as in a fresh process (the persistent cache makes the suite's later ones cheap)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jax._src.interpreters.pxla"), jax.log_compiles(True):
        call()
    found = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Compiling ")]
    return [message.split("(", 1)[1].split(")", 1)[0] for message in found]


@pytest.mark.parametrize("method", ["notebook", "lucid"])
@pytest.mark.parametrize("filters", [[3], [0, 1, 2]])
def test_a_first_render_compiles_its_program_and_at_most_three_others(random_params, caplog, method, filters):
    def call():
        filterviz.render(
            random_params, filterviz.channel("block1_conv2", filters), method=method, size=16, steps=2
        )

    names = compiled_programs(caplog, call)
    assert names.count("render_and_measure") == 1, names
    others = [name for name in names if name != "render_and_measure"]
    assert len(others) <= 3 and set(others) <= ALLOWED, names


def test_a_first_ascend_compiles_its_program_and_at_most_three_others(random_params, caplog):
    start = filterviz.random_image(jax.random.key(0), 16, 16)
    names = compiled_programs(
        caplog, lambda: filterviz.ascend(random_params, "block1_conv2", [0, 1], start, steps=2)
    )
    others = [name for name in names if name != "render_and_measure"]
    assert names.count("render_and_measure") == 1 and len(others) <= 3 and set(others) <= ALLOWED, names


def test_the_clis_first_picture_compiles_what_render_does_and_its_start_noise(weights_path, tmp_path, caplog):
    from filterviz.cli import main

    arguments = [
        "block1_conv2",
        "--filters",
        "0-2",
        "--size",
        "16",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "a.png"),
    ]
    names = compiled_programs(caplog, lambda: main(["filters", *arguments, "--weights", str(weights_path)]))
    others = [name for name in names if name not in ("render_and_measure", "_noise")]
    assert names.count("render_and_measure") == names.count("_noise") == 1, (
        names
    )  # the notebook's shared start
    assert len(others) <= 3 and set(others) <= ALLOWED, names  # no per-tensor program while loading weights


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 - 1, 2**32, 2**40 + 5, 2**63 - 1])
def test_a_seed_key_made_on_the_host_is_jaxs(seed):
    from filterviz.core.engine import seed_key

    expected = jax.random.key_data(jax.random.key(seed))
    assert (jax.random.key_data(seed_key(seed)) == expected).all()
