"""Own tasks through stage one: task caches like GLUE's, logits and augmentation for every
problem, old task caches still read, and GLUE caches unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cache import open_cache
from cache.errors import CacheError, SraError
from cache.manifest import MANIFEST_NAME, read_manifest, write_manifest
from cache.task_data import (
    AUGMENTED,
    TASK_NAME,
    example_labels,
    read_examples,
    read_logits,
    read_task,
)
from pipeline.tasks.augment import AugmentConfig
from pipeline.tasks.corpus import load_task_corpus
from tests.conftest import embed_any, write_glue, write_table

BASE = dict(window=32, progress=False, dtype="fp32")


def tickets(root: Path) -> Path:
    """A multi-label task in JSONL: train and dev, and an unlabelled test file."""
    tags = [["bug"], ["ui", "bug"], ["docs"], ["ui"], ["bug", "docs"], []]
    rows = [
        {"text": f"the {w} cat sat on ticket {i}", "label": tags[i % 6]}
        for i, w in enumerate(["red", "blue", "green", "small", "large"] * 6)
    ]
    write_table(root / "train.jsonl", rows)
    write_table(root / "dev.jsonl", rows[:6])
    write_table(root / "test.jsonl", [{"text": "a new ticket"}, {"text": "the red cat sat"}])
    return root


def scores(root: Path) -> Path:
    """A regression task on sentence pairs in CSV, without a dev file (one is carved)."""
    firsts, seconds = ["red", "blue", "fast"], ["slow", "red", "blue"]
    rows = [
        {
            "text": f"the {firsts[i % 3]} dog ran",
            "text_pair": f"a {seconds[i % 3]} dog sat",
            "label": f"{(i * 0.7) % 5:.2f}",
        }
        for i in range(30)
    ]
    write_table(root / "train.csv", rows)
    return root


def classifier_teacher(base: Path, out: Path, num_labels: int, problem: str, task: str) -> Path:
    """The tiny BERT with a (random, but saved: "trained") sequence-classification head."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(base, num_labels=num_labels, problem_type=problem)
    config.finetuning_task = task
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def test_an_own_task_cache_is_a_task_cache(tmp_path: Path, tiny_bert: Path) -> None:
    root = tickets(tmp_path / "tickets")
    out = tmp_path / "cache"
    manifest = embed_any(corpus=f"task:{root}", out=out, teacher=str(tiny_bert), **BASE)
    assert manifest.status == "complete"
    cache = open_cache(out)
    info = read_task(cache)
    assert info.task.name == "tickets" and info.task.problem == "multilabel"
    assert info.task.labels == ("bug", "docs", "ui") and not info.task.is_glue
    assert info.splits == {"train": 30, "dev": 6, "test": 2}
    assert info.columns == {"text": "text", "pair": None, "label": "label", "label_separator": None}
    assert json.loads((out / TASK_NAME).read_text())["format_version"] == 2
    # Each example points at its own text; labels are multi-hot rows, withheld ones -1.
    texts = {}
    for shard in range(len(cache.shards)):
        ids = cache.column_array(shard, "id").to_pylist()
        texts |= dict(zip(ids, cache.column_array(shard, "text").to_pylist(), strict=True))
    dev = read_examples(cache, "dev")
    assert texts[dev.column("sentence1_id")[1].as_py()] == "the blue cat sat on ticket 1"
    assert example_labels(dev, info.task)[:2].tolist() == [[1, 0, 0], [1, 0, 1]]
    assert example_labels(read_examples(cache, "test"), info.task).tolist() == [[-1] * 3] * 2
    # ... which stage two loads as [n, labels] arrays: labelled dev, withheld test
    from student.finetuning.data import load_examples

    dev_examples, test_examples = (load_examples(cache, s, pair=False) for s in ("dev", "test"))
    assert dev_examples.labels.shape == (6, 3) and dev_examples.labelled
    assert not test_examples.labelled
    # verify checks the task's side files by their sha256, and notes nothing about them.
    from cache.verify import verify_cache

    report = verify_cache(out)
    assert report.ok and not report.notes, report
    kept = (out / "examples-dev.arrow").read_bytes()
    (out / "examples-dev.arrow").write_bytes(b"edited")
    assert any("examples-dev.arrow fails its sha256" in p for p in verify_cache(out).problems)
    (out / "examples-dev.arrow").write_bytes(kept)
    # The fingerprint knows the data: an edited file is another cache.
    write_table(root / "test.jsonl", [{"text": "changed"}])
    with pytest.raises(SraError, match="another config|--overwrite"):
        embed_any(corpus=f"task:{root}", out=out, teacher=str(tiny_bert), **BASE)


