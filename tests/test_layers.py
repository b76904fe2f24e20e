"""The layering rules of docs/architecture.md, read from the source: `cache/` and `student/`
never import `pipeline/` or `transformers` (stage two runs from a cache alone), and `cache/`
never imports `student/`. Lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

FORBIDDEN = {
    "cache": ("pipeline", "student", "transformers", "sentence_transformers"),
    "student": ("pipeline", "transformers", "sentence_transformers"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_downwards(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no modules found in {package}/"
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in files
        for line, name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not bad, "\n".join(bad)


def test_the_reader_sees_lazy_imports(tmp_path: Path) -> None:
    """The check itself: an import inside a function is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipeline.cli import app\n    import transformers\n")
    assert [n for _, n in imported_modules(module)] == ["pipeline.cli", "transformers"]
