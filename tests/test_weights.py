"""Weights: both H5 layouts, every failure mode as a typed error, the search order, the download."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

import filterviz
from filterviz.networks.h5 import read_keras_h5
from filterviz.networks.weights import content_digest, download_weights, find_weights, load_weights
from support import CONTENT_SHA256, a_new_users_clone, as_a_new_user, write_legacy_h5

CONV_LAYERS = [layer.name for layer in filterviz.network("vgg16").layers if layer.kind == "Conv2D"]
WEIGHTS_FILENAME = filterviz.network("vgg16").weights.file_name


def assert_same_params(a, b):
    assert set(a) == set(b) == set(CONV_LAYERS)
    for layer in CONV_LAYERS:
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(a[layer][name], b[layer][name])


def test_real_file_holds_the_imagenet_tensors(params):
    assert content_digest(params) == CONTENT_SHA256
    assert params["block1_conv1"]["kernel"].shape == (3, 3, 3, 64)
    assert params["block5_conv3"]["bias"].dtype == np.float32


def test_keras_loads_the_same_tensors(params, keras_vgg16):
    for layer in CONV_LAYERS:
        kernel, bias = keras_vgg16.get_layer(layer).get_weights()
        np.testing.assert_array_equal(params[layer]["kernel"], kernel)
        np.testing.assert_array_equal(params[layer]["bias"], bias)


def test_keras3_weights_file_written_by_keras_loads_identically(params, keras_vgg16, tmp_path):
    path = tmp_path / "vgg16.weights.h5"
    keras_vgg16.save_weights(str(path))
    assert_same_params(load_weights(path), params)


def test_keras3_layout_without_name_attributes_is_read_in_creation_order(random_params, tmp_path):
    path = tmp_path / "unnamed.weights.h5"
    with h5py.File(path, "w") as file:
        for position, layer in enumerate(CONV_LAYERS):
            key = "conv2d" if position == 0 else f"conv2d_{position}"
            group = file.create_group(f"layers/{key}/vars")
            group.create_dataset("0", data=np.asarray(random_params[layer]["kernel"]))
            group.create_dataset("1", data=np.asarray(random_params[layer]["bias"]))
        file.create_group("layers/max_pooling2d/vars")
    assert_same_params(load_weights(path), random_params)


def test_legacy_layout_round_trip(legacy_h5, random_params):
    assert_same_params(load_weights(legacy_h5), random_params)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(filterviz.WeightsError, match="no such file") as caught:
        load_weights(tmp_path / "absent.h5")
    assert str(tmp_path / "absent.h5") in str(caught.value)
    with pytest.raises(filterviz.WeightsError, match="is a directory"):
        load_weights(tmp_path)


def test_truncated_file(legacy_h5, tmp_path):
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(legacy_h5.read_bytes()[: legacy_h5.stat().st_size // 2])
    with pytest.raises(filterviz.WeightsError, match="truncated") as caught:
        load_weights(truncated)
    assert str(truncated) in str(caught.value)


def test_not_an_hdf5_file(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("these are not weights\n")
    with pytest.raises(filterviz.WeightsError, match="not an HDF5 file"):
        load_weights(text)


def test_foreign_hdf5_file(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as file:
        file.create_dataset("temperature", data=np.arange(10.0))
    with pytest.raises(filterviz.WeightsError, match="not a Keras weights file"):
        load_weights(foreign)


def test_missing_layers_are_named(random_params, tmp_path):
    partial = write_legacy_h5(tmp_path / "partial.h5", random_params, layers=CONV_LAYERS[:10])
    with pytest.raises(
        filterviz.WeightsError, match="missing layers block5_conv1, block5_conv2, block5_conv3"
    ):
        load_weights(partial)


def test_wrong_shapes_are_named(random_params, tmp_path):
    wrong = write_legacy_h5(
        tmp_path / "wrong.h5", random_params, kernel_shapes={"block2_conv1": (3, 3, 64, 100)}
    )
    with pytest.raises(filterviz.WeightsError, match=r"block2_conv1 kernel has shape \(3, 3, 64, 100\)"):
        load_weights(wrong)


def test_read_keras_h5_ignores_layers_the_base_does_not_have(random_params, tmp_path):
    path = write_legacy_h5(tmp_path / "with_top.h5", random_params)
    with h5py.File(path, "a") as file:
        names = [*file.attrs["layer_names"], b"fc1"]
        file.attrs["layer_names"] = np.array(names)
        group = file.create_group("fc1")
        group.attrs["weight_names"] = np.array([b"fc1_W_1:0", b"fc1_b_1:0"])
        group.create_dataset("fc1_W_1:0", data=np.zeros((8, 4), np.float32))
        group.create_dataset("fc1_b_1:0", data=np.zeros(4, np.float32))
    assert "fc1" in read_keras_h5(path).named
    assert_same_params(load_weights(path), random_params)


# ----------------------------------------------------------------------------------------------------
# Search order and download


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No weights anywhere: an empty working folder, an empty Keras home, no environment variable."""
    monkeypatch.delenv("FILTERVIZ_WEIGHTS", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.chdir(tmp_path)
    project_weights = tmp_path / "project_weights"
    monkeypatch.setattr("filterviz.networks.weights._project_weights_dir", lambda: project_weights)
    return tmp_path


def test_search_order(isolated, legacy_h5, random_params, monkeypatch):
    assert find_weights() is None
    with pytest.raises(filterviz.WeightsError, match="no vgg16 weights found") as caught:
        load_weights(download=False)
    assert "FILTERVIZ_WEIGHTS" in str(caught.value) and "keras_home" in str(caught.value)

    cached = isolated / "keras_home" / "models" / WEIGHTS_FILENAME
    cached.parent.mkdir(parents=True)
    shutil.copy(legacy_h5, cached)
    assert find_weights() == cached

    local = isolated / "weights" / WEIGHTS_FILENAME
    local.parent.mkdir()
    shutil.copy(legacy_h5, local)
    assert find_weights() == Path("weights") / WEIGHTS_FILENAME

    monkeypatch.setenv("FILTERVIZ_WEIGHTS", str(isolated / "elsewhere.h5"))
    assert find_weights() == isolated / "elsewhere.h5"
    with pytest.raises(filterviz.WeightsError, match="no such file"):
        load_weights()  # a named file that is missing is an error, not a reason to look elsewhere


class _Server:
    """A local HTTP server serving one payload, optionally announcing more bytes than it sends."""

    def __init__(self, payload: bytes, *, announced: int | None = None, status: int = 200):
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                served.requests += 1
                if status != 200:
                    self.send_error(status)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(announced or len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.requests = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/{WEIGHTS_FILENAME}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(payload: bytes, **options) -> _Server:
        servers.append(_Server(payload, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_download_checks_md5_and_writes_atomically(serve, legacy_h5, random_params, tmp_path):
    payload = legacy_h5.read_bytes()
    server = serve(payload)
    target = download_weights(tmp_path / "cache", url=server.url, md5=hashlib.md5(payload).hexdigest())
    assert target == tmp_path / "cache" / WEIGHTS_FILENAME
    assert target.read_bytes() == payload
    assert leftovers(tmp_path / "cache") == [WEIGHTS_FILENAME]
    assert_same_params(load_weights(target), random_params)


def test_download_with_wrong_md5_leaves_nothing(serve, legacy_h5, tmp_path):
    server = serve(legacy_h5.read_bytes())
    with pytest.raises(filterviz.WeightsError, match="md5") as caught:
        download_weights(tmp_path / "cache", url=server.url, md5="0" * 32)
    assert "without internet access" in str(caught.value)
    assert leftovers(tmp_path / "cache") == []


def test_a_failed_download_leaves_no_folder_behind(serve, tmp_path):
    server = serve(b"", status=404)
    cache = tmp_path / "home" / ".keras" / "models"
    with pytest.raises(filterviz.WeightsError, match="could not download"):
        download_weights(cache, url=server.url)
    assert not (tmp_path / "home").exists()  # every folder it made is gone, and no more


def test_short_transfer_leaves_nothing(serve, legacy_h5, tmp_path):
    payload = legacy_h5.read_bytes()[:5000]
    server = serve(payload, announced=10_000)
    with pytest.raises(filterviz.WeightsError):
        download_weights(tmp_path / "cache", url=server.url, md5=None)
    assert leftovers(tmp_path / "cache") == []


def test_http_error_and_unreachable_server(serve, tmp_path):
    server = serve(b"", status=404)
    with pytest.raises(filterviz.WeightsError, match="could not download"):
        download_weights(tmp_path / "cache", url=server.url)
    closed = serve(b"")
    url = closed.url
    closed.close()
    with pytest.raises(filterviz.WeightsError, match=r"could not download.*copy vgg16_weights"):
        download_weights(tmp_path / "cache", url=url, timeout=5)
    assert leftovers(tmp_path / "cache") == []


def test_load_weights_downloads_into_the_keras_cache_when_nothing_is_found(
    isolated, serve, legacy_h5, random_params
):
    payload = legacy_h5.read_bytes()
    server = serve(payload)
    params = load_weights(url=server.url, md5=hashlib.md5(payload).hexdigest())
    assert_same_params(params, random_params)
    cached = isolated / "keras_home" / "models" / WEIGHTS_FILENAME
    assert cached.read_bytes() == payload
    load_weights(url=server.url)  # found in the cache now: no second request
    assert server.requests == 1


def test_official_source_is_the_keras_url_and_hash():
    source = filterviz.network("vgg16").weights
    assert source.url == (
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    assert source.md5 == "6d6bbae143d832006294945121d1f1fc"


def test_the_published_spectrum_is_fetched_checked_and_kept(serve, tmp_path, monkeypatch):
    import io

    from filterviz.io import spectrum as published

    magnitude = np.abs(np.random.default_rng(0).normal(size=(3, 16, 9))).astype(np.float32) + 0.1
    buffer = io.BytesIO()
    np.save(buffer, magnitude)
    payload = buffer.getvalue()
    monkeypatch.delenv("FILTERVIZ_SPECTRUM", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "filterviz"
    # The pinned hash is not this file's: refused, nothing left behind.
    with pytest.raises(filterviz.WeightsError, match="sha256") as caught:
        published.imagenet_spectrum(url=serve(payload).url)
    assert "filterviz spectrum" in str(caught.value) and leftovers(cache) == []
    monkeypatch.setattr(published, "SPECTRUM_SHA256", hashlib.sha256(payload).hexdigest())
    fetched = published.imagenet_spectrum(url=serve(payload).url)
    np.testing.assert_array_equal(fetched.magnitude, magnitude)
    assert fetched.source == "imagenet" and leftovers(cache) == [published.SPECTRUM_FILE]
    assert published.imagenet_spectrum(download=False) == fetched  # kept: no second download


def test_the_clones_weights_folder_is_found_from_any_folder(weights_path, tmp_path):
    # As a new user has it: the file in the clone's weights/, no variable set, the command run from
    # another folder. The README and weights/README.md name that place.
    clone = a_new_users_clone(tmp_path / "clone", weights_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = "import sys, filterviz, filterviz.cli as cli; print(filterviz.__file__); sys.exit(cli.main())"
    arguments = ["filters", "block1_conv1", "--filters", "0", "--steps", "1", "--size", "32"]
    done = subprocess.run(
        [sys.executable, "-c", script, *arguments, "--out", "a.png", "--quiet"], cwd=elsewhere,
        env=as_a_new_user(clone), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(clone) and (elsewhere / "a.png").is_file()