@pytest.mark.slow
def test_logits_and_augmentation_for_regression_and_multilabel(
    tmp_path: Path, tiny_bert: Path
) -> None:
    root = scores(tmp_path / "scores")
    corpus = load_task_corpus(f"task:{root}")
    assert corpus.task.is_regression and corpus.task.pair and len(corpus.examples["dev"]) == 3
    teacher = classifier_teacher(tiny_bert, tmp_path / "t-reg", 1, "regression", "scores")
    out = tmp_path / "reg"
    embed_any(
        corpus=f"task:{root}",
        out=out,
        teacher=str(teacher),
        logits=True,
        augment=AugmentConfig(copies=2),
        **BASE,
    )
    cache = open_cache(out)
    info = read_task(cache)
    assert info.logits["num_labels"] == 1 and info.augmentation["modes"] == ["mask", "replace"]
    for split in ("train", "dev", AUGMENTED):
        assert read_logits(cache, split).shape == (info.splits[split], 1)
    augmented = example_labels(read_examples(cache, AUGMENTED), info.task)
    assert info.splits[AUGMENTED] > 0 and np.isnan(augmented).all()

    tags = tickets(tmp_path / "tickets")
    multi = classifier_teacher(
        tiny_bert, tmp_path / "t-ml", 3, "multi_label_classification", "tickets"
    )
    out = tmp_path / "ml"
    embed_any(
        corpus=f"task:{tags}",
        out=out,
        teacher=str(multi),
        logits=True,
        augment=AugmentConfig(copies=1),
        **BASE,
    )
    cache = open_cache(out)
    info = read_task(cache)
    assert read_logits(cache, "train").shape == (30, 3)
    assert read_logits(cache, "test").shape == (2, 3)
    assert info.augmentation["modes"] == ["mask", "replace", "ngram"]
    assert (example_labels(read_examples(cache, AUGMENTED), info.task) == -1).all()


@pytest.mark.slow
def test_a_teacher_for_another_label_set_is_refused_before_writing(
    tmp_path: Path, tiny_bert: Path
) -> None:
    root = tickets(tmp_path / "tickets")
    two = classifier_teacher(tiny_bert, tmp_path / "two", 2, "multi_label_classification", "")
    with pytest.raises(SraError, match="has 2 output labels but tickets has 3"):
        embed_any(corpus=f"task:{root}", out=tmp_path / "a", teacher=str(two), logits=True, **BASE)
    single = classifier_teacher(tiny_bert, tmp_path / "one", 3, "single_label_classification", "")
    with pytest.raises(SraError, match="fine-tuned for single_label_classification, but tickets"):
        embed_any(
            corpus=f"task:{root}", out=tmp_path / "b", teacher=str(single), logits=True, **BASE
        )
    other = classifier_teacher(tiny_bert, tmp_path / "oth", 3, "multi_label_classification", "x")
    with pytest.raises(SraError, match="fine-tuned on 'x', not tickets"):
        embed_any(
            corpus=f"task:{root}", out=tmp_path / "c", teacher=str(other), logits=True, **BASE
        )
    assert not any((tmp_path / d).exists() for d in "abc")


# ---------------------------------------------------------------------------- GLUE unchanged


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


