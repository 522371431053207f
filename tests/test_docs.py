"""The documentation site: every public name has a reference entry, every page is in the navigation, and
the README stays a front door. (`mkdocs build --strict` itself runs in .ci/run; the guides' code runs in
test_everyday.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import filterviz

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def test_every_public_name_has_a_reference_entry():
    documented = set()
    for page in (DOCS / "reference").glob("*.md"):
        documented |= set(re.findall(r"^::: filterviz\.(\w+)$", page.read_text(), flags=re.M))
    assert documented == set(filterviz.__all__)


def test_every_page_is_in_the_navigation_and_every_link_in_it_exists():
    navigation = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s+([\w/-]+\.md)\s*$", navigation, flags=re.M))
    pages = {str(page.relative_to(DOCS)) for page in DOCS.rglob("*.md")}
    assert listed == pages


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert 'pip install -e ".[test]" && python -m pytest' in text  # the test command .ci/run calls
    for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.(?:md|png|jpg))\)", text):
        assert (ROOT / target).is_file(), f"README.md links to {target}, which is missing"
