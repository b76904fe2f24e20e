"""GLUE task data: the registry, every TSV quirk, every error, the hub path, the real files."""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import pytest

from cache.errors import SraError
from cache.tasks import TASKS, dev_splits, get_task, unlabeled_splits
from pipeline.tasks.glue import Example, describe_task_source, read_split, task_sentences
from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]
GLUE = SHARED_DATA / "glue"  # by default <repo>/../shared/data/glue
requires_glue = pytest.mark.skipif(
    not GLUE.is_dir(),
    reason=f"shared GLUE data not found at {GLUE} (set PIPELINE_SHARED_DATA)",
)

SST2 = get_task("sst2")
COLA = get_task("cola")
MRPC = get_task("mrpc")
STSB = get_task("stsb")
QQP = get_task("qqp")
MNLI = get_task("mnli")
QNLI = get_task("qnli")
RTE = get_task("rte")
WNLI = get_task("wnli")


def write(glue: Path, folder: str, file: str, text: str | bytes) -> Path:
    """Write one GLUE file verbatim (bytes, or text with its line endings kept)."""
    path = glue / folder / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def rows(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


def error(task, split: str, glue: Path | None) -> str:
    with pytest.raises(SraError) as info:
        read_split(task, split, glue)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------- registry


def test_registry_covers_glue_with_hub_label_order() -> None:
    assert list(TASKS) == ["sst2", "cola", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert SST2.labels == ("negative", "positive")
    assert MNLI.labels == ("entailment", "neutral", "contradiction")
    assert RTE.labels == QNLI.labels == ("entailment", "not_entailment")
    assert WNLI.labels == ("not_entailment", "entailment")  # reversed relative to RTE
    assert STSB.labels is None and STSB.is_regression and STSB.num_labels == 1
    assert (MRPC.metrics, MRPC.main_metric) == (("f1", "accuracy"), "f1")
    assert (STSB.metrics, STSB.main_metric) == (("pearson", "spearman"), "pearson")
    assert (QQP.metrics, QQP.main_metric) == (("accuracy", "f1"), "accuracy")
    assert COLA.main_metric == "mcc"
    for task in TASKS.values():
        assert task.main_metric in task.metrics
        assert set(task.splits) == set(task.hub_splits)
        assert task.pair == (task.name not in {"sst2", "cola"})


def test_splits_and_hub_split_names() -> None:
    assert dev_splits(SST2) == ("dev",)
    assert dev_splits(MNLI) == ("dev_matched", "dev_mismatched")
    assert unlabeled_splits(MNLI) == ("test_matched", "test_mismatched")
    assert SST2.splits == {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
    assert SST2.hub_splits["dev"] == "validation"
    assert MNLI.splits["dev_mismatched"] == "dev_mismatched.tsv"
    assert MNLI.hub_splits["dev_matched"] == "validation_matched"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("sst2", "sst2"), ("SST-2", "sst2"), ("sts-b", "stsb"), ("STS-B", "stsb"), ("CoLA", "cola")],
)
def test_get_task_accepts_folder_spellings(name: str, expected: str) -> None:
    assert get_task(name).name == expected


def test_get_task_unknown_lists_known_tasks() -> None:
    with pytest.raises(ValueError, match="known tasks: sst2, cola, mrpc") as info:
        get_task("squad")
    assert "\n" not in str(info.value)


def test_task_spec_is_hashable_and_frozen() -> None:
    assert {SST2: 1}[get_task("SST-2")] == 1
    with pytest.raises(AttributeError):
        SST2.name = "x"  # type: ignore[misc]


def test_task_registry_imports_only_stdlib() -> None:
    # Stage two imports cache/ without pipeline/ (and its teacher dependencies) installed.
    tree = ast.parse((REPO / "cache" / "tasks.py").read_text())
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


# ---------------------------------------------------------------------------- TSV formats


def test_sst2_single_sentence_quotes_literal_and_crlf(tmp_path: Path) -> None:
    # A quote opened and never closed must not swallow the next rows (no csv quoting).
    write(
        tmp_path,
        "SST-2",
        "train.tsv",
        'sentence\tlabel\r\nit \'s a "charming journey . \t1\r\n\r\na dull , "flat" film \t0\r\n',
    )
    examples = read_split(SST2, "train", tmp_path)
    assert examples == [
        Example(idx=0, text_a="it 's a \"charming journey . ", text_b=None, label=1),
        Example(idx=1, text_a='a dull , "flat" film ', text_b=None, label=0),
    ]


def test_sst2_test_split_has_index_and_no_labels(tmp_path: Path) -> None:
    write(tmp_path, "SST-2", "test.tsv", rows("index\tsentence", "7\tgood .", "8\tbad ."))
    examples = read_split(SST2, "test", tmp_path)
    assert [(e.idx, e.text_a, e.label) for e in examples] == [
        (7, "good .", None),
        (8, "bad .", None),
    ]


def test_mrpc_pair_with_bom_header(tmp_path: Path) -> None:
    write(
        tmp_path,
        "MRPC",
        "dev.tsv",
        rows(
            "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String",
            '1\t1355540\t1355592\tHe said "it fits.\t"It fits.',
            "0\t2029631\t2029565\tA b.\tC d.",
        ),
    )
    examples = read_split(MRPC, "dev", tmp_path)
    assert examples == [
        Example(idx=0, text_a='He said "it fits.', text_b='"It fits.', label=1),
        Example(idx=1, text_a="A b.", text_b="C d.", label=0),
    ]


def test_cola_train_has_no_header_but_test_does(tmp_path: Path) -> None:
    # No trailing newline, like the real CoLA dev.tsv.
    write(tmp_path, "CoLA", "train.tsv", "gj04\t1\t\tThe cat sat.\ngj04\t0\t*\tCat the sat.")
    examples = read_split(COLA, "train", tmp_path)
    assert [(e.idx, e.text_a, e.text_b, e.label) for e in examples] == [
        (0, "The cat sat.", None, 1),
        (1, "Cat the sat.", None, 0),
    ]
    write(tmp_path, "CoLA", "test.tsv", rows("index\tsentence", "0\tBill left."))
    assert read_split(COLA, "test", tmp_path) == [Example(0, "Bill left.", None, None)]


STSB_HEADER = (
    "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
)


def test_stsb_regression_scores_are_floats(tmp_path: Path) -> None:
    write(
        tmp_path,
        "STS-B",
        "dev.tsv",
        rows(
            STSB_HEADER,
            "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man.\tA guy.\t5.000",
            "1\tmain-news\theadlines\t2013\t0001\tnone\tnone\tX.\tY.\t0.4",
        ),
    )
    examples = read_split(STSB, "dev", tmp_path)
    assert [(e.idx, e.text_a, e.text_b, e.label) for e in examples] == [
        (0, "A man.", "A guy.", 5.0),
        (1, "X.", "Y.", 0.4),
    ]
    assert all(isinstance(e.label, float) for e in examples)


MNLI_DEV_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t"
    "label5\tgold_label"
)