# What main (e1a45c0, before own tasks) wrote for write_glue(n_train=30, n_dev=10): the
# sentences embedded, the fingerprinted source description, each examples file's schema and
# rows. The same sentences and description mean the same cache rows and fingerprint.
GLUE_BEFORE = {
    "sst2": ("30c73dbd1a19410f", "59915e695b251a5c", "c93b195a56837983", "46e51b4dfa2648d2"),
    "mrpc": ("f55f03f6a0a6fa61", "b6e1cf4438409bba", "20944e016c1f23dc", "4e3bc6cf235d75d4"),
    "stsb": ("f55f03f6a0a6fa61", "c2f280286b36a0f6", "b30d66657ab30eae", "c1adc50782d28d89"),
}


def test_glue_presets_give_the_task_caches_main_gave(tmp_path: Path) -> None:
    glue = write_glue(tmp_path / "glue", n_train=30, n_dev=10)
    for task, expected in GLUE_BEFORE.items():
        corpus = load_task_corpus(f"glue:{task}", glue)
        files = corpus.side_files()
        tables = [
            pa.ipc.open_file(pa.BufferReader(files[f"examples-{s}.arrow"])).read_all()
            for s in ("train", "dev")
        ]
        got = (
            _digest(corpus.sentences),
            _digest(corpus.describe()),
            *(_digest([str(t.schema), t.to_pydict()]) for t in tables),
        )
        assert got == expected, task


def test_format_1_glue_task_caches_still_load(tmp_path: Path, tiny_bert: Path) -> None:
    glue = write_glue(tmp_path / "glue", n_train=20, n_dev=6)
    out = tmp_path / "stsb"
    embed_any(corpus="glue:stsb", glue_dir=str(glue), out=out, teacher=str(tiny_bert), **BASE)
    # task.json as main wrote it (format 1), its checksum put back in the manifest.
    old = {
        "format": "sra-task-examples",
        "format_version": 1,
        "task": "stsb",
        "pair": True,
        "labels": None,
        "splits": {"train": 20, "dev": 6},
    }
    _replace_task_json(out, old)
    info = read_task(open_cache(out))
    assert info.task.name == "stsb" and info.task.score_range == (0.0, 5.0)
    assert info.splits == {"train": 20, "dev": 6} and info.columns is None
    assert read_examples(open_cache(out), "dev").num_rows == 6
    _replace_task_json(out, old | {"task": "sst2", "labels": ["a", "b"]})
    with pytest.raises(CacheError, match="lists labels"):
        read_task(open_cache(out))
    _replace_task_json(out, old | {"format_version": 3})
    with pytest.raises(CacheError, match="format_version 3, this code reads 1, 2"):
        read_task(open_cache(out))


def _replace_task_json(cache: Path, info: dict) -> None:
    data = (json.dumps(info, indent=2) + "\n").encode()
    (cache / TASK_NAME).write_bytes(data)
    manifest = read_manifest(cache / MANIFEST_NAME)
    manifest.files[TASK_NAME] = hashlib.sha256(data).hexdigest()
    write_manifest(cache / MANIFEST_NAME, manifest)


def test_the_embed_command_takes_the_task_options(tmp_path: Path) -> None:
    from tests.conftest import cli, error_line

    help_text = cli("embed", "--help").stdout
    for flag in (
        "--text-column",
        "--pair-column",
        "--label-column",
        "--problem",
        "--label-separator",
        "--dev-fraction",
        "--train",
        "--task-name",
    ):
        assert flag in help_text, flag
    write_table(tmp_path / "t" / "train.csv", [{"sentence": "x", "label": "a"}])
    proc = cli(
        "embed", "--corpus", f"task:{tmp_path / 't'}", "--out", str(tmp_path / "o"), check=False
    )
    assert "has no column 'text' (it has: sentence, label); pass --text-column" in error_line(proc)
    assert not (tmp_path / "o").exists()
