"""`pipeline embed --corpus glue:TASK`: checks before the teacher loads, resume, the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache import open_cache
from cache.errors import SraError
from cache.task_data import read_examples, read_task
from pipeline.tasks.corpus import load_task_corpus
from tests.conftest import embed_any, write_glue


def cfg(out: Path, glue: Path, teacher: Path, **kw) -> dict:  # type: ignore[no-untyped-def]
    base = dict(window=32, progress=False, dtype="fp32", teacher=str(teacher))
    return dict(corpus="glue:sst2", glue_dir=str(glue), out=out, **(base | kw))


def test_unique_texts_unsplit_and_every_split(tmp_path):
    glue = write_glue(tmp_path / "glue", n_train=30, n_dev=10)
    corpus = load_task_corpus("glue:mrpc", glue)
    assert list(corpus.examples) == ["train", "dev"]  # no test.tsv in the folder
    texts = {e.text_a for s in corpus.examples.values() for e in s} | {
        e.text_b for s in corpus.examples.values() for e in s
    }
    assert sorted(corpus.sentences) == sorted(texts)  # each distinct text once, as written


def test_bad_task_input_fails_before_the_teacher(tmp_path, monkeypatch):
    glue = write_glue(tmp_path / "glue", n_train=10, n_dev=5)

    def no_teacher(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("the teacher must not load on bad input")

    monkeypatch.setattr("pipeline.teacher.Teacher", no_teacher)
    with pytest.raises(SraError, match="unknown GLUE task"):
        embed_any(corpus="glue:nope", out=tmp_path / "a", glue_dir=str(glue))
    (glue / "SST-2" / "dev.tsv").unlink()
    with pytest.raises(SraError, match="dev.tsv"):
        embed_any(corpus="glue:sst2", out=tmp_path / "b", glue_dir=str(glue))
    with pytest.raises(SraError, match="--limit"):
        embed_any(corpus="glue:mrpc", out=tmp_path / "c", glue_dir=str(glue), limit=5)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_task_files_resume_and_tampering(tmp_path, tiny_bert, monkeypatch):
    glue = write_glue(tmp_path / "glue", n_train=40, n_dev=10)
    out = tmp_path / "sst2"
    # Killed after the sentences, before the task files: the rerun only writes those.
    monkeypatch.setattr("pipeline.tasks.corpus.write_task_files", _die)
    with pytest.raises(KeyboardInterrupt):
        embed_any(**cfg(out, glue, tiny_bert))
    monkeypatch.undo()
    assert not (out / "task.json").exists()
    manifest = embed_any(**cfg(out, glue, tiny_bert))
    assert manifest.status == "complete" and {"task.json", "examples-dev.arrow"} <= set(
        manifest.files
    )
    cache = open_cache(out)
    assert read_task(cache).splits == {"train": 40, "dev": 10}
    assert read_examples(cache, "train").num_rows == 40
    info = json.loads((out / "task.json").read_text())
    info["labels"] = ["a", "b"]
    (out / "task.json").write_text(json.dumps(info))
    with pytest.raises(Exception, match="checksum"):
        read_task(open_cache(out))


def _die(*a, **k):  # type: ignore[no-untyped-def]
    raise KeyboardInterrupt