def test_mnli_gold_label_is_the_last_field(tmp_path: Path) -> None:
    parses = "\t".join(["( p )"] * 4)
    write(
        tmp_path,
        "MNLI",
        "dev_matched.tsv",
        rows(
            MNLI_DEV_HEADER,
            # Five annotator labels, then gold.
            f"0\t1\t1n\tfiction\t{parses}\tP one.\tH one.\tneutral\tneutral\tentailment\t"
            "neutral\tneutral\tneutral",
            # One annotator label: gold_label lands at the header's label2 position.
            f"5\t2\t2c\tslate\t{parses}\tP two.\tH two.\tcontradiction\tcontradiction",
        ),
    )
    examples = read_split(MNLI, "dev_matched", tmp_path)
    assert examples == [
        Example(idx=0, text_a="P one.", text_b="H one.", label=1),
        Example(idx=5, text_a="P two.", text_b="H two.", label=2),
    ]


def test_mnli_row_without_a_label_after_the_texts_is_too_short(tmp_path: Path) -> None:
    parses = "\t".join(["( p )"] * 4)
    write(
        tmp_path,
        "MNLI",
        "dev_mismatched.tsv",
        rows(MNLI_DEV_HEADER, f"0\t1\t1n\tfiction\t{parses}\tP.\tH."),
    )
    message = error(MNLI, "dev_mismatched", tmp_path)
    assert "dev_mismatched.tsv:2" in message and "at least 11" in message


@pytest.mark.parametrize(
    ("task", "folder", "header", "row", "expected"),
    [
        (QQP, "QQP", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "42\t1\t2\tA?\tB?\t1",
         Example(42, "A?", "B?", 1)),
        (QNLI, "QNLI", "index\tquestion\tsentence\tlabel", "3\tQ?\tS.\tnot_entailment",
         Example(3, "Q?", "S.", 1)),
        (RTE, "RTE", "index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tentailment",
         Example(0, "A.", "B.", 0)),
        (WNLI, "WNLI", "index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\t1",
         Example(0, "A.", "B.", 1)),
    ],
)  # fmt: skip
def test_pair_tasks_label_formats(
    tmp_path: Path, task, folder: str, header: str, row: str, expected: Example
) -> None:
    write(tmp_path, folder, "train.tsv", rows(header, row))
    assert read_split(task, "train", tmp_path) == [expected]


