"""The shape of the package: a pure numerical core that imports no I/O, and a small public API."""

from __future__ import annotations

import ast
from pathlib import Path

import filterviz

PACKAGE = Path(filterviz.__file__).resolve().parent
CORE = {
    "network",
    "vgg",
    "resnet",
    "layers",
    "objectives",
    "param",
    "transforms",
    "methods",
    "engine",
    "checks",
    "pictures",
    "hits",
    "errors",
}
"""Networks, objectives, parameterizations, transforms, methods and the engine: arrays in, arrays out."""
ALLOWED_OUTSIDE = {"jax", "numpy", "optax", "flax", "math", "numbers", "dataclasses", "functools", "typing"}
ALLOWED_OUTSIDE |= {"collections", "__future__", "difflib", "os"}  # os: the host's memory (checks.py)


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "filterviz":
            names |= {f"filterviz.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_numerical_core_imports_no_io():
    for module in sorted(CORE):
        for name in imported_modules(PACKAGE / f"{module}.py"):
            top = name.split(".")[0]
            if top == "filterviz":
                assert name.split(".")[1] in CORE, f"{module}.py imports {name}, which is not core"
            else:
                assert top in ALLOWED_OUTSIDE, f"{module}.py imports {name}"


def test_the_public_api_is_small_and_every_name_exists():
    assert len(filterviz.__all__) <= 55
    assert all(hasattr(filterviz, name) for name in filterviz.__all__)
    # Internals stay internal: the engine's pieces are reached through their modules.
    for name in ("render_batch", "render_one", "filter_keys", "init_params", "forward", "CONV_LAYERS"):
        assert name not in filterviz.__all__
