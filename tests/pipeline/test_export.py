"""`pipeline export`: ONNX and sentence-transformers round trips, a real fine-tuned run exported
and predicting as in torch, and one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.export import export_sentence_transformers
from student import SraError, StudentConfig, StudentEncoder
from student.task_model import TaskModel
from tests.conftest import make_task_cache, write_glue

SHORT = [
    "the cat sat on the mat .",
    "a dog ran fast",
    "",
    "red house , blue river and a small green tree",
    "it was the first film of the year",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_student(tiny_bert: Path, folder: Path, **shape) -> Path:
    tokenizer = Tokenizer.from_file(str(tiny_bert / "tokenizer.json"))
    config = StudentConfig(
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        embedding_dim=16,
        hidden_size=12,
        output_dim=8,
        max_length=24,
        **shape,
    )
    torch.manual_seed(0)
    StudentEncoder(config, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["export", *args])


@pytest.mark.parametrize(
    "shape", [{}, {"pooling": "max+mean", "projection_hidden": 6, "num_layers": 2}]
)
def test_sentence_transformers_round_trip(tiny_bert, tmp_path, shape):
    from sentence_transformers import SentenceTransformer

    student = make_student(tiny_bert, tmp_path / "student", **shape)
    result = export_sentence_transformers(student, tmp_path / "st")
    assert result["check"]["passed"]
    modules = json.loads((tmp_path / "st" / "modules.json").read_text())
    # Only the library's own classes: SentenceTransformer(folder) needs no trust_remote_code.
    assert all(m["type"].startswith("sentence_transformers.") for m in modules)

    loaded = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    encoder = StudentEncoder.from_pretrained(student)
    np.testing.assert_allclose(loaded.encode(SHORT), encoder.encode(SHORT), atol=1e-5)
    assert loaded.encode(SHORT).shape == (len(SHORT), 8)


def test_sentence_transformers_check_leaves_out_sentences_past_max_length(tiny_bert, tmp_path):
    """Longer sentences differ by design (WordEmbeddings cuts after tokenization); they are
    counted without the truncation a teacher's saved tokenizer.json carries."""
    tokenizer = Tokenizer.from_file(str(tiny_bert / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=24)
    config = StudentConfig(
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        embedding_dim=16,
        hidden_size=12,
        output_dim=8,
        max_length=24,
    )
    torch.manual_seed(0)
    StudentEncoder(config, tokenizer=tokenizer).save_pretrained(tmp_path / "student")
    sentences = [*SHORT, " ".join(["river"] * 40)]
    result = export_sentence_transformers(tmp_path / "student", tmp_path / "st", sentences)
    assert result["check"]["passed"] and result["check"]["sentences"] == len(SHORT)


def test_sentence_transformers_refuses_a_task_run(tiny_bert, tmp_path):
    run = tmp_path / "run"
    make_student(tiny_bert, run / "encoder")
    (run / "finetune.json").write_text(json.dumps({"task": "sst2", "head": {}}))
    with pytest.raises(SraError, match="takes an encoder"):
        export_sentence_transformers(run, tmp_path / "st")


def test_cli_exports_onnx_and_prints_the_check(tiny_bert, tmp_path):
    student = make_student(tiny_bert, tmp_path / "student")
    result = invoke("--model", str(student), "--out", str(tmp_path / "onnx"), "--int8")
    assert result.exit_code == 0, result.output
    assert "encoder as int8 ONNX" in result.output
    assert "check on 16 sample sentences" in result.output and result.output.rstrip().endswith("ok")
    loaded = StudentEncoder.from_pretrained(tmp_path / "onnx")
    assert loaded.backend == "onnx-int8"

    sentences = tmp_path / "check.txt"
    sentences.write_text("\n".join(SHORT[:2] + SHORT[3:]) + "\n")
    result = invoke(
        "--model",
        str(student),
        "--out",
        str(tmp_path / "st"),
        "--format",
        "sentence-transformers",
        "--check-sentences",
        str(sentences),
    )
    assert result.exit_code == 0, result.output
    assert "check on 4 sample sentences" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "tflite"], "--format must be one of onnx, sentence-transformers"),
        (["--format", "sentence-transformers", "--int8"], "--int8 applies to --format onnx"),
    ],
)
def test_cli_bad_options(tiny_bert, tmp_path, args, message):
    student = make_student(tiny_bert, tmp_path / "student")
    result = invoke("--model", str(student), "--out", str(tmp_path / "out"), *args)
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {message}" or message in result.output
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_folder_that_is_no_model(tmp_path):
    (tmp_path / "junk").mkdir()
    result = invoke("--model", str(tmp_path / "junk"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model")
    assert "neither a student folder" in lines[0]


@pytest.mark.slow
def test_a_real_finetuned_run_exports_and_predicts_like_torch(tiny_bert, tmp_path):
    """pipeline finetune's own output folder (SST-2, MRPC, STS-B; one epoch), exported."""
    from cache.options import configure
    from student.finetuning.config import FinetuneConfig
    from student.finetuning.loop import finetune

    glue = write_glue(tmp_path / "glue", n_train=96, n_dev=40)
    student = make_student(tiny_bert, tmp_path / "student")
    for task in ("sst2", "mrpc", "stsb"):
        cache = make_task_cache(tmp_path, tiny_bert, task, glue)
        run = tmp_path / f"{task}-run"
        finetune(
            configure(
                FinetuneConfig,
                student=str(student),
                task=task,
                cache=cache,
                out=run,
                epochs=1,
                bf16=False,
                progress=False,
            )
        )
        result = invoke("--model", str(run), "--out", str(tmp_path / f"{task}-onnx"))
        assert result.exit_code == 0, result.output
        tsv = (glue / _folder(task) / "dev.tsv").read_text().splitlines()
        header, rows = tsv[0].split("\t"), [line.split("\t") for line in tsv[1:]]
        first, second = _sides(task, header, rows)
        texts = list(zip(first, second, strict=True)) if second is not None else first
        torch_model = TaskModel.from_pretrained(run)
        exported = TaskModel.from_pretrained(tmp_path / f"{task}-onnx")
        assert torch_model.backend == "torch" and exported.backend == "onnx"
        assert exported.task == torch_model.task and exported.info == torch_model.info
        np.testing.assert_allclose(
            exported.outputs(first, second), torch_model.outputs(first, second), atol=1e-5
        )
        predicted = torch_model.predict(texts)
        # The run's own dev predictions (predictions-dev.tsv) are what torch predicts here.
        written = [
            line.split("\t")[1]
            for line in (run / "predictions-dev.tsv").read_text().splitlines()[1:]
        ]
        if task == "stsb":
            np.testing.assert_allclose(np.asarray(written, float), predicted, atol=1e-3)
            np.testing.assert_allclose(exported.predict(texts), predicted, atol=1e-4)
        else:
            assert written == predicted == exported.predict(texts)


def _sides(task: str, header: list[str], rows: list[list[str]]):  # type: ignore[no-untyped-def]
    if task == "sst2":
        return [r[0] for r in rows], None
    if task == "mrpc":
        return [r[3] for r in rows], [r[4] for r in rows]
    a, b = header.index("sentence1"), header.index("sentence2")
    return [r[a] for r in rows], [r[b] for r in rows]


def _folder(task: str) -> str:
    return {"sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B"}[task]
