"""One word for one thing: every public function's parameters are words of docs/vocabulary.md's table,
none is a retired synonym, method settings arrive one way, and the retired names still work, warning."""

from __future__ import annotations

import dataclasses
import inspect
import re
import warnings
from pathlib import Path

import pytest

import filterviz
from filterviz.core.methods import Method

DOC = Path(__file__).resolve().parents[1] / "docs" / "vocabulary.md"


def _table(heading: str | None) -> list[list[str]]:
    text = DOC.read_text()
    if heading is not None:
        text = text.split(heading, 1)[1]
    rows = []
    for line in text.splitlines():
        if line.startswith("| `") or line.startswith("| `filterviz"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows and not line.startswith("|"):
            break
    return rows


def _words(cell: str) -> set[str]:
    return set(re.findall(r"`([A-Za-z_][A-Za-z_0-9.()]*)`", cell))


WORDS = set().union(*(_words(row[0]) for row in _table(None)))
RETIRED = {word for row in _table("## Retired synonyms") for word in _words(row[0])}
SYNONYMS = {"folder", "k", "n", "icon_size", "chunk", "image", "photos", "output", "out_dir", "dir"}
"""Words that must not name a parameter: each is retired, or would be a second word for a table word."""


def _public_functions() -> dict[str, inspect.Signature]:
    found = {}
    for name in filterviz.__all__:
        value = getattr(filterviz, name)
        if inspect.isfunction(value):
            found[name] = inspect.signature(value)
    return found


def test_every_public_parameter_is_a_word_of_the_table_and_none_is_a_synonym():
    assert "out" in WORDS and "image_batch_size" in WORDS and "folder" in RETIRED
    functions = _public_functions()
    assert len(functions) > 25
    for name, signature in functions.items():
        for parameter in signature.parameters:
            assert parameter not in SYNONYMS, f"{name}({parameter}=...) is a retired synonym"
            assert parameter in WORDS, f"{name}({parameter}=...) is not in docs/vocabulary.md"


def test_method_settings_arrive_one_way():
    fields = {field.name for field in dataclasses.fields(Method)} | {"step_size"}
    for name, signature in _public_functions().items():
        takes_method = "method" in signature.parameters or name in {"ascend", "layer_image", "show_filters"}
        if not takes_method:
            continue
        kinds = {parameter.kind for parameter in signature.parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD in kinds, f"{name} takes no **settings"
        assert not fields & set(signature.parameters), f"{name} names a method setting outside **settings"


def test_network_and_method_are_keywords_with_one_default():
    for name, signature in _public_functions().items():
        for word, default in (("network", "vgg16"),):
            if word in signature.parameters:
                parameter = signature.parameters[word]
                assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
                assert parameter.default == default, name


def test_retired_names_still_work_and_warn(tmp_path):
    with (
        pytest.warns(DeprecationWarning, match="is now top_filters\\(out=...\\)"),
        pytest.raises(filterviz.SweepError),
    ):
        filterviz.top_filters(folder=tmp_path)
    with pytest.raises(filterviz.SettingError, match="give out= alone"):
        filterviz.top_filters(folder=tmp_path, out=tmp_path)
    with pytest.warns(DeprecationWarning, match="filterviz.network\\(name\\).summary"):
        table = filterviz.summary(32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert table == filterviz.network("vgg16").summary(32, 32)
    with pytest.warns(DeprecationWarning, match="top_filters"):
        assert filterviz.read_manifest is not None
    with pytest.raises(AttributeError):
        filterviz.no_such_name  # noqa: B018


def test_every_retired_keyword_is_in_the_table():
    for name in filterviz.__all__:
        renamed = getattr(getattr(filterviz, name), "__renamed__", {})
        for old, new in renamed.items():
            assert old in RETIRED and new in WORDS, f"{name}: {old} -> {new} is not in docs/vocabulary.md"
