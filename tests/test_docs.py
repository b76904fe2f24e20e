"""The docs name only code that exists: every `path.py` in README.md and docs/*.md (not the
dated docs/experiments/) is a file, and every `path.py::name` is defined in it."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
REFERENCE = re.compile(r"\b((?:pipeline|student|cache|tests)/[\w/]*\w\.py)(?:::([\w.]+))?")


def references() -> list[tuple[str, str, str | None]]:
    found = []
    for doc in DOCS:
        for m in REFERENCE.finditer(doc.read_text()):
            found.append((doc.name, m.group(1), m.group(2)))
    return found


def test_references_are_found() -> None:
    # The finder itself: architecture.md names functions, or the test below proves nothing.
    assert any(doc == "architecture.md" and name for doc, _, name in references())


@pytest.mark.parametrize("doc,path,name", references())
def test_named_code_exists(doc: str, path: str, name: str | None) -> None:
    source = REPO / path
    assert source.is_file(), f"{doc} names {path}, which does not exist"
    if name is not None:
        text = source.read_text()
        for part in name.split("."):
            assert re.search(rf"^\s*(?:async def|def|class) {part}\b", text, re.M), (
                f"{doc} names {path}::{name}, but {part} is not defined there"
            )
