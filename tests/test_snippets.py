"""Every Python example a user reads runs as written: the README's, the cache docs', and those
in module docstrings. And the README's test command is what CI runs, with a summary line.

The examples are read from the files at test time and run in a scratch folder where the names
they use exist: a small Wikipedia-style dump (`dump.txt.gz`), a cache (`caches/wiki-minilm`), a
trained student (`runs/sra-minilm`), a GLUE folder (`glue/`), an own task (`data/tickets/`).
The one substitution is the teacher: the default (packaged MiniLM) is swapped for a tiny random
BERT, through TEACHERS below.
A path an example writes (`out=...`) is removed before it runs, so it starts from nothing.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from tests.conftest import REPO, WORDS, distil_tiny_student, embed_any, write_glue

DOCS = ["README.md", "docs/cache.md", "docs/cli.md", "docs/deploy.md", "docs/tasks.md"]
PACKAGES = ["pipeline", "student", "cache"]


# ---------------------------------------------------------------------------- finding examples


def markdown_examples(path: Path) -> list[tuple[str, str]]:
    text = path.read_text()
    out = []
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        line = text[: m.start()].count("\n") + 2
        out.append((f"{path.relative_to(REPO)}:{line}", m.group(1)))
    return out


def docstring_examples(path: Path) -> list[tuple[str, str]]:
    """Indented blocks of a module docstring that are Python: those starting with an import or
    `>>>`, and those that parse as Python and either follow a `::` line or import something
    (a file listing after `::` does not parse: it is not code)."""
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree, clean=True)
    if not doc:
        return []
    first_line = tree.body[0].lineno
    lines = doc.splitlines()
    out, i = [], 0
    while i < len(lines):
        if not (lines[i].startswith("    ") and lines[i].strip()):
            i += 1
            continue
        start = i
        while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
            i += 1
        code = textwrap.dedent("\n".join(lines[start:i])).strip("\n") + "\n"
        where = f"{path.relative_to(REPO)}:{first_line + start}"
        if code.startswith(("from ", "import ", ">>> ")):
            out.append((where, code))  # code for sure: a syntax error in it must fail
            continue
        try:
            parsed = ast.parse(code)
        except SyntaxError:
            continue  # a file listing or a table, not code
        before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        imports = any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(parsed))
        if imports or before.rstrip().endswith("::"):
            out.append((where, code))
    return out


def all_examples() -> list[tuple[str, str]]:
    found = [e for doc in DOCS for e in markdown_examples(REPO / doc)]
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found += docstring_examples(path)
    return found


EXAMPLES = all_examples()


def test_examples_are_found() -> None:
    """The finder itself: it must see the examples we know of, or the test below proves nothing."""
    names = {name.split(":")[0] for name, _ in EXAMPLES}
    assert {
        "README.md",
        "pipeline/__init__.py",
        "student/__init__.py",
        "cache/__init__.py",
    } <= names
    assert "pipeline/tasks/corpus.py" in names and "docs/cache.md" in names
    assert not [n for n in names if n == "student/encoder.py"]  # a file listing is not code


# ---------------------------------------------------------------------------- a world to run in


def write_dump(path: Path, articles: int = 40, per_article: int = 30) -> Path:
    """A WikiExtractor-style dump (gzip) of `articles` x `per_article` distinct sentences."""
    import gzip
    import random

    rng = random.Random(0)
    lines = []
    for a in range(articles):
        lines.append(f'<doc id="{a}" url="https://x/{a}" title="Article {a}">')
        lines.append(f"Article {a}")
        lines.append("")
        for s in range(per_article):
            words = [rng.choice(WORDS) for _ in range(rng.randint(6, 20))]
            lines.append(" ".join(words).capitalize() + f" number {a} {s}.")
        lines.append("</doc>")
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    """The names the examples use; the student is the shared tiny one (conftest)."""
    import torch

    root = tmp_path_factory.mktemp("world")
    write_dump(root / "dump.txt.gz")
    write_glue(root / "glue", n_train=60, n_dev=20)
    write_tickets(root / "data" / "tickets")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = distil_tiny_student(tmp_path_factory.mktemp("student"), tiny_bert, steps=3)
    finally:
        torch.set_num_threads(threads)
    (root / "caches").mkdir()
    shutil.copytree(open_cache_path(run), root / "caches" / "wiki-minilm")
    shutil.copytree(run, root / "runs" / "sra-minilm")
    fine_tuned_models(root, tiny_bert)
    return root


def fine_tuned_models(root: Path, teacher: Path) -> None:
    """`runs/tickets` and `runs/sst2` (the student fine-tuned on an own task and on GLUE), and
    the exports the README's Deploy section loads (`exports/...`)."""
    import torch

    from cache.options import configure
    from pipeline.export import ExportConfig, export
    from student.finetuning.config import FinetuneConfig
    from student.finetuning.loop import finetune

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, corpus in (
            ("tickets", f"task:{root / 'data' / 'tickets'}"),
            ("sst2", "glue:sst2"),
        ):
            cache = root / "caches" / f"{name}-minilm"
            embed_any(
                corpus=corpus,
                glue_dir=str(root / "glue"),
                out=cache,
                teacher=str(teacher),
                window=64,
                progress=False,
                dtype="fp32",
            )
            finetune(
                configure(
                    FinetuneConfig,
                    student=str(root / "runs" / "sra-minilm"),
                    cache=cache,
                    out=root / "runs" / name,
                    epochs=1,
                    batch_size=16,
                    bf16=False,
                    progress=False,
                )
            )
        student = root / "runs" / "sra-minilm"
        for model, out, options in (
            (student, "sra-minilm-int8", {"int8": True}),
            (student, "sra-minilm-st", {"format": "sentence-transformers"}),
            (root / "runs" / "sst2", "sst2", {}),
        ):
            export(configure(ExportConfig, model=model, out=root / "exports" / out, **options))
    finally:
        torch.set_num_threads(threads)


