"""The GPU check's harness: the sizes of a run (full or smoke), and a part's record, saved as it goes."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

PARTS = (
    "env",
    "correctness",
    "latency",
    "speed",
    "sweep",
    "torch",
    "lucent",
    "lucid",
    "examples",
    "activation_atlas",
)


# Relative shares of the budget; a part that ends early leaves its time to the later ones.
SHARES = {
    "env": 20,
    "correctness": 30,
    "latency": 45,
    "speed": 55,
    "sweep": 165,
    "torch": 20,
    "lucent": 40,
    "lucid": 75,
    "examples": 95,
    "activation_atlas": 90,
}


PRECISIONS = ("float32", "tf32", "bfloat16")


# The precision the comparisons use on a GPU: TF32 is what a float32 user gets from a tensor-core GPU.
MAIN_PRECISION = "tf32"


REPORT_NAME = "gpu_check"


GRACE_SECONDS = 15  # past its share, a part is killed


@dataclasses.dataclass(frozen=True)
class Config:
    """The sizes of one run: ``FULL`` on a GPU, ``SMOKE`` anywhere in seconds."""

    size: int = 128
    steps: int = 20
    sample_layers: tuple[str, ...] = (
        "block5_conv3",
        "block1_conv2",
        "block3_conv3",
        "block4_conv3",
        "block2_conv2",
    )
    atlas_layers: tuple[str, ...] | None = None  # None: all 13 conv layers
    atlas_filters: str = "all"
    activation_layers: tuple[str, ...] = (
        "block1_conv2",
        "block2_pool",
        "block3_conv3",
        "block4_conv3",
        "block5_conv3",
    )
    activation_size: int = 64
    parity_cases: tuple[tuple[str, int], ...] = (("block2_conv2", 64), ("block5_conv3", 96))
    parity_filters: int = 2
    method_layer: str = "block3_conv1"
    method_size: int = 64
    method_steps: int = 3
    lucid_steps: int = 8
    latency_layers: tuple[str, ...] = ("block5_conv3", "block1_conv2")  # the slowest to compile first
    latency_precisions: tuple[str, ...] = ("tf32",)
    lucid_layers: tuple[str, ...] = (
        "block5_conv3",
        "block4_conv3",
        "block3_conv3",
        "block2_conv2",
        "block1_conv2",
    )
    atlas_precisions: tuple[str, ...] = ("tf32", "bfloat16")
    lucid_precisions: tuple[str, ...] = ("tf32", "bfloat16")
    loop_filters: int = 2
    peak_size: int = 8192
    repeats: int = 2
    examples_images: int = 50_000
    examples_size: int = 224
    examples_layers: tuple[str, ...] | None = None  # None: all 13 conv layers
    examples_batch: int = 128
    examples_decode_images: int = 4096
    activation_atlas_images: int = 10_000
    activation_atlas_layer: str = "block4_conv3"
    activation_atlas_grid: int = 20
    activation_atlas_size: int = 224
    activation_atlas_batch: int = 128
    activation_atlas_steps: int | None = None  # None: the Lucid preset's 512
    lucent_layers: tuple[str, ...] = ("block3_conv3", "block4_conv3", "block5_conv3")
    lucent_batch: int = 16
    lucent_steps: int = 64
    lucent_size: int = 128
    # The activation atlas's layout from principal components even where umap-learn is here: the GPU
    # machine's path (it has no umap-learn), and no numba compile in a smoke run.
    stand_in_layout: bool = False
    # Every part in this process rather than one process each: a smoke run is a check, not a timing.
    one_process: bool = False


FULL = Config()


SMOKE = Config(
    size=16,
    steps=1,
    sample_layers=("block1_conv2",),
    atlas_layers=("block1_conv2",),
    atlas_filters="0-3",
    activation_layers=("block1_conv2", "block1_pool"),
    activation_size=16,
    parity_cases=(("block1_conv2", 16),),
    parity_filters=1,
    method_layer="block1_conv2",
    method_size=32,
    method_steps=1,
    lucid_steps=1,
    latency_layers=("block1_conv2",),
    latency_precisions=("float32",),
    lucid_layers=("block1_conv2",),
    atlas_precisions=("tf32",),  # one precision: the sweep part runs the CLI twice per precision
    lucid_precisions=("tf32",),
    loop_filters=1,
    peak_size=128,
    repeats=1,
    examples_images=10,
    examples_size=32,
    examples_layers=("block1_conv1", "block1_conv2"),
    examples_batch=4,
    examples_decode_images=6,
    activation_atlas_images=8,
    activation_atlas_layer="block1_conv2",
    activation_atlas_grid=2,
    activation_atlas_size=32,
    activation_atlas_batch=4,
    activation_atlas_steps=1,
    lucent_layers=("block1_conv2",),
    lucent_batch=2,
    lucent_steps=2,
    lucent_size=32,
    stand_in_layout=True,
    one_process=True,
)


class Part:
    """What one part measured, written to ``<work>/<name>.json`` after every :meth:`record`."""

    def __init__(self, name: str, work: Path, seconds: float):
        self.name, self.work = name, work
        self.stop_at = time.monotonic() + seconds
        self.data: dict[str, Any] = {"failures": [], "skipped": []}

    def record(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    def save(self) -> None:
        path = self.work / f"{self.name}.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.data, indent=2, default=plain))
        os.replace(temporary, path)

    def left(self) -> float:
        return self.stop_at - time.monotonic()

    def guarded(self, what: str, function, *args, needs: float = 0.0, **kwargs) -> Any:
        """``function(*args, **kwargs)``, or None with the failure recorded; skipped when fewer than
        ``needs`` seconds are left."""
        if self.left() < needs:
            self.data["skipped"].append(f"{what}: {self.left():.0f} s left of the part's share")
            self.save()
            return None
        try:
            return function(*args, **kwargs)
        except Exception as error:  # one item's failure must not stop the part
            self.data["failures"].append(
                {"part": self.name, "item": what, "error": f"{type(error).__name__}: {error}"}
            )
            self.save()
            traceback.print_exc()
            return None


def plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def finite(value: float | None) -> float | None:
    # JSON has no NaN: a non-finite figure is recorded as null (and the check that reads it fails).

    return value if value is not None and math.isfinite(value) else None


def load_part(work: Path, name: str) -> dict[str, Any]:
    path = work / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def ready(result: Any) -> Any:
    import jax

    return jax.block_until_ready(result)


def device_pair():
    """``(device, cpu, accelerator)``: the default device, the CPU device, whether they differ."""
    import jax

    device = jax.devices()[0]
    cpu = jax.devices("cpu")[0]
    return device, cpu, device.platform != "cpu"


def host_params(weights: str):
    import jax
    import numpy as np

    import filterviz

    return jax.tree.map(np.asarray, filterviz.load_weights(weights))
