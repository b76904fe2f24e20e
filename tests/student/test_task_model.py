"""`TaskModel`: a fine-tuned run folder loads alone and predicts what the run reported, for
single texts and pairs, classification, multi-label and regression; folders that are not task
models are one line each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cache.errors import SraError
from cache.tasks import TaskSpec
from student import StudentEncoder, TaskModel
from student.finetuning.metrics import task_scores
from tests.conftest import OWN_TASKS, REPO, make_task_cache, own_task_rows, write_glue
from tests.student.conftest import make_small_student
from tests.student.conftest import tiny_finetune as tiny


def dev_inputs(name: str) -> list:
    """The dev rows the fixture wrote, as TaskModel takes them (texts or pairs)."""
    rows = own_task_rows(name, 40, seed=1)
    if OWN_TASKS[name][1]:
        return [(r["text"], r["text_pair"]) for r in rows]
    return [r["text"] for r in rows]


def reported(run: Path) -> list[str]:
    """The run's own dev predictions (predictions-dev.tsv), in dev order."""
    lines = (run / "predictions-dev.tsv").read_text().splitlines()[1:]
    return [line.split("\t", 1)[1] for line in lines]


@pytest.mark.parametrize("name", list(OWN_TASKS))
def test_a_finetuned_folder_predicts_what_the_run_reported(own_task_models, name):
    _, _, run = own_task_models[name]
    model = TaskModel.from_pretrained(run)
    problem, pair, _ = OWN_TASKS[name]
    assert (model.problem, model.pair) == (problem, pair)
    predictions = model.predict(dev_inputs(name))
    if problem == "regression":
        assert isinstance(predictions, np.ndarray) and predictions.dtype == np.float32
        assert np.allclose(predictions, [float(x) for x in reported(run)], atol=1e-3)
    elif problem == "multilabel":
        assert ["|".join(p) for p in predictions] == reported(run)
    else:
        assert predictions == reported(run)
    # ... and so the loaded model scores what metrics.json says.
    rows = own_task_rows(name, 40, seed=1)
    task = model.task
    if problem == "regression":
        gold = np.array([r["label"] for r in rows])
        ours = predictions
    elif problem == "multilabel":
        gold = np.array([[int(label in r["label"]) for label in task.labels] for r in rows])
        ours = np.array([[int(label in p) for label in task.labels] for p in predictions])
    else:
        index = {label: i for i, label in enumerate(task.labels)}
        gold = np.array([index[r["label"]] for r in rows])
        ours = np.array([index[p] for p in predictions])
    metrics = json.loads((run / "metrics.json").read_text())
    for metric, value in task_scores(task, ours, gold).items():
        assert value == pytest.approx(metrics[metric], abs=1e-4), metric


def test_the_tasks_were_learned(own_task_models):
    """Not a test that cannot fail: each toy task is learnable, and is learned."""
    main = {}
    for name, (_, _, run) in own_task_models.items():
        task = TaskSpec.from_dict(json.loads((run / "task_model.json").read_text())["task"])
        main[name] = json.loads((run / "metrics.json").read_text())[task.main_metric]
    assert main["reviews"] > 0.9 and main["pairs"] > 0.8
    assert main["tickets"] > 0.8 and main["scores"] > 0.8


def test_probabilities_by_problem(own_task_models):
    reviews = TaskModel.from_pretrained(own_task_models["reviews"][2])
    texts = dev_inputs("reviews")
    p = reviews.predict_proba(texts)
    assert p.shape == (len(texts), 3) and p.dtype == np.float32
    assert np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert [reviews.labels[i] for i in p.argmax(axis=1)] == reviews.predict(texts)

    tickets = TaskModel.from_pretrained(own_task_models["tickets"][2])
    texts = dev_inputs("tickets")
    p = tickets.predict_proba(texts)  # one sigmoid per label: no sum to 1
    chosen = [tuple(tickets.labels[k] for k in np.flatnonzero(row > 0.5)) for row in p]
    assert chosen == tickets.predict(texts)

    scores = TaskModel.from_pretrained(own_task_models["scores"][2])
    with pytest.raises(SraError, match="regression task: it predicts scores"):
        scores.predict_proba(dev_inputs("scores"))