def test_qqp_test_split_keeps_ids(tmp_path: Path) -> None:
    write(tmp_path, "QQP", "test.tsv", rows("id\tquestion1\tquestion2", "9\tA?\tB?"))
    assert read_split(QQP, "test", tmp_path) == [Example(9, "A?", "B?", None)]


# ---------------------------------------------------------------------------- errors


def test_unknown_split(tmp_path: Path) -> None:
    message = error(SST2, "validation", tmp_path)
    assert "no split 'validation'" in message and "train, dev, test" in message
    assert "dev_matched" in error(MNLI, "dev", None)


def test_missing_glue_dir(tmp_path: Path) -> None:
    message = error(SST2, "train", tmp_path / "nope")
    assert "does not exist" in message and "--glue-dir" in message and "SST-2/" in message


def test_missing_task_folder(tmp_path: Path) -> None:
    write(tmp_path, "MRPC", "train.tsv", rows("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"))
    message = error(SST2, "train", tmp_path)
    assert "no SST-2/ subfolder" in message and "--glue-dir" in message


def test_glue_dir_pointing_at_the_task_folder_says_so(tmp_path: Path) -> None:
    write(tmp_path, "SST-2", "train.tsv", rows("sentence\tlabel", "a .\t1"))
    message = error(SST2, "train", tmp_path / "SST-2")
    assert "looks like the SST-2 folder itself" in message


def test_missing_split_file(tmp_path: Path) -> None:
    write(tmp_path, "SST-2", "train.tsv", rows("sentence\tlabel", "a .\t1"))
    message = error(SST2, "test", tmp_path)
    assert str(tmp_path / "SST-2" / "test.tsv") in message and "--glue-dir" in message


def test_header_missing_columns_are_named(tmp_path: Path) -> None:
    write(
        tmp_path, "RTE", "dev.tsv", rows("index\tpremise\thypothesis\tlabel", "0\ta\tb\tentailment")
    )
    message = error(RTE, "dev", tmp_path)
    assert "dev.tsv:1" in message and "'sentence1', 'sentence2'" in message
    assert "'premise'" in message  # what it has instead


def test_row_with_too_few_fields(tmp_path: Path) -> None:
    write(tmp_path, "RTE", "dev.tsv", rows("index\tsentence1\tsentence2\tlabel", "0\tA.\tB."))
    message = error(RTE, "dev", tmp_path)
    assert "dev.tsv:2" in message and "3 tab-separated fields, expected 4" in message


def test_row_with_a_tab_inside_a_text_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "QQP", "test.tsv", rows("id\tquestion1\tquestion2", "1\tA\tpart?\tB?"))
    message = error(QQP, "test", tmp_path)
    assert "test.tsv:2" in message and "4 tab-separated fields, expected 3" in message


@pytest.mark.parametrize(
    ("task", "folder", "header", "row", "bad"),
    [
        (SST2, "SST-2", "sentence\tlabel", "a .\t2", "'2'"),
        (SST2, "SST-2", "sentence\tlabel", "a .\tpositive", "'positive'"),
        (RTE, "RTE", "index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\t0", "'0'"),
        (RTE, "RTE", "index\tsentence1\tsentence2\tlabel", "0\tA.\tB.\tneutral", "'neutral'"),
    ],
)
def test_label_outside_the_label_set(
    tmp_path: Path, task, folder: str, header: str, row: str, bad: str
) -> None:
    write(tmp_path, folder, "train.tsv", rows(header, row))
    message = error(task, "train", tmp_path)
    assert "train.tsv:2" in message and f"label {bad}" in message
    assert ", ".join(task.labels if task.name == "rte" else ["0", "1"]) in message


@pytest.mark.parametrize("score", ["5.5", "-0.1", "high", "nan", ""])
def test_stsb_score_outside_0_to_5(tmp_path: Path, score: str) -> None:
    row = f"0\tg\tf\ty\t0\tnone\tnone\tA.\tB.\t{score}"
    write(tmp_path, "STS-B", "train.tsv", rows(STSB_HEADER, row))
    message = error(STSB, "train", tmp_path)
    assert "train.tsv:2" in message and "not a number in [0, 5]" in message


