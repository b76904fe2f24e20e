"""`finetune()` from task caches: learning, the four evaluation rows, resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from cache import open_cache
from cache.task_data import read_examples
from student import SraError
from student.finetune import FinetuneConfig, finetune
from student.train import TrainConfig, train
from tests.conftest import embed_any, write_glue
from tests.student.test_data import make_cache


def make_task_cache(root: Path, teacher: Path, task: str, glue: Path) -> Path:

    out = root / f"{task}-cache"
    embed_any(
        **dict(
            corpus=f"glue:{task}",
            glue_dir=str(glue),
            out=out,
            teacher=str(teacher),
            window=64,
            progress=False,
            dtype="fp32",
        )
    )
    return out


@pytest.fixture(scope="module")
def glue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, glue: Path) -> dict:
    root = tmp_path_factory.mktemp("task-caches")
    return {t: make_task_cache(root, tiny_bert, t, glue) for t in ("sst2", "mrpc", "stsb")}


def distil_tiny_student(root: Path, teacher: Path, n: int = 300, steps: int = 20) -> Path:
    """A tiny distilled student from a tiny wiki-style cache of the same teacher."""
    cache = make_cache(root, teacher, n=n)
    cfg = TrainConfig(
        cache=cache,
        out=root / "run",
        hidden_size=16,
        embedding_dim=16,
        batch_size=32,
        max_steps=steps,
        eval_every=10,
        checkpoint_every=0,
        bf16=False,
        progress=False,
    )
    return train(cfg)


@pytest.fixture(scope="module")
def student_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return distil_tiny_student(tmp_path_factory.mktemp("sra"), tiny_bert)


def make_small_student(task_cache: Path, folder: Path) -> Path:
    """An untrained small student over a task cache's vocabulary (fast to fine-tune)."""
    from student import StudentConfig, StudentEncoder

    cache = open_cache(task_cache)
    tokenizer = str(cache.tokenizer_path)
    vocab = Tokenizer.from_file(tokenizer).get_vocab_size(with_added_tokens=True)
    config = StudentConfig(vocab, embedding_dim=32, hidden_size=32, output_dim=cache.dim)
    torch.manual_seed(0)
    StudentEncoder(config, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fresh_student(tmp_path_factory: pytest.TempPathFactory, caches: dict) -> Path:
    return make_small_student(caches["sst2"], tmp_path_factory.mktemp("fresh") / "student")


def tiny(student: str, task: str, cache: Path, out: Path, **kw) -> FinetuneConfig:  # type: ignore[no-untyped-def]
    base = dict(epochs=6, batch_size=16, lr=3e-3, bf16=False, progress=False, patience=0)
    return FinetuneConfig(student=student, task=task, cache=cache, out=out, **(base | kw))


def test_task_cache_joins_examples_to_their_sentences(caches, glue):
    cache = open_cache(caches["mrpc"])
    examples = read_examples(cache, "dev")
    texts = cache.read_shard(0, ["id", "text"]).to_pydict()
    by_id = dict(zip(texts["id"], texts["text"], strict=True))
    rows = (glue / "MRPC" / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    for row, first, second, label in zip(
        rows,
        examples.column("sentence1_id").to_pylist(),
        examples.column("sentence2_id").to_pylist(),
        examples.column("label").to_pylist(),
        strict=True,
    ):
        quality, _, _, a, b = row.split("\t")
        assert (by_id[first], by_id[second], label) == (a, b, int(quality))
    assert cache.num_rows == len(set(by_id.values()))  # each text once


def test_student_learns_a_separable_task(tmp_path, caches, fresh_student):
    metrics = finetune(tiny(str(fresh_student), "sst2", caches["sst2"], tmp_path / "run"))
    assert metrics["accuracy"] >= 0.9, metrics
    out = tmp_path / "run"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["accuracy"] == metrics["accuracy"] and saved["task"] == "sst2"
    predictions = (out / "predictions-dev.tsv").read_text().splitlines()
    assert predictions[0] == "index\tprediction" and len(predictions) == 61
    assert {p.split("\t")[1] for p in predictions[1:]} <= {"negative", "positive"}
    from student import StudentEncoder

    dim = open_cache(caches["sst2"]).dim
    assert StudentEncoder.from_pretrained(out / "encoder").encode("red cat .").shape == (dim,)


@pytest.mark.parametrize("task, metric", [("mrpc", "accuracy"), ("stsb", "pearson")])
def test_pair_and_regression_tasks_learn(tmp_path, caches, fresh_student, task, metric):
    metrics = finetune(
        tiny(str(fresh_student), task, caches[task], tmp_path / task, epochs=8, lr=1e-2)
    )
    assert set(metrics) >= ({"f1", "accuracy"} if task == "mrpc" else {"pearson", "spearman"})
    assert metrics[metric] > 0.8, metrics


def test_sra_loss_and_the_scratch_student(tmp_path, caches, student_run):
    with_sra = finetune(
        tiny(str(student_run), "mrpc", caches["mrpc"], tmp_path / "sra", epochs=1, sra_weight=1)
    )
    assert 0 <= with_sra["f1"] <= 1
    finetune(tiny("scratch", "sst2", caches["sst2"], tmp_path / "scratch", epochs=1))
    config = json.loads((tmp_path / "scratch" / "encoder" / "config.json").read_text())
    assert (config["hidden_size"], config["embedding_dim"]) == (300, 300)  # the default student


def test_fine_tuning_sets_its_own_embedding_dropout(tmp_path, caches, fresh_student):
    from student import BiLSTMEncoder, StudentConfig, StudentEncoder

    undropped = tmp_path / "undropped"
    source = StudentEncoder.from_pretrained(fresh_student)
    config = StudentConfig(**{**source.config.to_dict(), "dropout": 0.0})
    model = BiLSTMEncoder(config)
    model.load_state_dict(source.model.state_dict())
    StudentEncoder(config, model, tokenizer=source.tokenizer).save_pretrained(undropped)

    def tuned_dropout(out: str, **kw) -> float:  # type: ignore[no-untyped-def]
        finetune(tiny(str(undropped), "sst2", caches["sst2"], tmp_path / out, epochs=1, **kw))
        return json.loads((tmp_path / out / "encoder" / "config.json").read_text())["dropout"]

    assert tuned_dropout("default") == 0.1  # the same for every row, whatever it was distilled with
    assert tuned_dropout("set", encoder_dropout=0.3) == 0.3
    assert tuned_dropout("own", encoder_dropout=None) == 0.0


def test_encoder_lr_sets_the_encoders_rate_apart_from_the_heads(tmp_path, caches, fresh_student):
    from safetensors.torch import load_file

    before = load_file(fresh_student / "model.safetensors")

    def moved(out: str, **kw) -> float:  # type: ignore[no-untyped-def]
        finetune(tiny(str(fresh_student), "sst2", caches["sst2"], tmp_path / out, epochs=1, **kw))
        after = load_file(tmp_path / out / "encoder" / "model.safetensors")
        return max((after[k] - before[k]).abs().max().item() for k in before)

    assert moved("same") > 1e-3  # the head's rate, 3e-3, for the encoder too
    assert moved("slow", encoder_lr=1e-9) < 1e-6  # the head learns, the encoder barely moves
    run = json.loads((tmp_path / "same" / "finetune.json").read_text())
    assert "encoder_lr" not in json.dumps(run)  # unset: runs from before the option keep their id
    with pytest.raises(SraError, match="--encoder-lr must be a positive number"):
        finetune(tiny(str(fresh_student), "sst2", caches["sst2"], tmp_path / "x", encoder_lr=0))


@pytest.mark.parametrize("student", ["teacher", "frozen"])
def test_frozen_rows_train_a_linear_head(tmp_path, caches, fresh_student, student):
    cfg = tiny(
        "teacher" if student == "teacher" else str(fresh_student),
        "sst2",
        caches["sst2"],
        tmp_path / student,
        freeze_encoder=student == "frozen",
        epochs=3,
    )
    metrics = finetune(cfg)
    assert 0 <= metrics["accuracy"] <= 1
    run = json.loads((tmp_path / student / "finetune.json").read_text())
    assert run["head"]["kind"] == "linear"
    assert (tmp_path / student / "encoder").exists() == (student == "frozen")


def test_rerun_is_a_no_op_and_resume_continues(tmp_path, caches, fresh_student):
    fresh = fresh_student
    cfg = tiny(str(fresh), "sst2", caches["sst2"], tmp_path / "run", epochs=2, select="last")
    first = finetune(cfg)
    assert (
        finetune(
            tiny(str(fresh), "sst2", caches["sst2"], tmp_path / "run", epochs=2, select="last")
        )
        == first
    )
    # An interrupted run: drop the outputs, keep the checkpoint after epoch 2 of 3.
    cfg3 = tiny(str(fresh), "sst2", caches["sst2"], tmp_path / "r3", epochs=3, select="last")
    full = finetune(cfg3)
    (tmp_path / "r3" / "metrics.json").unlink()
    with pytest.raises(SraError, match="--resume"):
        finetune(tiny(str(fresh), "sst2", caches["sst2"], tmp_path / "r3", epochs=3, select="last"))
    again = finetune(
        tiny(
            str(fresh),
            "sst2",
            caches["sst2"],
            tmp_path / "r3",
            epochs=3,
            select="last",
            resume=True,
        )
    )
    assert again["accuracy"] == full["accuracy"]


def test_bad_input(tmp_path, caches, fresh_student, tiny_bert):
    def run(**kw):  # type: ignore[no-untyped-def]
        base = dict(
            student=str(fresh_student), task="sst2", cache=caches["sst2"], out=tmp_path / "x"
        )
        return finetune(tiny(**(base | kw)))

    with pytest.raises(SraError, match="unknown GLUE task"):
        run(task="nope")
    with pytest.raises(SraError, match="holds mrpc"):
        run(cache=caches["mrpc"])
    wiki = make_cache(tmp_path / "wiki", tiny_bert, n=50)
    with pytest.raises(Exception, match="not a task cache"):
        run(cache=wiki)
    not_a_student = tmp_path / "empty"
    not_a_student.mkdir()
    with pytest.raises(SraError, match="config.json is missing"):
        run(student=str(not_a_student))
    with pytest.raises(SraError, match="sra-weight"):
        run(student="teacher", sra_weight=1.0)
    finetune(tiny(str(fresh_student), "sst2", caches["sst2"], tmp_path / "other", epochs=1))
    with pytest.raises(SraError, match="different finetune run"):
        finetune(tiny(str(fresh_student), "sst2", caches["sst2"], tmp_path / "other", epochs=2))
    (tmp_path / "other" / "finetune.json").write_bytes(b"\xff{not json")
    with pytest.raises(SraError, match="unreadable"):
        finetune(tiny(str(fresh_student), "sst2", caches["sst2"], tmp_path / "other", epochs=1))


def test_metrics_against_hand_computed_values():
    from cache.tasks import get_task
    from student.metrics import accuracy, f1, mcc, task_scores

    p, y = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    # tp 2, fp 1, fn 1, tn 1
    assert accuracy(p, y) == pytest.approx(3 / 5)
    assert f1(p, y) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert mcc(p, y) == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    assert mcc(np.ones(4), np.array([1, 0, 1, 0])) == 0.0
    assert set(task_scores(get_task("mrpc"), p, y)) == {"f1", "accuracy"}
    scores = task_scores(get_task("stsb"), np.array([0.1, 0.4, 0.3]), np.array([1.0, 3.0, 2.0]))
    assert scores["spearman"] == pytest.approx(1.0)


def test_a_cache_from_another_teacher_warns(tmp_path, caches, glue, student_run, capsys):
    from tests.conftest import build_tiny_bert

    other = build_tiny_bert(tmp_path / "other-teacher", seed=1)  # same vocabulary, new weights
    cache = make_task_cache(tmp_path, other, "sst2", glue)
    finetune(tiny(str(student_run), "sst2", cache, tmp_path / "run", epochs=1))
    assert "warning" not in capsys.readouterr().err  # the cache's vectors are not used
    finetune(tiny(str(student_run), "sst2", cache, tmp_path / "r2", epochs=1, sra_weight=1.0))
    assert "warning: the student was distilled from" in capsys.readouterr().err


def test_a_two_column_student_fine_tunes_and_its_sra_loss_needs_both_columns(tmp_path, caches):
    from student import StudentConfig, StudentEncoder

    cache = open_cache(caches["sst2"])
    tokenizer = str(cache.tokenizer_path)
    vocab = Tokenizer.from_file(tokenizer).get_vocab_size(with_added_tokens=True)
    config = StudentConfig(
        vocab, embedding_dim=16, hidden_size=16, output_dim=2 * cache.dim,
        teacher_pooling="mean,mean_layer1",
    )  # fmt: skip
    StudentEncoder(config, tokenizer=tokenizer).save_pretrained(tmp_path / "student")
    student = str(tmp_path / "student")
    metrics = finetune(tiny(student, "sst2", caches["sst2"], tmp_path / "ft", epochs=1))
    assert 0 <= metrics["accuracy"] <= 1
    with pytest.raises(SraError, match="pass --pooling mean,mean_layer1 with a task cache"):
        finetune(tiny(student, "sst2", caches["sst2"], tmp_path / "sra", epochs=1, sra_weight=1))
