"""Own task data (`--corpus task:...`): formats, problems, label order, carving, bad input.

No teacher here: everything is read and checked before one would load. Task folders are
written by the tests in every format.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from cache.errors import SraError
from cache.task_data import example_labels, examples_bytes
from cache.tasks import (
    MULTILABEL,
    REGRESSION,
    TASKS,
    TaskSpec,
    get_task,
    label_order,
    own_task,
    same_task,
)
from pipeline.tasks.corpus import load_task_corpus
from pipeline.tasks.define import carve, input_texts, score_bins
from pipeline.tasks.own import TaskDataOptions
from pipeline.tasks.tables import read_table
from tests.conftest import write_table

FORMATS = ["csv", "tsv", "jsonl", "parquet", "csv.gz", "tsv.gz", "jsonl.gz", "parquet.gz"]


def sentiment(n: int, seed: int = 0, pair: bool = False) -> list[dict[str, Any]]:
    """n rows of three string classes, in a shuffled order."""
    rng = random.Random(seed)
    labels = ["pos", "neg", "meh"]
    rows = []
    for i in range(n):
        row = {"text": f"sentence {i} is {rng.choice(['red', 'blue'])}", "label": labels[i % 3]}
        if pair:
            row["text_pair"] = f"and its partner {i}"
        rows.append(row)
    rng.shuffle(rows)
    return rows


def folder(root: Path, splits: dict[str, list[dict[str, Any]]], ext: str = "csv") -> Path:
    for split, rows in splits.items():
        write_table(root / f"{split}.{ext}", rows)
    return root


def load(corpus: str, **options: Any):  # type: ignore[no-untyped-def]
    return load_task_corpus(corpus, data=TaskDataOptions(**options))


def labels_of(corpus, split: str) -> list[Any]:  # type: ignore[no-untyped-def]
    return [e.label for e in corpus.examples[split]]


# ---------------------------------------------------------------------------- definitions


def test_glue_tasks_are_presets_of_the_one_definition() -> None:
    for task in TASKS.values():
        task.check()
        assert task.is_glue and TaskSpec.from_dict(task.to_dict()) == task
    stsb = get_task("stsb")
    assert stsb.problem == REGRESSION and stsb.score_range == (0.0, 5.0)
    assert stsb.to_unit(4.0) == 4.0 / 5.0 and stsb.from_unit(0.5) == 0.5 * 5.0  # as before
    assert get_task("cola").problem == "classification" and get_task("cola").score_range is None


def test_own_task_metrics_by_problem_and_round_trip() -> None:
    binary = own_task("spam", "classification", False, ("ham", "spam"))
    assert binary.metrics == ("accuracy", "macro_f1", "mcc", "f1")
    assert binary.main_metric == "accuracy" and not binary.is_glue
    assert own_task("q", "classification", False, "abc").metrics == ("accuracy", "macro_f1", "mcc")
    tags = own_task("tags", MULTILABEL, False, ("a", "b", "c"))
    assert (tags.metrics, tags.num_labels) == (("micro_f1", "macro_f1"), 3)
    score = own_task("s", REGRESSION, True, None, (1.0, 5.0))
    assert (score.metrics, score.num_labels, score.to_unit(3.0)) == (
        ("pearson", "spearman"),
        1,
        0.5,
    )
    for task in (binary, tags, score):
        assert TaskSpec.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    with pytest.raises(ValueError, match="problem"):
        TaskSpec.from_dict(binary.to_dict() | {"problem": "ranking"})
    with pytest.raises(ValueError, match="score range"):
        own_task("s", REGRESSION, True, None, (2.0, 2.0))
    # Own task names match by name; GLUE presets by any of their spellings.
    assert same_task("Spam", binary) and not same_task("sst2", binary)
    assert same_task("SST-2", get_task("sst2"))


def test_label_order_is_numeric_for_numbers_else_sorted_strings() -> None:
    assert label_order([10, 2, 1.0, 2]) == ("1", "2", "10")
    assert label_order(["pos", "neg", "Meh", "neg"]) == ("Meh", "neg", "pos")
    assert label_order([2.5, 1, 10]) == ("1", "2.5", "10")


# ---------------------------------------------------------------------------- formats


@pytest.mark.parametrize("ext", FORMATS)
def test_every_format_gives_the_same_task(tmp_path: Path, ext: str) -> None:
    rows = {"train": sentiment(30), "dev": sentiment(9, seed=1)}
    expected = load(f"task:{folder(tmp_path / 'csv' / 'reviews', rows)}")
    corpus = load(f"task:{folder(tmp_path / ext.replace('.', '-') / 'reviews', rows, ext)}")
    assert corpus.task == expected.task
    assert corpus.task.labels == ("meh", "neg", "pos")
    assert corpus.examples == expected.examples
    assert corpus.examples["train"][0].idx == 0 and corpus.sentences == expected.sentences


def test_csv_quoting_and_tsv_raw_quotes(tmp_path: Path) -> None:
    texts = ['a, quoted "word"', "two\nlines", "plain"]
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(texts * 2)]
    corpus = load("task", train=str(write_table(tmp_path / "t" / "train.csv", rows)))
    assert set(texts) == {e.text_a for s in corpus.examples.values() for e in s}
    # TSV: no quoting, a quote is a character (GLUE's convention), kept as written.
    tsv = tmp_path / "q" / "train.tsv"
    tsv.parent.mkdir()
    tsv.write_text('text\tlabel\n"unclosed quote\ta\nplain "mid" text\tb\nx\ta\ny\tb\n')
    corpus = load(f"task:{tsv.parent}")
    assert {e.text_a for s in corpus.examples.values() for e in s} >= {'"unclosed quote'}


def test_a_csv_error_names_the_line_after_a_multiline_field(tmp_path: Path) -> None:
    path = tmp_path / "t" / "train.csv"
    path.parent.mkdir()
    path.write_text('text,label\n"one\ntwo",a\nthree,b,extra\n')
    with pytest.raises(SraError, match=r"train\.csv:4: row has 3 comma-separated fields"):
        load(f"task:{path.parent}")


# ---------------------------------------------------------------------------- problems


def test_pairs_and_renamed_columns(tmp_path: Path) -> None:
    rows = [
        {"q": f"question {i}", "a": f"answer {i}", "y": "yes" if i % 2 else "no", "extra": i}
        for i in range(20)
    ]
    root = folder(tmp_path / "qa", {"train": rows, "dev": rows[:6]}, "jsonl")
    corpus = load(f"task:{root}", text_column="q", pair_column="a", label_column="y")
    assert corpus.task.pair and corpus.task.labels == ("no", "yes")
    assert corpus.examples["dev"][1].text_b == "answer 1" and corpus.examples["dev"][1].label == 1
    # text_pair is picked up without asking
    plain = [{"text": r["q"], "text_pair": r["a"], "label": r["y"]} for r in rows]
    assert load(f"task:{folder(tmp_path / 'qa2', {'train': plain}, 'csv')}").task.pair


def test_multilabel_from_lists_and_from_a_separator(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    tags = [["bug"], ["ui", "bug"], [], ["docs"], ["ui"], ["bug", "docs"]] * 4
    rows = [{"text": f"ticket {i}", "label": t} for i, t in enumerate(tags)]
    corpus = load(f"task:{folder(tmp_path / 'lists', {'train': rows, 'dev': rows[:6]}, 'jsonl')}")
    assert corpus.task.problem == MULTILABEL and corpus.task.labels == ("bug", "docs", "ui")
    assert labels_of(corpus, "dev") == [(0,), (0, 2), (), (1,), (2,), (0, 1)]
    assert "multilabel, inferred from label lists" in capsys.readouterr().err
    joined = [{"text": r["text"], "label": "|".join(r["label"])} for r in rows]
    root = folder(tmp_path / "joined", {"train": joined, "dev": joined[:6]}, "csv")
    again = load(f"task:{root}", label_separator="|", task_name="lists")
    assert "multilabel, inferred from --label-separator" in capsys.readouterr().err
    assert again.task == corpus.task and labels_of(again, "dev") == labels_of(corpus, "dev")
    # Stored as multi-hot rows; withheld rows (augmented, test) as -1.
    table = pa.ipc.open_file(
        pa.BufferReader(examples_bytes(corpus.task, [0, 1, 2], [(0, 2), (), None], [0, 1, 2], None))
    ).read_all()
    assert example_labels(table, corpus.task).tolist() == [[1, 0, 1], [0, 0, 0], [-1, -1, -1]]


def test_regression_inferred_and_printed_or_asked(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rows = [{"text": f"pair {i}", "label": round(1 + (i * 0.37) % 4, 2)} for i in range(30)]
    corpus = load(f"task:{folder(tmp_path / 'sts', {'train': rows, 'dev': rows[:5]})}")
    assert corpus.task.problem == REGRESSION and corpus.task.labels is None
    low, high = corpus.task.score_range
    assert (low, high) == (min(r["label"] for r in rows), max(r["label"] for r in rows))
    assert labels_of(corpus, "dev") == [r["label"] for r in rows[:5]]
    assert "regression, inferred: every label is a number, not all integers" in (
        capsys.readouterr().err
    )
    # Integer labels are classes unless asked otherwise.
    ints = [{"text": f"review {i}", "label": 1 + i % 5} for i in range(30)]
    root = folder(tmp_path / "stars", {"train": ints, "dev": ints[:5]})
    assert load(f"task:{root}").task.labels == ("1", "2", "3", "4", "5")
    assert "one of 5 integers" in capsys.readouterr().err
    asked = load(f"task:{root}", problem="regression")
    assert asked.task.problem == REGRESSION and asked.task.score_range == (1.0, 5.0)


def test_label_order_does_not_depend_on_file_order(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": str(v)} for i, v in enumerate([10, 2, 1, 2, 10, 1] * 3)]
    first = load(f"task:{folder(tmp_path / 'a', {'train': rows, 'dev': rows[:3]})}")
    shuffled = rows[::-1]
    second = load(f"task:{folder(tmp_path / 'b', {'train': shuffled, 'dev': rows[:3]})}")
    assert first.task.labels == second.task.labels == ("1", "2", "10")  # numeric order
    assert labels_of(first, "dev") == labels_of(second, "dev") == [2, 1, 0]


def test_mixed_labels_as_class_names_when_asked_and_booleans(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": v} for i, v in enumerate([1, "spam", 2.0, "spam"] * 3)]
    root = folder(tmp_path / "mixed", {"train": rows, "dev": rows[:4]}, "jsonl")
    with pytest.raises(SraError, match="labels mix numbers"):
        load(f"task:{root}")
    corpus = load(f"task:{root}", problem="classification")
    assert corpus.task.labels == ("1", "2", "spam")  # every label a name, sorted as strings
    assert labels_of(corpus, "dev") == [0, 2, 1, 2]
    flags = [{"text": f"t{i}", "label": i % 3 == 0} for i in range(12)]
    root = folder(tmp_path / "flags", {"train": flags, "dev": flags[:3]}, "jsonl")
    assert load(f"task:{root}").task.labels == ("false", "true")  # true: the positive class


def test_test_split_labelled_or_not(tmp_path: Path) -> None:
    train = sentiment(12)
    root = folder(tmp_path / "r", {"train": train, "dev": train[:3]})
    write_table(root / "test.csv", [{"text": "new one"}, {"text": "another"}])
    corpus = load(f"task:{root}")
    assert list(corpus.examples) == ["train", "dev", "test"]
    assert labels_of(corpus, "test") == [None, None]
    write_table(root / "test.csv", train[:2])
    assert None not in labels_of(load(f"task:{root}"), "test")


# ---------------------------------------------------------------------------- dev carving


def test_no_dev_split_carves_a_seeded_stratified_one(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rows = [{"text": f"t{i}", "label": "rare" if i % 10 == 0 else "common"} for i in range(100)]
    root = folder(tmp_path / "r", {"train": rows})
    corpus = load(f"task:{root}")
    dev = corpus.examples["dev"]
    assert len(dev) == 10 and len(corpus.examples["train"]) == 90
    assert sum(corpus.task.labels[e.label] == "rare" for e in dev) == 1  # stratified: 10% each
    assert "carved 10 of 100 training examples" in capsys.readouterr().err
    # idx stays the row in the train file; same seed, same split; another seed, another
    assert all(rows[e.idx]["text"] == e.text_a for e in dev)
    assert [e.idx for e in load(f"task:{root}").examples["dev"]] == [e.idx for e in dev]
    other = load(f"task:{root}", dev_seed=1, dev_fraction=0.2).examples["dev"]
    assert len(other) == 20 and [e.idx for e in other] != [e.idx for e in dev]


def test_carve_keeps_every_key_and_is_deterministic() -> None:
    keys = ["a"] * 50 + ["b"] * 7 + ["c"]  # "c" occurs once: it must stay
    kept, carved = carve(keys, 0.25, seed=3)
    assert sorted(kept + carved) == list(range(len(keys))) and len(carved) == round(58 * 0.25)
    assert "c" in {keys[i] for i in kept} and "c" not in {keys[i] for i in carved}
    assert carve(keys, 0.25, seed=3) == (kept, carved)
    assert score_bins([5.0, 1.0, 3.0, 2.0, 4.0], bins=5) == [4, 0, 2, 1, 3]


# ---------------------------------------------------------------------------- sources


def test_folder_split_names_and_explicit_files(tmp_path: Path) -> None:
    rows = sentiment(12)
    root = folder(tmp_path / "reviews", {"train": rows, "validation": rows[:3]}, "jsonl")
    (root / "README.md").write_text("ignored")
    corpus = load(f"task:{root}")
    assert len(corpus.examples["dev"]) == 3 and corpus.task.name == "reviews"
    explicit = load(
        "task",
        train=str(root / "train.jsonl"),
        dev=str(root / "validation.jsonl"),
        task_name="mine",
    )
    assert explicit.task.name == "mine" and explicit.examples == corpus.examples


def test_new_inputs_are_read_as_task_texts_are(tmp_path: Path) -> None:
    path = write_table(tmp_path / "new.jsonl", [{"q": "a", "a": "b"}, {"q": "c", "a": ""}])
    table = read_table(path)
    assert input_texts(table, "q", None) == (["a", "c"], None)
    with pytest.raises(SraError, match=r"new\.jsonl:2: empty pair \('a'\) text"):
        input_texts(table, "q", "a")
    with pytest.raises(SraError, match=r"has no column 'text' \(it has: q, a\)"):
        input_texts(table, "text", None)


def test_a_local_hub_dataset_keeps_its_class_label_order(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["pos", "neg"])}
    )
    root = tmp_path / "reviews"
    (root / "data").mkdir(parents=True)
    for split, n in (("train", 12), ("validation", 4), ("test", 3)):
        labels = [i % 2 for i in range(n)] if split != "test" else [-1] * n
        texts = [f"{split} text {i}" for i in range(n)]
        rows = datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)
        rows.to_parquet(str(root / "data" / f"{split}.parquet"))
    corpus = load(f"task:hf:{root}")
    assert corpus.task.labels == ("pos", "neg")  # the dataset's order, not sorted
    assert labels_of(corpus, "dev") == [0, 1, 0, 1] and labels_of(corpus, "test") == [None] * 3
    assert corpus.describe()["splits"] == {"train": "train", "dev": "validation", "test": "test"}


# ---------------------------------------------------------------------------- bad input


def _bad_cases(root: Path) -> dict[str, tuple[str, dict[str, Any], str]]:
    """name -> (corpus, options, what the one error line must say), each with its files."""
    good = sentiment(12)

    def case(name: str, splits: dict[str, Any], ext: str = "csv") -> str:
        return f"task:{folder(root / name, splits, ext)}"

    return {
        "missing column": (
            case("a", {"train": [{"sentence": "x", "label": "a"}]}),
            {},
            r"train\.csv has no column 'text' \(it has: sentence, label\); pass --text-column",
        ),
        "missing label column in dev": (
            case("b", {"train": good, "dev": [{"text": "x"}]}),
            {},
            r"dev\.csv has no column 'label' \(it has: text\)",
        ),
        "dev label unseen": (
            case("c", {"train": good, "dev": [{"text": "x", "label": "other"}]}),
            {},
            r"dev\.csv:2: label 'other' never occurs in train \(train has: meh, neg, pos\)",
        ),
        "test label unseen": (
            case("c2", {"train": good, "dev": good[:3], "test": [{"text": "x", "label": "z"}]}),
            {},
            r"test\.csv:2: label 'z' never occurs in train",
        ),
        "empty text": (
            case("d", {"train": good + [{"text": "  ", "label": "pos"}]}),
            {},
            r"train\.csv:14: empty text text",
        ),
        "numbers and strings": (
            case("e", {"train": good + [{"text": "x", "label": 3}]}),
            {},
            r"labels mix numbers \(3 at .*train\.csv:14\) and strings",
        ),
        "pair in some rows": (
            case(
                "f",
                {
                    "train": [
                        {"text": "a", "label": "x", "text_pair": "b"},
                        {"text": "c", "label": "y"},
                    ]
                },
                "jsonl",
            ),
            {},
            r"train\.jsonl:2: empty pair \('text_pair'\) text \(the pair column is present in some",
        ),
        "non-numeric regression label": (
            case(
                "g",
                {
                    "train": [{"text": f"t{i}", "label": i} for i in range(5)]
                    + [{"text": "x", "label": "high"}]
                },
            ),
            {"problem": "regression"},
            r"train\.csv:7: regression label 'high' is not a number",
        ),
        "folder without train": (
            case("h", {"dev": good}),
            {},
            r"has no train file \(train\.csv, \.tsv, \.jsonl or \.parquet, optionally \.gz\); "
            r"it holds: dev\.csv",
        ),
        "missing label": (
            case("i", {"train": good + [{"text": "x", "label": ""}]}),
            {},
            r"train\.csv:14: no label in column 'label'",
        ),
        "one class": (
            case("j", {"train": [{"text": f"t{i}", "label": "a"} for i in range(5)]}),
            {},
            r"every training label is 'a'; a classifier needs at least two classes",
        ),
        "lists and single labels": (
            case(
                "k",
                {"train": [{"text": "a", "label": ["x"]}, {"text": "b", "label": "y"}]},
                "jsonl",
            ),
            {},
            r"train\.jsonl:2: label 'y' is a single value but other rows hold lists",
        ),
        "multilabel without lists": (
            case("l", {"train": good}),
            {"problem": "multilabel"},
            r"--problem multilabel needs list labels",
        ),
        "two train files": (
            case("m", {"train": good}) + "",
            {},
            r"has 2 train files",
        ),
        "a glue name": (case("sst2", {"train": good}), {}, r"task name 'sst2' is a GLUE task's"),
        "not utf-8": ("task:" + str(root / "n"), {}, r"train\.tsv:3: bytes that are not UTF-8"),
        "tab in tsv text": (
            "task:" + str(root / "o"),
            {},
            r"train\.tsv:2: row has 3 tab-separated",
        ),
        "a file, not a folder": (
            "task:" + str(root / "a" / "train.csv"),
            {},
            r"task:PATH takes a folder",
        ),
        "both path and files": ("task:" + str(root / "a"), {"train": "x.csv"}, r"give either"),
    }


def _extra_files(root: Path) -> None:
    write_table(root / "m" / "train.jsonl", sentiment(12))
    (root / "n").mkdir()
    (root / "n" / "train.tsv").write_bytes(b"text\tlabel\nok\ta\nbad \xff byte\tb\n")
    (root / "o").mkdir()
    (root / "o" / "train.tsv").write_text("text\tlabel\na\ttab\tb\n")


def test_bad_input_is_one_line_before_the_teacher_and_nothing_is_written(
    tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import embed_any

    def no_teacher(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("the teacher must not load on bad input")

    monkeypatch.setattr("pipeline.teacher.Teacher", no_teacher)
    cases = _bad_cases(tmp_path / "data")
    _extra_files(tmp_path / "data")
    for name, (corpus, options, expected) in cases.items():
        out = tmp_path / "out" / name.replace(" ", "-")
        with pytest.raises(SraError) as info:
            embed_any(corpus=corpus, out=out, progress=False, **options)
        message = str(info.value)
        assert "\n" not in message, name
        assert re.search(expected, message), f"{name}: {message}"
        assert not out.exists(), name


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"problem": "ranking"}, "--problem must be auto, classification, multilabel, regression"),
        ({"dev_fraction": 1.0}, "--dev-fraction must be between 0 and 1"),
        ({"label_separator": ""}, "--label-separator must not be empty"),
    ],
)
def test_bad_options(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(SraError, match=expected):
        TaskDataOptions(**options)


def test_task_options_refused_on_other_corpora(tmp_path: Path) -> None:
    from tests.conftest import embed_any, write_glue

    glue = write_glue(tmp_path / "glue", n_train=10, n_dev=5)
    with pytest.raises(SraError, match="--label-column read a task: corpus"):
        embed_any(corpus="glue:sst2", glue_dir=str(glue), label_column="y", out=tmp_path / "a")
    with pytest.raises(SraError, match="use them with --corpus glue:TASK or task:PATH"):
        embed_any(corpus=str(tmp_path), text_column="y", out=tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
