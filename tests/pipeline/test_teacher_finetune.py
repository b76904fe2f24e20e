"""`pipeline teacher-finetune` and stage one's logits: a tiny random BERT, a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cache import open_cache
from cache.errors import CacheError, SraError
from cache.task_data import read_examples, read_logits, read_task
from tests.conftest import embed_any, tiny_teacher_finetune


def embed_cfg(out: Path, glue: Path, teacher: Path, task: str, **kw) -> dict:  # type: ignore[no-untyped-def]
    base = dict(window=64, progress=False, dtype="fp32", teacher=str(teacher), logits=True)
    return dict(corpus=f"glue:{task}", glue_dir=str(glue), out=out, **(base | kw))


def test_teacher_folder_is_a_standard_hf_classifier(tiny_teachers):
    from transformers import AutoModelForSequenceClassification

    folder = tiny_teachers["mrpc"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert not (folder / "checkpoint").exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["finetuning_task"] == "mrpc" and len(config["id2label"]) == 2
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.id2label == {0: "not_equivalent", 1: "equivalent"}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"f1", "accuracy", "epoch"} <= metrics.keys()
    stsb = json.loads((tiny_teachers["stsb"] / "config.json").read_text())
    assert len(stsb["id2label"]) == 1 and stsb["problem_type"] == "regression"


def test_teacher_learns_a_separable_task(tiny_teachers):
    # SST-2 fixture: positive iff the sentence holds "red"; a few steps of a tiny BERT learn it.
    metrics = json.loads((tiny_teachers["sst2"] / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8


def test_rerun_is_a_no_op_and_a_different_run_is_refused(tiny_teachers, tiny_bert, tiny_glue):
    folder = tiny_teachers["sst2"]
    before = (folder / "model.safetensors").stat().st_mtime_ns
    tiny_teacher_finetune("sst2", folder, tiny_bert, tiny_glue)
    assert (folder / "model.safetensors").stat().st_mtime_ns == before
    with pytest.raises(SraError, match=r"different teacher-finetune run \(differs in: lr\)"):
        tiny_teacher_finetune("sst2", folder, tiny_bert, tiny_glue, lr=3e-3)


def test_a_teacher_folder_from_before_the_shared_format_is_recognised(
    tmp_path, tiny_teachers, tiny_bert, tiny_glue
):
    import shutil

    folder = tmp_path / "sst2"
    shutil.copytree(tiny_teachers["sst2"], folder)
    record = json.loads((folder / "teacher_finetune.json").read_text())
    (folder / "teacher_finetune.json").write_text(json.dumps(record["config"]))  # as it was
    before = (folder / "model.safetensors").stat().st_mtime_ns
    tiny_teacher_finetune("sst2", folder, tiny_bert, tiny_glue)
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


def test_killed_run_resumes_mid_epoch(tmp_path, tiny_bert, tiny_glue, monkeypatch):
    import pipeline.tasks.teacher_finetune as tf

    kw = dict(epochs=1, lr=1e-3, save_every=4)
    real = tf._save_checkpoint

    def die_after_first(*a, **k):  # type: ignore[no-untyped-def]
        real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(tf, "_save_checkpoint", die_after_first)
    with pytest.raises(KeyboardInterrupt):
        tiny_teacher_finetune("sst2", tmp_path / "t", tiny_bert, tiny_glue, **kw)
    monkeypatch.undo()
    latest = json.loads((tmp_path / "t" / "checkpoint" / "latest.json").read_text())["dir"]
    state = json.loads((tmp_path / "t" / "checkpoint" / latest / "state.json").read_text())
    assert state["batch"] == 4 and state["epoch"] == 0 and state["step"] == 4
    # The same command again continues from the checkpoint (no --resume needed).
    metrics = tiny_teacher_finetune("sst2", tmp_path / "t", tiny_bert, tiny_glue, **kw)
    assert metrics["epochs_run"] == 1 and (tmp_path / "t" / "model.safetensors").is_file()
    assert not (tmp_path / "t" / "checkpoint").exists()


def test_cached_logits_match_the_teacher_on_joint_pairs(tmp_path, tiny_teachers, tiny_glue):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tiny_teachers["mrpc"]
    embed_any(**embed_cfg(tmp_path / "c", tiny_glue, folder, "mrpc"))
    cache = open_cache(tmp_path / "c")
    info = read_task(cache)
    assert info.logits is not None and info.logits["finetuning_task"] == "mrpc"
    logits = read_logits(cache, "dev")
    examples = read_examples(cache, "dev")
    assert logits.shape == (examples.num_rows, 2)
    texts = _texts(cache)
    first = [texts[i] for i in examples.column("sentence1_id").to_pylist()]
    second = [texts[i] for i in examples.column("sentence2_id").to_pylist()]
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        want = model(**tok(first, second, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(logits, want, atol=1e-4)
    # The cache's sentence vectors come from the fine-tuned encoder, one per unique text.
    assert cache.num_rows == len(set(texts)) and "mean" in cache.poolings


def test_logits_need_a_matching_classification_head(tmp_path, tiny_bert, tiny_teachers, tiny_glue):
    with pytest.raises(SraError, match="no trained classification head"):
        embed_any(**embed_cfg(tmp_path / "a", tiny_glue, tiny_bert, "sst2"))
    with pytest.raises(SraError, match="1 output labels but sst2 has 2"):
        embed_any(**embed_cfg(tmp_path / "b", tiny_glue, tiny_teachers["stsb"], "sst2"))
    with pytest.raises(SraError, match="fine-tuned on 'mrpc', not sst2"):
        embed_any(**embed_cfg(tmp_path / "c", tiny_glue, tiny_teachers["mrpc"], "sst2"))
    with pytest.raises(SraError, match="glue:TASK"):
        embed_any(corpus="x.txt", out=tmp_path / "d", logits=True)
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_cache_whose_logits_came_from_another_task_is_refused(tmp_path, tiny_teachers, tiny_glue):
    embed_any(**embed_cfg(tmp_path / "c", tiny_glue, tiny_teachers["sst2"], "sst2"))
    cache = tmp_path / "c"
    task_json = Path(cache) / "task.json"
    info = json.loads(task_json.read_text())
    info["logits"]["finetuning_task"] = "cola"
    data = (json.dumps(info, indent=2) + "\n").encode()
    task_json.write_bytes(data)
    manifest = json.loads((Path(cache) / "manifest.json").read_text())
    import hashlib

    manifest["files"]["task.json"] = hashlib.sha256(data).hexdigest()
    (Path(cache) / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="fine-tuned on 'cola', not sst2"):
        read_task(open_cache(cache, checksums=False))


def test_killed_during_logits_resumes_without_redoing_done_splits(
    tmp_path, tiny_teachers, tiny_glue, monkeypatch
):
    import pipeline.tasks.logits as logits_mod

    real, seen = logits_mod.example_logits, []

    def die_on_second(teacher, examples, budget):  # type: ignore[no-untyped-def]
        seen.append(len(examples))
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(teacher, examples, budget)

    monkeypatch.setattr(logits_mod, "example_logits", die_on_second)
    cfg = embed_cfg(tmp_path / "c", tiny_glue, tiny_teachers["sst2"], "sst2")
    with pytest.raises(KeyboardInterrupt):
        embed_any(**cfg)
    assert not (tmp_path / "c" / "task.json").exists()  # task.json is written last
    seen.clear()
    manifest = embed_any(**cfg)
    assert manifest.status == "complete" and seen == [40]  # only dev was left to do
    assert read_logits(open_cache(tmp_path / "c"), "train").shape == (160, 2)


def _texts(cache) -> list[str]:  # type: ignore[no-untyped-def]
    texts = [""] * cache.num_rows
    for shard in range(len(cache.shards)):
        table = cache.read_shard(shard, ["id", "text"])
        ids, texts_ = table.column("id").to_pylist(), table.column("text").to_pylist()
        for i, t in zip(ids, texts_, strict=True):
            texts[i] = t
    return texts


@pytest.mark.slow
def test_cli_one_line_errors(tmp_path, tiny_bert, tiny_glue):
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True
        )

    bad = run("teacher-finetune", "--task", "nope", "--out", str(tmp_path / "t"))
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0
    assert "unknown GLUE task" in bad.stderr
    bad = run(
        "embed",
        "--corpus",
        "glue:sst2",
        "--glue-dir",
        str(tiny_glue),
        "--teacher",
        str(tiny_bert),
        "--outputs",
        "logits,mean",
        "--out",
        str(tmp_path / "c"),
    )
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error:")
    assert "no trained classification head" in bad.stderr
    assert not (tmp_path / "c").exists()


def test_a_finetuned_teacher_also_serves_as_a_plain_encoder(tiny_teachers):
    # `pipeline bench student --teacher teachers/sst2-minilm` and plain `embed` load it so.
    from pipeline.teacher import Teacher

    plain = Teacher(str(tiny_teachers["sst2"]), dtype="fp32", device="cpu")
    both = Teacher(str(tiny_teachers["sst2"]), dtype="fp32", device="cpu", logits=True)
    ids = [[2, 40, 41, 3], [2, 42, 3]]
    np.testing.assert_allclose(plain.encode(ids)["mean"], both.encode(ids)["mean"], atol=1e-6)
    assert both.logits(ids, [[0] * 4, [0] * 3]).shape == (2, 2)


def test_a_teacher_finetuned_on_another_task_keeps_its_encoder_but_not_its_head(
    tmp_path, tiny_teachers
):
    # Intermediate-task training (STILTs): --teacher teachers/sst2-... --task mrpc. Both heads
    # have two labels, so only the recorded task tells that this one means something else.
    from transformers import AutoModelForSequenceClassification

    from cache.tasks import get_task
    from pipeline.tasks.teacher_model import load_model

    source = AutoModelForSequenceClassification.from_pretrained(tiny_teachers["sst2"])

    def load(task: str):  # type: ignore[no-untyped-def]
        return load_model(str(tiny_teachers["sst2"]), get_task(task))[0]

    other, same = load("mrpc"), load("sst2")
    for name, p in source.named_parameters():
        head = not name.startswith(source.base_model_prefix)
        assert torch.equal(p, dict(other.named_parameters())[name]) != head, name
        assert torch.equal(p, dict(same.named_parameters())[name]), name
    assert other.config.finetuning_task == "mrpc"
    assert other.classifier.bias.abs().max() == 0