def test_inputs_one_or_many_texts_or_pairs(own_task_models):
    reviews = TaskModel.from_pretrained(own_task_models["reviews"][2])
    assert reviews.predict("the red cat") == reviews.predict(["the red cat"])[0]
    assert reviews.predict_proba("the red cat").shape == (3,)
    assert reviews.predict([]) == [] and reviews.predict_proba([]).shape == (0, 3)
    assert reviews.logits(["a", "b", "c"]).shape == (3, 3)
    with pytest.raises(SraError, match="reads single texts, not pairs"):
        reviews.predict([("a", "b")])
    with pytest.raises(SraError, match="input 1 is a int"):
        reviews.predict(["a", 3])

    pairs = TaskModel.from_pretrained(own_task_models["pairs"][2])
    one = ("the red cat", "a red dog")
    assert pairs.predict(one) == pairs.predict([one])[0] in ("same", "different")
    assert pairs.predict([list(one)]) == pairs.predict([one])
    with pytest.raises(SraError, match=r"reads sentence pairs: pass \(text, text_pair\)"):
        pairs.predict(["the red cat"])
    scores = TaskModel.from_pretrained(own_task_models["scores"][2])
    assert isinstance(scores.predict(one), float)


def test_the_folder_is_the_model_with_its_card(own_task_models):
    _, cache, run = own_task_models["tickets"]
    info = json.loads((run / "task_model.json").read_text())
    assert info["format"] == "sra-task-model" and info["encoder"] == "encoder"
    assert info["task"]["problem"] == "multilabel" and info["task"]["labels"] == [
        "bug",
        "docs",
        "ui",
    ]
    assert info["columns"] == {
        "text": "text",
        "pair": None,
        "label": "label",
        "label_separator": None,
    }
    assert info["head"] == {"kind": "mlp", "hidden": 512, "pair": False, "outputs": 3}
    assert info["trained"]["examples"] == {"train": 160, "dev": 40}
    card = (run / "README.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"| micro_f1 | {metrics['micro_f1']:.4f} |" in card
    assert "per second" in card and "TaskModel.from_pretrained" in card
    assert "train.jsonl" in card and "160 train" in card
    run_file = json.loads((run / "finetune.json").read_text())
    assert run_file["status"] == "complete" and run_file["speed"]["examples"] == 40


@pytest.mark.slow
def test_loading_and_predicting_needs_no_transformers(own_task_models):
    run = own_task_models["pairs"][2]
    code = (
        "import sys\n"
        "from student import TaskModel\n"
        f"m = TaskModel.from_pretrained({str(run)!r})\n"
        "print(m.predict([('the red cat', 'a red dog')])[0])\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() in ("same", "different")


def test_folders_that_are_not_task_models(own_task_models, tmp_path):
    _, cache, run = own_task_models["reviews"]
    with pytest.raises(SraError, match=r"is a student encoder, not a task model: .*StudentEncoder"):
        TaskModel.from_pretrained(run / "encoder")
    assert StudentEncoder.from_pretrained(run / "encoder").encode("a").ndim == 1
    with pytest.raises(SraError, match="does not exist"):
        TaskModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SraError, match="not a task model"):
        TaskModel.from_pretrained(tmp_path / "empty")
    # A head on the teacher's frozen vectors needs the teacher: refused, one line.
    frozen = tmp_path / "frozen"
    from cache.options import configure
    from student.finetuning.config import FinetuneConfig
    from student.finetuning.loop import finetune

    finetune(
        configure(
            FinetuneConfig,
            student="teacher",
            cache=cache,
            out=frozen,
            epochs=1,
            bf16=False,
            progress=False,
        )
    )
    assert json.loads((frozen / "task_model.json").read_text())["encoder"] is None
    with pytest.raises(SraError, match="teacher's frozen vectors .* never loads"):
        TaskModel.from_pretrained(frozen)
    # An unfinished run says how to finish it.
    record = json.loads((frozen / "finetune.json").read_text())
    (frozen / "task_model.json").unlink()
    (frozen / "finetune.json").write_text(json.dumps(record | {"status": "training"}))
    with pytest.raises(SraError, match="unfinished fine-tuning run"):
        TaskModel.from_pretrained(frozen)
    # A damaged head is named.
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(run, broken)
    (broken / "head.safetensors").write_bytes(b"not weights")
    with pytest.raises(SraError, match="head.safetensors is not this model's head"):
        TaskModel.from_pretrained(broken)


def test_a_glue_run_from_before_task_models_still_loads(tmp_path, tiny_bert):
    glue = write_glue(tmp_path / "glue", n_train=48, n_dev=16)
    cache = make_task_cache(tmp_path, tiny_bert, "mrpc", glue)
    student = make_small_student(cache, tmp_path / "student")
    run = tmp_path / "run"
    from student.finetuning.loop import finetune

    finetune(tiny(str(student), None, cache, run, epochs=1))
    before = TaskModel.from_pretrained(run)
    first = ["the red cat .", "a blue dog ."]
    expected = before.predict(list(zip(first, first[::-1], strict=True)))
    for name in ("task_model.json", "README.md"):
        (run / name).unlink()  # as runs made before task models were
    after = TaskModel.from_pretrained(run)
    assert after.task.name == "mrpc" and after.labels == ("not_equivalent", "equivalent")
    assert after.predict(list(zip(first, first[::-1], strict=True))) == expected
