"""`python -m pipeline.tasks.convert`: TREC, MR, SUBJ and SICK into task folders."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cache.errors import SraError
from pipeline.tasks.convert import convert
from pipeline.tasks.corpus import load_task_corpus
from tests.conftest import REPO, SHARED_DATA

TASKS_DATA = SHARED_DATA / "tasks"


def labels(folder: Path, split: str) -> Counter[str]:
    lines = (folder / f"{split}.tsv").read_text().splitlines()
    return Counter(line.split("\t")[-1] for line in lines[1:])


def test_trec_coarse_labels_dev_carved_test_kept(tmp_path: Path) -> None:
    src = tmp_path / "TREC"
    src.mkdir()
    classes = ["DESC:manner", "HUM:ind", "LOC:city", "NUM:date"]
    (src / "train_5500.label").write_text(
        "".join(f"{classes[i % 4]} What is question {i} ?\n" for i in range(80))
    )
    (src / "TREC_10.label").write_text("NUM:dist How far is it ?\nHUM:desc Who was he ?\n")
    counts = convert("trec", src, tmp_path / "trec")
    assert counts == {"train": 72, "dev": 8, "test": 2}
    assert labels(tmp_path / "trec", "dev") == Counter({"DESC": 2, "HUM": 2, "LOC": 2, "NUM": 2})
    first = (tmp_path / "trec" / "test.tsv").read_text().splitlines()
    assert first == ["text\tlabel", "How far is it ?\tNUM", "Who was he ?\tHUM"]


def test_mr_three_stratified_splits_and_sick_pairs(tmp_path: Path) -> None:
    src = tmp_path / "MR"
    src.mkdir()
    (src / "rt-polarity.pos").write_text("".join(f"good film {i} \n" for i in range(50)))
    (src / "rt-polarity.neg").write_text("".join(f"bad film {i} \n" for i in range(50)))
    assert convert("mr", src, tmp_path / "mr") == {"train": 80, "dev": 10, "test": 10}
    for split in ("dev", "test"):
        assert labels(tmp_path / "mr", split) == Counter({"negative": 5, "positive": 5})
    assert "good film 0\tpositive" in (tmp_path / "mr" / "train.tsv").read_text().splitlines()
    sick = tmp_path / "SICK"
    sick.mkdir()
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
    for name, n in (("SICK_train.txt", 12), ("SICK_trial.txt", 3)):
        rows = [f'{i}\tA "dog" runs {i}\tA dog sat\t{1 + i % 4}.5\tNEUTRAL\n' for i in range(n)]
        (sick / name).write_text(header + "".join(rows))
    convert("sick-r", sick, tmp_path / "sick-r")
    corpus = load_task_corpus(f"task:{tmp_path / 'sick-r'}")
    assert corpus.task.is_regression and corpus.task.pair and corpus.task.score_range == (1.5, 4.5)
    assert corpus.examples["train"][0].text_a == 'A "dog" runs 0'


def test_convert_refuses_and_writes_nothing_half(tmp_path: Path) -> None:
    with pytest.raises(SraError, match="has no rt-polarity.neg"):
        (tmp_path / "MR").mkdir()
        convert("mr", tmp_path / "MR", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    with pytest.raises(SraError, match="not empty"):
        convert("mr", tmp_path / "MR", tmp_path / "out")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.tasks.convert",
            "subj",
            str(tmp_path),
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert (
        proc.returncode == 1 and proc.stderr.startswith("error: ") and "has no subj" in proc.stderr
    )


@pytest.mark.skipif(not TASKS_DATA.is_dir(), reason=f"shared task data not at {TASKS_DATA}")
@pytest.mark.parametrize(
    ("dataset", "folder", "counts", "classes"),
    [
        ("trec", "TREC", {"train": 4907, "dev": 545, "test": 500}, 6),
        ("mr", "MR", {"train": 8530, "dev": 1066, "test": 1066}, 2),
        ("subj", "SUBJ", {"train": 8000, "dev": 1000, "test": 1000}, 2),
        ("sick-e", "SICK", {"train": 4500, "dev": 500}, 3),
        ("sick-r", "SICK", {"train": 4500, "dev": 500}, None),
    ],
)
def test_the_real_datasets(
    tmp_path: Path, dataset: str, folder: str, counts: dict, classes: int | None
) -> None:
    out = tmp_path / dataset
    assert convert(dataset, TASKS_DATA / folder, out) == counts
    corpus = load_task_corpus(f"task:{out}")
    assert {s: len(e) for s, e in corpus.examples.items()} == counts
    assert (corpus.task.labels is None and classes is None) or len(corpus.task.labels) == classes
    if dataset == "trec":  # the README's test counts, per coarse class
        assert labels(out, "test") == Counter(
            {"ABBR": 9, "DESC": 138, "ENTY": 94, "HUM": 65, "LOC": 81, "NUM": 113}
        )
    if dataset == "sick-e":
        assert labels(out, "train") == Counter(
            {"neutral": 2536, "entailment": 1299, "contradiction": 665}
        )