def write_tickets(folder: Path) -> None:
    """An own task (`task:data/tickets`): train and dev files, a `label` and a `queue` column."""
    import json
    import random

    rng = random.Random(0)
    folder.mkdir(parents=True)
    for split, n in (("train", 60), ("dev", 20)):
        rows = []
        for i in range(n):
            colour = rng.choice(["red", "blue"])
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))] + [colour, str(i)]
            rows.append({"text": " ".join(words), "label": colour, "queue": f"q-{colour}"})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def open_cache_path(run: Path) -> Path:
    """The cache a run was trained from: the one folder beside it that holds a manifest."""
    return next(p for p in run.parent.iterdir() if (p / "manifest.json").exists())


def outputs(code: str) -> list[str]:
    """Paths an example writes: its `out=` arguments."""
    return re.findall(r"""\bout=(?:Path\()?["']([^"']+)["']""", code)


@pytest.mark.slow
@pytest.mark.parametrize(("where", "code"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_example_runs_as_written(
    where: str,
    code: str,
    world: Path,
    tiny_bert: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    import pipeline.teacher

    # The one substitution: the default teacher is the tiny BERT, not the packaged MiniLM.
    TEACHERS = {None: str(tiny_bert)}  # noqa: N806
    real = pipeline.teacher.resolve_teacher
    monkeypatch.setattr(
        pipeline.teacher, "resolve_teacher", lambda name: TEACHERS.get(name) or real(name)
    )
    here = tmp_path / "here"
    shutil.copytree(world, here)
    for written in outputs(code):
        shutil.rmtree(here / written, ignore_errors=True)
    monkeypatch.chdir(here)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # A module of its own, as a user's script would be (dataclasses look their module up), and
    # compiled without this file's `from __future__` flags.
    module = types.ModuleType("__example__")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    try:
        exec(compile(code, where, "exec", dont_inherit=True), module.__dict__)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- the test command


def readme_test_command() -> str:
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in (REPO / "README.md").read_text(), "the last line of .ci/run must be in the README"
    return ci


def test_ci_runs_the_readme_test_command() -> None:
    ci = readme_test_command()
    assert "pip install -q torch==2.13.0 && " in ci and ci.endswith("python -m pytest -q")


def test_the_readme_test_command_prints_a_summary_line(tmp_path: Path) -> None:
    """`-q` on the command line on top of `-q` in the config is `-qq`: no summary at all."""
    words = shlex.split(readme_test_command().rsplit("&&", 1)[1])
    pytest_args = words[words.index("pytest") + 1 :]
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *pytest_args,
            "-p",
            "no:cacheprovider",
            "-c",
            str(REPO / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTEST_ADDOPTS": ""},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout, proc.stdout
