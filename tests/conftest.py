"""Fixtures: the real ImageNet weights, Keras' VGG16 on its JAX backend as the oracle, small H5 files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

import filterviz
from support import write_legacy_h5

# Keras is the oracle and must run on the same backend as filterviz; set before anything imports it.
os.environ["KERAS_BACKEND"] = "jax"
# The suite's programs are small (16-64 pixels, a few steps): compiling them costs far more than running
# them, and XLA:CPU's LLVM optimisations are most of the compile. Without them the suite compiles about
# twice as fast; what the programs compute is the same (every comparison in the suite runs under the same
# flag, and the real figures are measured by bench/ with the defaults). Set before JAX starts its CPU
# backend, for this process and every process it starts.
os.environ["XLA_FLAGS"] = " ".join(
    flag for flag in (os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0") if flag
)


def _isolate_from_the_users_home() -> None:
    """The suite writes nothing into the user's home: not compiled programs, not Keras' settings, not a
    download. The real weights are found first (they may sit in the user's Keras cache), then HOME and
    every cache point into a temporary folder, for this process and every process it starts."""
    from filterviz.networks.weights import find_weights, weights_variable

    found = find_weights()
    if found is not None:
        os.environ[weights_variable("vgg16")] = str(found.resolve())
    # One home for the whole run: the first process makes it, the workers and every process they start
    # inherit it, so all of them share one cache of compiled programs.
    home = Path(os.environ.get("FILTERVIZ_TESTS_HOME") or tempfile.mkdtemp(prefix="filterviz-tests-home-"))
    os.environ["FILTERVIZ_TESTS_HOME"] = str(home)
    os.environ["HOME"] = str(home)
    os.environ["XDG_CACHE_HOME"] = str(home / ".cache")
    os.environ["KERAS_HOME"] = str(home / ".keras")
    os.environ["FILTERVIZ_CACHE_DIR"] = str(home / ".cache" / "filterviz" / "xla")
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    # filterviz's own program store off: the suite counts the programs its calls compile
    # (tests/test_program_cache.py turns it on where it is tested).
    os.environ["FILTERVIZ_PROGRAM_CACHE"] = "off"
    _stand_in_spectrum(home)


def _stand_in_spectrum(home: Path) -> None:
    # The maco preset's published spectrum is a download; the suite runs offline, so FILTERVIZ_SPECTRUM
    # names a small 1/f spectrum instead (the fetch itself is tested against a local server).
    import numpy as np

    path = home / "spectrum-1-over-f.npy"
    if not path.exists():
        fy, fx = np.fft.fftfreq(32)[:, None], np.fft.rfftfreq(32)[None, :]
        magnitude = 1.0 / np.maximum(np.sqrt(fy * fy + fx * fx), 1 / 32)
        np.save(path, np.stack([magnitude, 0.5 * magnitude, 0.25 * magnitude]).astype(np.float32))
    os.environ["FILTERVIZ_SPECTRUM"] = str(path)


_isolate_from_the_users_home()
# The suite's own processes keep their compiled programs in that cache too: a program one test compiled
# is loaded, not compiled again, by the processes (CLI runs, workers of a sweep) that need it later.
filterviz.enable_compilation_cache()


@pytest.fixture(scope="session")
def weights_path() -> Path:
    """The real ImageNet weights file, found as load_weights() finds it (CI sets FILTERVIZ_WEIGHTS)."""
    from filterviz.networks.weights import download_weights, find_weights

    path = find_weights()
    if path is None:
        try:  # A fresh machine with internet access fetches the official file, as users do.
            path = download_weights()
        except filterviz.WeightsError as error:
            # Tests that need the real weights must not skip: say how to provide them.
            pytest.fail(f"the VGG16 weights are needed: {error}")
    if not path.is_file():
        pytest.fail(f"FILTERVIZ_WEIGHTS points at {path}, which is not a file")
    return path.resolve()


@pytest.fixture(scope="session")
def params(weights_path):
    return filterviz.load_weights(weights_path)


@pytest.fixture(scope="session")
def keras_vgg16(weights_path):
    """Keras' own VGG16 convolutional base, loaded from the same file, any input size."""
    import keras

    return keras.applications.VGG16(include_top=False, weights=str(weights_path), input_shape=(None, None, 3))


@pytest.fixture(scope="session")
def vgg16():
    return filterviz.network("vgg16")


@pytest.fixture(scope="session")
def random_params(vgg16):
    """VGG16 with random weights (Flax's initialisation, key 0)."""
    return vgg16.init(__import__("jax").random.key(0))


@pytest.fixture
def legacy_h5(tmp_path, random_params) -> Path:
    """A full-size legacy-layout file holding the random params (a stand-in with the real format)."""
    return write_legacy_h5(tmp_path / "random_vgg16.h5", random_params)


@pytest.fixture
def photo(tmp_path) -> Path:
    """A small JPEG photo (a colour gradient, 40x52)."""
    import numpy as np
    from PIL import Image

    path = tmp_path / "photo.jpg"
    gradient = np.linspace(0, 255, 40 * 52 * 3).reshape(40, 52, 3).astype(np.uint8)
    Image.fromarray(gradient).save(path)
    return path


@pytest.fixture(autouse=True)
def _keep_xla_flags():
    """`filterviz sweep` run in-process adds a CPU device count to XLA_FLAGS (too late for this process,
    whose JAX has started); put it back so it does not reach the processes later tests start."""
    before = os.environ.get("XLA_FLAGS")
    yield
    if before is None:
        os.environ.pop("XLA_FLAGS", None)
    else:
        os.environ["XLA_FLAGS"] = before
