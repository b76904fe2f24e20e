"""The README's quick start is what CI runs."""

from __future__ import annotations

from tests.conftest import REPO


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = (REPO / "README.md").read_text()
    assert ci in readme, "the last line of .ci/run must be the README's test command"
    assert "pip install -q torch==2.13.0 && " in ci and ci.endswith("python -m pytest -q")
