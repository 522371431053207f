"""The shape of the package: folders in layers, a pure numerical core, no import circles, a small API."""

from __future__ import annotations

import ast
from pathlib import Path

import filterviz

PACKAGE = Path(filterviz.__file__).resolve().parent
LAYERS = {
    "errors": 0,
    "deprecation": 1,
    "core": 1,
    "io": 2,
    "progress": 2,
    "runtime": 2,
    "sharding": 2,
    "networks": 3,
    "draw": 4,
    "jobs": 5,
    "sweeps": 6,
    "dataset_examples": 7,
    "activation_atlases": 7,
    "concept_atlases": 7,
    "cli": 8,
    "__init__": 9,
    "__main__": 9,
}
"""Each folder (or top-level module) may import only folders of a lower layer, and itself. Above the core
and the edges (``io``, ``networks``), each feature has a folder of its own: ``draw``, ``sweeps``,
``dataset_examples``, ``activation_atlases``, ``concept_atlases``; ``jobs`` is what the folder-writing
features share."""
PURE_FEATURE_MODULES = {"filterviz.activation_atlases.cells"}
"""Modules of a feature folder that belong to the numerical core's rules: arrays in, arrays out."""
CORE_MAY_IMPORT = {"jax", "numpy", "optax", "flax", "math", "numbers", "dataclasses", "functools", "typing"}
CORE_MAY_IMPORT |= {"collections", "__future__", "difflib", "os"}  # os: the host's memory (checks.py)
CORE_MAY_IMPORT |= {"hashlib"}  # a spectrum known by its content (parameterizations.py); no I/O
CORE_MAY_IMPORT |= {"scipy"}  # Hungarian matching of two dictionaries (dictionaries.py); no I/O
CORE_MAY_IMPORT |= {"contextlib"}  # the matmul-precision context's type (checks.py); no I/O
LONGEST_FILE = 450


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function: filterviz's by module name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:  # `from filterviz.core import methods` imports a module
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if submodule in MODULES else node.module)
    return names


def folder(module: str) -> str:
    """``filterviz.core.engine``: ``core``; ``filterviz``: ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_sits_in_a_known_layer():
    assert {folder(module) for module in MODULES} <= set(LAYERS)


def test_folders_import_only_lower_layers():
    for module, path in MODULES.items():
        for imported in imports(path):
            if imported.split(".")[0] != "filterviz" or folder(imported) == folder(module):
                continue
            assert LAYERS[folder(imported)] < LAYERS[folder(module)], f"{module} imports {imported}"


def test_the_numerical_core_imports_no_io():
    for module, path in MODULES.items():
        if folder(module) != "core" and module not in PURE_FEATURE_MODULES:
            continue
        for imported in imports(path):
            top = imported.split(".")[0]
            if top == "filterviz":
                assert folder(imported) in {"core", "errors"}, f"{module} imports {imported}"
            else:
                assert top in CORE_MAY_IMPORT, f"{module} imports {imported}"


def test_no_import_circles():
    graph = {
        module: {name for name in imports(path) if name in MODULES and name != module}
        for module, path in MODULES.items()
    }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import circle: " + " -> ".join((*path[path.index(module) :], module))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_files_are_short():
    root = PACKAGE.parents[1]
    carried = root / "bench" / "gpu" / "site"  # others' packages bench/gpu/carry_site.py copies there
    bench = [path for path in (root / "bench").rglob("*.py") if carried not in path.parents]
    sources = [*PACKAGE.rglob("*.py"), *(root / "tests").glob("*.py"), *bench]
    for path in sources:
        lines = len(path.read_text().splitlines())
        assert lines <= LONGEST_FILE, f"{path.relative_to(root)} has {lines} lines"


def test_the_public_api_is_small_and_every_name_exists():
    assert len(filterviz.__all__) == len(set(filterviz.__all__)) <= 40
    assert all(hasattr(filterviz, name) for name in filterviz.__all__)
    # Internals stay internal: the engine's pieces are reached through their modules.
    for name in ("render_batch", "render_one", "filter_keys", "init_params", "forward", "CONV_LAYERS"):
        assert name not in filterviz.__all__
    assert filterviz.core.engine.render_one and filterviz.core.methods.Fourier
