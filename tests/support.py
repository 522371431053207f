"""Helpers for the tests: the reference digest, the atlas page's data, a writer of Keras legacy-layout
H5 files, a new user's clone (Keras parity helpers are in ``tests/parity.py``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest

from filterviz.core.network import Network
from filterviz.networks import get_network as network

CONTENT_SHA256 = "d9a27cc1fc7f975ef8cff49180e794ccd7c4bc868ebb49740803b3bbaa8dbefd"
"""Digest of the ImageNet VGG16 tensors (every kernel then bias, float32 LE, in layer order)."""


def a_new_users_clone(folder: Path, weights: Path) -> Path:
    """A clone as a new user has it after reading the README: this checkout's ``src/`` and ``notebooks/``,
    not installed, and the weights file in its ``weights/`` folder (linked where the file system allows).
    Run with ``PYTHONPATH=<clone>/src`` and no ``FILTERVIZ_WEIGHTS``."""
    root = Path(__file__).resolve().parents[1]
    skipped = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints")
    for part in ("src", "notebooks"):
        shutil.copytree(root / part, folder / part, ignore=skipped)
    (folder / "weights").mkdir()
    placed = folder / "weights" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    try:
        os.link(weights, placed)
    except OSError:
        shutil.copyfile(weights, placed)
    return folder


def as_a_new_user(clone: Path) -> dict[str, str]:
    """The environment of a new user's process: the clone's package first, no weights variable."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FILTERVIZ_WEIGHTS")}
    paths = [str(clone / "src"), os.environ.get("PYTHONPATH")]
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    return environment


def write_legacy_h5(path: Path, flat: dict, layers=None, *, kernel_shapes=None) -> Path:
    """Write weights in the official file's legacy layout (layer_names, weight_names, W_1:0 / b_1:0)."""
    layers = list(network("vgg16").layer_names) if layers is None else list(layers)
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = np.array([b"input_1"] + [name.encode() for name in layers])
        file.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for layer in layers:
            group = file.create_group(layer)
            if layer in flat:
                names = [f"{layer}_W_1:0", f"{layer}_b_1:0"]
                group.attrs["weight_names"] = np.array([name.encode() for name in names])
                kernel = np.asarray(flat[layer]["kernel"])
                if kernel_shapes and layer in kernel_shapes:
                    kernel = np.zeros(kernel_shapes[layer], np.float32)
                group.create_dataset(names[0], data=kernel)
                group.create_dataset(names[1], data=np.asarray(flat[layer]["bias"]))
            else:
                group.attrs["weight_names"] = np.array([], dtype="S1")
    return path


def write_network_h5(path: Path, net: Network, params) -> Path:
    """Write any built-in network's params in Keras' legacy layout (``layer_names``, and each layer's
    ``weight_names`` in Keras' order), as the official ``*_notop.h5`` files hold them."""
    shapes = net.parameter_shapes
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = np.array([group.encode() for group in shapes])
        for group, names in shapes.items():
            layer = file.create_group(group)
            keys = [f"{group}/{name}:0" for name in names]
            layer.attrs["weight_names"] = np.array([key.encode() for key in keys])
            for key, name in zip(keys, names, strict=True):
                layer.create_dataset(key, data=np.asarray(params[group][name], np.float32))
    return path


def page_text(page: Path) -> str:
    """The atlas page and every layer data file it names, as one text."""
    text = page.read_text()
    return text + "".join(path.read_text() for path in sorted((page.parent / "atlas").glob("*.js")))


def page_data(page: Path) -> dict:
    """The atlas page's data, each layer's filters read from its data file; no raw <, > or & anywhere."""
    text = page.read_text()
    block = text.split('<script id="atlas-data" type="application/json">')[1].split("</script>")[0]
    assert "<" not in block and ">" not in block and "&" not in block
    data = json.loads(block)
    for layer in data["layers"]:
        if "filters" not in layer:
            mark, call = (page.parent / layer["data"]).read_text().splitlines()
            assert (
                mark == "/* filterviz atlas data */"
                and call.startswith("atlasLayer(")
                and call.endswith(");")
            )
            assert "<" not in call and ">" not in call and "&" not in call
            content = json.loads(call[len("atlasLayer(") : -2])
            assert content["name"] == layer["name"]
            layer["filters"] = content["filters"]
    return data


def chromium() -> str:
    """The headless browser's path; the test skips without one, and fails where CI requires it."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        for folder in os.environ.get("PATH", "").split(os.pathsep):
            if os.access(Path(folder) / name, os.X_OK):
                return str(Path(folder) / name)
    message = "headless Chromium is needed for this test (Debian: apt-get install chromium)"
    if os.environ.get("FILTERVIZ_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


WORKER = Path(__file__).with_name("sweep_worker.py")
CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def run_worker(request: dict, *, devices: int = 1, wait: bool = True, **popen):
    """Run tests/sweep_worker.py with ``devices`` CPU devices; the finished process, or the Popen."""
    environment = {
        **os.environ,
        # The suite's flags (its compile-time saving) and the device count.
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {CPU_DEVICES_FLAG}={devices}".strip(),
        "JAX_PLATFORMS": "cpu",
    }
    command = [sys.executable, str(WORKER), json.dumps(request)]
    if not wait:
        return subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
        )
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def run_two_processes(request: dict) -> list[dict]:
    """Run ``request`` in two worker processes of 2 CPU devices each, joined by jax.distributed; their
    reports, process 0's first."""
    coordinator = f"localhost:{free_port()}"
    workers = [
        run_worker(
            {
                **request,
                "distributed": {"coordinator_address": coordinator, "num_processes": 2, "process_id": index},
            },
            devices=2,
            wait=False,
            text=True,
        )
        for index in range(2)
    ]
    # Both read at once: a worker whose pipe is full would block its exit, which waits for the other.
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(lambda worker: worker.communicate(timeout=300), workers))
    reports = []
    for worker, (stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    return reports