def test_index_that_is_not_an_integer(tmp_path: Path) -> None:
    write(tmp_path, "WNLI", "dev.tsv", rows("index\tsentence1\tsentence2\tlabel", "x\tA.\tB.\t1"))
    message = error(WNLI, "dev", tmp_path)
    assert "dev.tsv:2" in message and "'index' column holds 'x'" in message


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    write(tmp_path, "SST-2", "dev.tsv", b"sentence\tlabel\nok .\t1\ncaf\xe9 .\t0\n")
    message = error(SST2, "dev", tmp_path)
    assert "dev.tsv:3" in message and "not UTF-8" in message


@pytest.mark.parametrize("content", [b"", b"\n\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    write(tmp_path, "SST-2", "dev.tsv", content)
    assert "is empty" in error(SST2, "dev", tmp_path)
    write(tmp_path, "CoLA", "dev.tsv", content)  # header-less: empty the same way
    assert "is empty" in error(COLA, "dev", tmp_path)


def test_header_without_rows(tmp_path: Path) -> None:
    write(tmp_path, "SST-2", "dev.tsv", rows("sentence\tlabel"))
    assert "has a header but no rows" in error(SST2, "dev", tmp_path)


# ---------------------------------------------------------------------------- sentences


def test_task_sentences_unique_in_first_seen_order() -> None:
    by_split = {
        "train": [Example(0, "b", "a", 0), Example(1, "c", "b", 1)],
        "dev": [Example(0, "a", "d", 0), Example(1, "e", None, None)],
    }
    assert task_sentences(by_split) == ["b", "a", "c", "d", "e"]
    assert task_sentences({"dev": by_split["dev"], "train": by_split["train"]})[:3] == [
        "a",
        "d",
        "e",
    ]


def test_task_sentences_keep_texts_verbatim(tmp_path: Path) -> None:
    write(tmp_path, "SST-2", "dev.tsv", rows("sentence\tlabel", "a film . \t1", "a film .\t0"))
    examples = {"dev": read_split(SST2, "dev", tmp_path)}
    assert task_sentences(examples) == ["a film . ", "a film ."]


# ---------------------------------------------------------------------------- fingerprint


def test_describe_local_source_survives_a_move_but_not_an_edit(tmp_path: Path) -> None:
    write(tmp_path / "a", "SST-2", "train.tsv", rows("sentence\tlabel", "a .\t1"))
    write(tmp_path / "a", "SST-2", "dev.tsv", rows("sentence\tlabel", "b .\t0"))
    info = describe_task_source(SST2, tmp_path / "a")
    assert info["task"] == "sst2" and info["source"] == "local"
    assert [(f["split"], f["file"], f["bytes"]) for f in info["files"]] == [
        ("train", "train.tsv", 21),
        ("dev", "dev.tsv", 21),
    ]
    assert str(tmp_path) not in json.dumps(info)
    shutil.move(tmp_path / "a", tmp_path / "b")
    assert describe_task_source(SST2, tmp_path / "b") == info
    write(tmp_path / "b", "SST-2", "dev.tsv", rows("sentence\tlabel", "c .\t0"))
    assert describe_task_source(SST2, tmp_path / "b") != info
    only_dev = describe_task_source(SST2, tmp_path / "b", splits=["dev"])
    assert [f["split"] for f in only_dev["files"]] == ["dev"]


def test_describe_local_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SraError, match="--glue-dir"):
        describe_task_source(SST2, tmp_path)
    with pytest.raises(SraError, match="no split 'validation'"):
        describe_task_source(SST2, None, splits=["validation"])


def test_describe_hub_source() -> None:
    info = describe_task_source(MNLI, None, splits=["train", "dev_matched"])
    assert info == {
        "task": "mnli",
        "source": "hub",
        "dataset": "nyu-mll/glue",
        "config": "mnli",
        "splits": {"train": "train", "dev_matched": "validation_matched"},
    }
    json.dumps(describe_task_source(SST2, None))


# ---------------------------------------------------------------------------- hub


@pytest.fixture()
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Replace `datasets.load_dataset` with in-memory GLUE-shaped datasets; record calls."""
    import datasets

    calls: list[tuple] = []

    def load_dataset(name: str, config: str, split: str) -> datasets.Dataset:
        calls.append((name, config, split))
        if config == "sst2":
            labels = datasets.ClassLabel(names=["negative", "positive"])
            features = {"sentence": datasets.Value("string"), "label": labels}
            data = {
                "sentence": ["good . ", "bad ."],
                "label": [1, 0] if split != "test" else [-1, -1],
            }
        elif config == "mnli":
            labels = datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])
            features = {
                "premise": datasets.Value("string"),
                "hypothesis": datasets.Value("string"),
                "label": labels,
            }
            data = {"premise": ["P."], "hypothesis": ["H."], "label": [2]}
        elif config == "stsb":
            features = {
                "sentence1": datasets.Value("string"),
                "sentence2": datasets.Value("string"),
                "label": datasets.Value("float32"),
            }
            data = {"sentence1": ["A.", "C."], "sentence2": ["B.", "D."], "label": [3.5, -1.0]}
        elif config == "rte":  # a hub whose label order disagrees with ours
            labels = datasets.ClassLabel(names=["not_entailment", "entailment"])
            features = {
                "sentence1": datasets.Value("string"),
                "sentence2": datasets.Value("string"),
                "label": labels,
            }
            data = {"sentence1": ["A."], "sentence2": ["B."], "label": [0]}
        else:
            raise ValueError(f"Unknown config {config}")
        features["idx"] = datasets.Value("int32")
        data["idx"] = list(range(10, 10 + len(data["label"])))
        return datasets.Dataset.from_dict(data, features=datasets.Features(features))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_single_sentence_and_split_mapping(fake_hub: list[tuple]) -> None:
    assert read_split(SST2, "dev", None) == [
        Example(idx=10, text_a="good . ", text_b=None, label=1),
        Example(idx=11, text_a="bad .", text_b=None, label=0),
    ]
    assert [e.label for e in read_split(SST2, "test", None)] == [None, None]
    assert fake_hub == [("nyu-mll/glue", "sst2", "validation"), ("nyu-mll/glue", "sst2", "test")]


def test_hub_pair_task_renamed_columns(fake_hub: list[tuple]) -> None:
    assert read_split(MNLI, "dev_mismatched", None) == [Example(10, "P.", "H.", 2)]
    assert fake_hub == [("nyu-mll/glue", "mnli", "validation_mismatched")]


def test_hub_regression(fake_hub: list[tuple]) -> None:
    examples = read_split(STSB, "train", None)
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ("A.", "B.", 3.5),
        ("C.", "D.", None),
    ]


def test_hub_label_order_mismatch_is_refused(fake_hub: list[tuple]) -> None:
    message = error(RTE, "train", None)
    assert "labels are ['not_entailment', 'entailment']" in message and "--glue-dir" in message


def test_hub_failure_suggests_glue_dir(fake_hub: list[tuple]) -> None:
    message = error(QQP, "train", None)
    assert "nyu-mll/glue config qqp split train" in message
    assert "Unknown config qqp" in message and "--glue-dir" in message


def test_hub_offline_suggests_glue_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    message = error(SST2, "train", None)
    assert "HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set" in message
    assert "Couldn't reach" in message and "--glue-dir PATH" in message


# ---------------------------------------------------------------------------- real files

# Row counts of the official GLUE splits, all present in ../shared/data/glue.
REAL_COUNTS = [
    (SST2, "train", 67349),
    (SST2, "dev", 872),
    (COLA, "train", 8551),
    (COLA, "dev", 1043),
    (MRPC, "train", 3668),
    (MRPC, "dev", 408),
    (STSB, "train", 5749),
    (STSB, "dev", 1500),
    (RTE, "train", 2490),
    (RTE, "dev", 277),
    (QNLI, "dev", 5463),
]


@requires_glue
@pytest.mark.parametrize(
    ("task", "split", "count"), REAL_COUNTS, ids=[f"{t.name}-{s}" for t, s, _ in REAL_COUNTS]
)
def test_real_glue_row_counts(task, split: str, count: int) -> None:
    examples = read_split(task, split, GLUE)
    assert len(examples) == count
    assert [e.idx for e in examples] == list(range(count))  # every file numbers rows 0..n-1
    assert all(e.text_a and (e.text_b is not None) == task.pair for e in examples)
    if task.labels is None:
        assert all(0.0 <= e.label <= 5.0 for e in examples)
    else:
        assert {e.label for e in examples} == set(range(len(task.labels)))


@requires_glue
def test_real_glue_quotes_are_literal() -> None:
    # MRPC dev row 1's second sentence opens a quote it never closes.
    first = read_split(MRPC, "dev", GLUE)[0]
    assert (
        first.text_b == '"The foodservice pie business does not fit our long-term growth strategy.'
    )
    assert first.label == 1


@requires_glue
def test_real_glue_fingerprint_matches_shared_readme() -> None:
    info = describe_task_source(STSB, GLUE)
    assert info["files"][1] == {
        "split": "dev",
        "file": "dev.tsv",
        "bytes": 276928,
        "sha256": "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59",
    }
