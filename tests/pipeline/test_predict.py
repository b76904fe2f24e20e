"""`pipeline predict`: every row of a file, in order, with its prediction, streamed in chunks;
in each input format, for each problem; bad input is one line and leaves nothing half-written."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cache.errors import SraError
from pipeline.cli import app
from pipeline.tasks import predict as predict_module
from pipeline.tasks.predict import PredictConfig, predict_file
from student import TaskModel
from tests.conftest import own_task_rows, write_table

runner = CliRunner()


def read_rows(path: Path) -> list[dict]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    text = data.decode("utf-8")
    name = path.name.removesuffix(".gz")
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines()]
    if name.endswith(".csv"):
        return list(csv.DictReader(io.StringIO(text, newline="")))
    lines = text.splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def inputs(n: int = 23) -> list[dict]:
    """Rows to predict: an id, the text (commas and quotes in some), a column to keep."""
    rows = own_task_rows("reviews", n, seed=5)
    return [{"id": i, "text": r["text"], "note": f"n{i}"} for i, r in enumerate(rows)]


def run(model: Path, src: Path, out: Path, **kw) -> dict:
    return predict_file(PredictConfig(model=model, input=src, output=out, progress=False, **kw))


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("csv", "csv"),
        ("tsv", "tsv"),
        ("jsonl", "jsonl"),
        ("csv.gz", "jsonl"),
        ("parquet", "csv"),
        ("jsonl", "tsv.gz"),
    ],
)
def test_rows_come_out_in_order_with_their_predictions(own_task_models, tmp_path, source, target):
    model_dir = own_task_models["reviews"][2]
    rows = inputs()
    src = write_table(tmp_path / f"in.{source}", rows)
    out = tmp_path / f"out.{target}"
    result = run(model_dir, src, out, chunk_rows=5, batch_size=4)  # chunks cut mid-file
    got = read_rows(out)
    assert result["rows"] == len(rows) == len(got)
    assert [str(r["id"]) for r in got] == [str(r["id"]) for r in rows]
    assert [r["text"] for r in got] == [r["text"] for r in rows]
    assert [r["note"] for r in got] == [r["note"] for r in rows]
    model = TaskModel.from_pretrained(model_dir)
    assert [r["prediction"] for r in got] == model.predict([r["text"] for r in rows])
    probabilities = np.array([[float(r[f"p_{x}"]) for x in model.labels] for r in got])
    assert np.allclose(probabilities, model.predict_proba([r["text"] for r in rows]), atol=1e-5)
    assert list(got[0]) == ["id", "text", "note", "prediction", "p_bad", "p_good", "p_meh"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_txt_is_one_text_per_line_blank_lines_included(own_task_models, tmp_path):
    model_dir = own_task_models["reviews"][2]
    texts = ["the red cat", "", "a blue dog, and more", "green tree"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.jsonl"
    run(model_dir, src, out, chunk_rows=3)
    got = read_rows(out)
    assert [r["text"] for r in got] == texts
    assert [r["prediction"] for r in got] == TaskModel.from_pretrained(model_dir).predict(texts)
    assert isinstance(got[0]["p_good"], float)


def test_pairs_multilabel_and_regression(own_task_models, tmp_path):
    pair_rows = own_task_rows("pairs", 9, seed=3)
    src = write_table(
        tmp_path / "pairs.csv", [{k: r[k] for k in ("text", "text_pair")} for r in pair_rows]
    )
    run(own_task_models["pairs"][2], src, tmp_path / "pairs-out.csv")
    got = read_rows(tmp_path / "pairs-out.csv")
    model = TaskModel.from_pretrained(own_task_models["pairs"][2])
    assert [r["prediction"] for r in got] == model.predict(
        [(r["text"], r["text_pair"]) for r in pair_rows]
    )
    assert list(got[0]) == ["text", "text_pair", "prediction", "p_different", "p_same"]

    tickets = [{"text": r["text"]} for r in own_task_rows("tickets", 9, seed=3)]
    src = write_table(tmp_path / "tickets.jsonl", tickets)
    run(own_task_models["tickets"][2], src, tmp_path / "tickets.jsonl.out.jsonl")
    run(own_task_models["tickets"][2], src, tmp_path / "tickets.csv")
    as_json, as_csv = (
        read_rows(tmp_path / "tickets.jsonl.out.jsonl"),
        read_rows(tmp_path / "tickets.csv"),
    )
    expected = TaskModel.from_pretrained(own_task_models["tickets"][2]).predict(
        [t["text"] for t in tickets]
    )
    assert [tuple(r["prediction"]) for r in as_json] == expected  # JSON: a list of labels
    assert [r["prediction"] for r in as_csv] == ["|".join(p) for p in expected]  # CSV: joined

    scores = own_task_rows("scores", 9, seed=3)
    src = write_table(
        tmp_path / "scores.tsv", [{k: r[k] for k in ("text", "text_pair")} for r in scores]
    )
    run(own_task_models["scores"][2], src, tmp_path / "scores-out.tsv")
    got = read_rows(tmp_path / "scores-out.tsv")
    assert list(got[0]) == ["text", "text_pair", "score"]
    predicted = TaskModel.from_pretrained(own_task_models["scores"][2]).predict(
        [(r["text"], r["text_pair"]) for r in scores]
    )
    assert np.allclose([float(r["score"]) for r in got], predicted, atol=1e-4)


def test_the_command_line_and_its_bad_input(own_task_models, tmp_path):
    model_dir = own_task_models["reviews"][2]
    src = write_table(tmp_path / "in.csv", inputs(6))
    out = tmp_path / "out.csv"

    def cli(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(app, ["predict", "--no-progress", *args])

    result = cli("--model", str(model_dir), "--input", str(src), "--output", str(out))
    assert result.exit_code == 0, result.output
    assert len(read_rows(out)) == 6
    before = out.read_bytes()

    def refused(*args: str, match: str) -> None:
        result = cli(*args)
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert match in lines[0], lines[0]

    # An existing output is kept unless --overwrite.
    refused(
        "--model",
        str(model_dir),
        "--input",
        str(src),
        "--output",
        str(out),
        match="already exists; pass --overwrite",
    )
    assert out.read_bytes() == before
    # No text column: the columns the file has are named.
    other = write_table(tmp_path / "other.csv", [{"body": "the red cat", "id": 1}])
    refused(
        "--model",
        str(model_dir),
        "--input",
        str(other),
        "--output",
        str(tmp_path / "o1.csv"),
        match="has no column 'text' for the text (it has: body, id); pass --text-column",
    )
    # ... which --text-column names.
    result = cli(
        "--model",
        str(model_dir),
        "--input",
        str(other),
        "--output",
        str(tmp_path / "o2.csv"),
        "--text-column",
        "body",
    )
    assert result.exit_code == 0 and read_rows(tmp_path / "o2.csv")[0]["body"] == "the red cat"
    # A pair model without its pair column; a pair model on TXT.
    pairs = own_task_models["pairs"][2]
    refused(
        "--model",
        str(pairs),
        "--input",
        str(src),
        "--output",
        str(tmp_path / "o3.csv"),
        match="has no column 'text_pair' for the second text of each pair",
    )
    txt = tmp_path / "in.txt"
    txt.write_text("a\nb\n")
    refused(
        "--model",
        str(pairs),
        "--input",
        str(txt),
        "--output",
        str(tmp_path / "o4.csv"),
        match="reads sentence pairs, and a .txt input holds one text per line",
    )
    # An encoder is not a task model.
    refused(
        "--model",
        str(model_dir / "encoder"),
        "--input",
        str(src),
        "--output",
        str(tmp_path / "o5.csv"),
        match="is a student encoder, not a task model",
    )
    # Formats by name.
    refused(
        "--model",
        str(model_dir),
        "--input",
        str(src),
        "--output",
        str(tmp_path / "o.xlsx"),
        match="--output",
    )
    # A column the predictions would overwrite.
    clash = write_table(tmp_path / "clash.csv", [{"text": "a", "prediction": "x"}])
    refused(
        "--model",
        str(model_dir),
        "--input",
        str(clash),
        "--output",
        str(tmp_path / "o6.csv"),
        match="already has a column 'prediction'",
    )
    assert not any((tmp_path / f"o{i}.csv").exists() for i in (1, 3, 4, 5, 6))


def test_a_failure_midway_writes_nothing_half(own_task_models, tmp_path):
    model_dir = own_task_models["reviews"][2]
    lines = ["id,text"] + [f"{i},the red cat {i}" for i in range(40)]
    lines[30] = "30,the red cat,an extra field"  # a bad row after 29 good ones
    src = tmp_path / "in.csv"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    with pytest.raises(SraError, match="in.csv:31: row has 3 comma-separated fields"):
        run(model_dir, src, out, chunk_rows=4)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
    # With --overwrite, the earlier output survives a failed run untouched.
    out.write_text("earlier\n")
    with pytest.raises(SraError):
        run(model_dir, src, out, chunk_rows=4, overwrite=True)
    assert out.read_text() == "earlier\n" and not list(tmp_path.glob(".*.tmp"))
    # A JSONL row without its text is named by its line.
    src = write_table(tmp_path / "in.jsonl", [{"text": "a"}, {"text": "b"}, {"body": "c"}])
    with pytest.raises(SraError, match=r"in.jsonl:3: column 'text' holds no value"):
        run(model_dir, src, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_plain_progress_lines_off_a_terminal(own_task_models, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(predict_module, "PLAIN_EVERY", 0.0)
    src = write_table(tmp_path / "in.csv", inputs(12))
    predict_file(
        PredictConfig(
            model=own_task_models["reviews"][2], input=src, output=tmp_path / "o.csv", chunk_rows=5
        )
    )
    err = capsys.readouterr().err
    assert "predict: 5 rows" in err and "predict: 12 rows" in err
    assert "wrote " in err and "12 rows in" in err


@pytest.mark.parametrize("name", ["reviews", "tickets"])
def test_an_exported_model_predicts_a_file_as_its_run_does(own_task_models, tmp_path, name):
    """`pipeline export --model RUN` writes a folder `pipeline predict --model` takes too:
    on ONNX Runtime, with the run's columns and labels, the same predictions."""
    pytest.importorskip("onnxruntime")
    from student.deploy.export import export_onnx

    model_dir = own_task_models[name][2]
    export_onnx(model_dir, tmp_path / "onnx")
    src = write_table(
        tmp_path / "in.jsonl", [{"text": r["text"]} for r in own_task_rows(name, 15, seed=6)]
    )
    from_run = run(model_dir, src, tmp_path / "run.jsonl")
    from_export = run(tmp_path / "onnx", src, tmp_path / "export.jsonl")
    assert (from_run["backend"], from_export["backend"]) == ("torch", "onnx")
    expected, got = read_rows(tmp_path / "run.jsonl"), read_rows(tmp_path / "export.jsonl")
    assert [r["prediction"] for r in got] == [r["prediction"] for r in expected]
    assert len({json.dumps(r["prediction"]) for r in expected}) > 1  # not one constant answer
    labels = TaskModel.from_pretrained(model_dir).labels
    probabilities = [[[r[f"p_{x}"] for x in labels] for r in rows] for rows in (expected, got)]
    np.testing.assert_allclose(*np.asarray(probabilities, dtype=float), atol=1e-5)
