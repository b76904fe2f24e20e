"""`finetune()` from task caches: learning, the four evaluation rows, the run-folder rule,
refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from cache import open_cache
from cache.task_data import read_examples
from student import SraError
from student.finetuning.loop import finetune
from tests.conftest import distil_tiny_student, make_cache, make_task_cache, write_glue
from tests.student.conftest import make_small_student
from tests.student.conftest import tiny_finetune as tiny


@pytest.fixture(scope="module")
def glue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, glue: Path) -> dict:
    root = tmp_path_factory.mktemp("task-caches")
    return {t: make_task_cache(root, tiny_bert, t, glue) for t in ("sst2", "mrpc", "stsb")}


@pytest.fixture(scope="module")
def student_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return distil_tiny_student(tmp_path_factory.mktemp("sra"), tiny_bert)


@pytest.fixture(scope="module")
def fresh_student(tmp_path_factory: pytest.TempPathFactory, caches: dict) -> Path:
    return make_small_student(caches["sst2"], tmp_path_factory.mktemp("fresh") / "student")


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
    # Unset, it is not part of the identity: runs from before the option keep theirs.
    assert "encoder_lr" not in json.dumps(run["config"])
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


def test_rerun_is_a_no_op_and_an_interrupted_run_resumes(
    tmp_path, caches, fresh_student, monkeypatch
):
    import student.finetuning.loop as loop

    def cfg(out: str):  # type: ignore[no-untyped-def]
        return tiny(str(fresh_student), "sst2", caches["sst2"], tmp_path / out, epochs=3)

    full = finetune(cfg("full"))
    before = (tmp_path / "full" / "head.safetensors").stat().st_mtime_ns
    assert finetune(cfg("full")) == full  # finished: its metrics, nothing retrained
    assert (tmp_path / "full" / "head.safetensors").stat().st_mtime_ns == before
    info = json.loads((tmp_path / "full" / "finetune.json").read_text())
    assert info["status"] == "complete" and info["head"]["kind"] == "mlp"
    assert not (tmp_path / "full" / "checkpoint").exists()

    # Killed after its second epoch's checkpoint: the same command continues from there.
    real = loop.save_checkpoint

    def save_then_stop(run, model, optimizer, state):  # type: ignore[no-untyped-def]
        real(run, model, optimizer, state)
        if state.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg("killed"))
    monkeypatch.undo()
    assert not (tmp_path / "killed" / "metrics.json").exists()
    assert finetune(cfg("killed")) == full
    epochs = [json.loads(x)["epoch"] for x in (tmp_path / "killed" / "metrics.jsonl").open()]
    assert epochs == [1, 2, 3]


def test_bad_input(tmp_path, caches, fresh_student, tiny_bert):
    def run(**kw):  # type: ignore[no-untyped-def]
        base = dict(
            student=str(fresh_student), task="sst2", cache=caches["sst2"], out=tmp_path / "x"
        )
        return finetune(tiny(**(base | kw)))

    with pytest.raises(SraError, match="--task nope but .* holds sst2"):
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
    with pytest.raises(SraError, match=r"different finetune run \(differs in: options.epochs\)"):
        finetune(tiny(str(fresh_student), "sst2", caches["sst2"], tmp_path / "other", epochs=2))
    (tmp_path / "other" / "finetune.json").write_bytes(b"\xff{not json")
    with pytest.raises(SraError, match="unreadable"):
        finetune(tiny(str(fresh_student), "sst2", caches["sst2"], tmp_path / "other", epochs=1))


def test_metrics_against_hand_computed_values():
    from cache.tasks import get_task
    from student.finetuning.metrics import accuracy, f1, mcc, task_scores

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


def test_a_run_folder_from_before_the_shared_format_is_recognised(tmp_path, caches, fresh_student):
    cfg = tiny(str(fresh_student), "sst2", caches["sst2"], tmp_path / "run", epochs=1)
    first = finetune(cfg)
    record = json.loads((tmp_path / "run" / "finetune.json").read_text())
    old = {"fingerprint": "0" * 16, "task": "sst2", "student": str(fresh_student)}
    old |= record["config"] | {"head": record["head"]}  # the identity's keys at the top
    (tmp_path / "run" / "finetune.json").write_text(json.dumps(old))
    before = (tmp_path / "run" / "head.safetensors").stat().st_mtime_ns
    assert finetune(cfg) == first  # finished (it has metrics.json): nothing retrained
    assert (tmp_path / "run" / "head.safetensors").stat().st_mtime_ns == before
    with pytest.raises(SraError, match=r"differs in: options\.epochs"):
        finetune(tiny(str(fresh_student), "sst2", caches["sst2"], tmp_path / "run", epochs=2))
