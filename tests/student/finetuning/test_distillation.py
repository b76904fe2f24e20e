"""Task-specific distillation in `finetune()`: the logit losses, the mix, augmented examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cache import CacheError, open_cache
from cache.task_data import AUGMENTED, read_task
from pipeline.tasks.augment import AugmentConfig
from student import SraError
from student.encoder import StudentEncoder
from student.finetuning.data import Examples, load_sentences
from student.finetuning.head import FinetuneModel, TaskHead, distill_loss
from student.finetuning.loop import finetune, task_loss
from tests.conftest import embed_any, make_task_cache
from tests.student.conftest import make_small_student
from tests.student.conftest import tiny_finetune as tiny


@pytest.fixture(scope="module")
def ft_caches(tmp_path_factory, tiny_teachers, tiny_glue) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """Task caches of the fine-tuned tiny teachers: logits, and augmented training examples."""
    root = tmp_path_factory.mktemp("ft-caches")
    out = {}
    for task, copies in (("sst2", 2), ("stsb", 1)):
        out[task] = root / task
        embed_any(
            **dict(
                corpus=f"glue:{task}",
                glue_dir=str(tiny_glue),
                out=out[task],
                teacher=str(tiny_teachers[task]),
                logits=True,
                augment=AugmentConfig(copies=copies),
                window=64,
                dtype="fp32",
                progress=False,
            )
        )
    return out


@pytest.fixture(scope="module")
def small_student(tmp_path_factory, ft_caches) -> Path:  # type: ignore[no-untyped-def]
    return make_small_student(ft_caches["sst2"], tmp_path_factory.mktemp("small") / "student")


def test_mse_and_kl_logit_losses():
    s, t = torch.randn(8, 3), torch.randn(8, 3)
    assert torch.allclose(distill_loss(s, t, "mse", 1.0), F.mse_loss(s, t))
    assert distill_loss(t, t, "kl", 2.0).abs() < 1e-6  # equal logits: nothing to learn
    p, q = F.log_softmax(s / 2, -1), F.softmax(t / 2, -1)
    want = (q * (q.log() - p)).sum(-1).mean() * 4  # KL(teacher || student) x T^2
    assert torch.allclose(distill_loss(s, t, "kl", 2.0), want, atol=1e-6)
    with pytest.raises(ValueError):
        distill_loss(s, t, "l1", 1.0)


def test_logits_alone_teach_the_task(tmp_path, ft_caches, small_student):
    # No gold labels at all (label weight 0): the fine-tuned teacher's logits on the train and
    # augmented examples are enough to learn the fixture's "red" rule.
    info = read_task(open_cache(ft_caches["sst2"]))
    assert info.splits[AUGMENTED] > 200
    cfg = tiny(
        str(small_student),
        "sst2",
        ft_caches["sst2"],
        tmp_path / "r",
        label_weight=0.0,
        distill_weight=1.0,
    )
    metrics = finetune(cfg)
    assert metrics["accuracy"] >= 0.9, metrics
    log = (tmp_path / "r" / "metrics.jsonl").read_text()
    assert log  # trained; the predictions skip the augmented split:
    assert not (tmp_path / "r" / f"predictions-{AUGMENTED}.tsv").exists()


def test_the_transfer_set_holds_the_augmented_examples(
    tmp_path, ft_caches, small_student, monkeypatch
):
    import student.finetuning.loop as ft

    sizes = []
    real = ft.example_batches

    def spy(examples, *a, **k):  # type: ignore[no-untyped-def]
        sizes.append(len(examples))
        return real(examples, *a, **k)

    monkeypatch.setattr(ft, "example_batches", spy)
    info = read_task(open_cache(ft_caches["sst2"]))
    for augmented in (True, False):
        sizes.clear()
        cfg = tiny(
            str(small_student),
            "sst2",
            ft_caches["sst2"],
            tmp_path / str(augmented),
            epochs=1,
            distill_weight=1.0,
            augmented=augmented,
        )
        finetune(cfg)
        want = info.splits["train"] + (info.splits[AUGMENTED] if augmented else 0)
        assert sizes[0] == want


def test_regression_distils_the_scaled_score(tmp_path, ft_caches, small_student):
    # Logits alone (no gold scores): the student's predicted scores (head x 5) land on the
    # teacher's. The tiny teacher cannot learn the fixture's pair rule and predicts about
    # the mean score for every pair, so gold is no yardstick here; a missing or doubled /5
    # would put the student's scores far off the teacher's (~2.5 of 5).
    from cache.task_data import read_logits

    cfg = tiny(
        str(small_student),
        "stsb",
        ft_caches["stsb"],
        tmp_path / "r",
        epochs=8,
        lr=1e-2,
        label_weight=0.0,
        distill_weight=1.0,
    )
    finetune(cfg)
    rows = (tmp_path / "r" / "predictions-dev.tsv").read_text().splitlines()[1:]
    student = np.array([float(r.split("\t")[1]) for r in rows])
    teacher = read_logits(open_cache(ft_caches["stsb"]), "dev")[:, 0]
    assert teacher.mean() > 1.0
    assert np.abs(student - teacher).mean() < 0.15


def test_regression_targets_are_the_teachers_score_over_five(ft_caches, small_student):
    from cache.tasks import get_task

    cache = open_cache(ft_caches["stsb"])
    sentences = load_sentences(cache, "mean")
    ex = Examples(np.arange(3), np.full(3, np.nan, np.float32), np.arange(3), np.arange(3))
    cfg = tiny(str(small_student), "stsb", Path(), Path(), distill_weight=1.0)
    out = torch.full((3,), 0.6, requires_grad=True)  # a head that always predicts 0.6
    vectors = (torch.zeros(3, cache.dim), torch.zeros(3, cache.dim))
    teacher = np.full((3, 1), 3.0, np.float32)  # the teacher says 3.0 of 5: target 0.6
    task = get_task("stsb")
    loss = task_loss(cfg, task, out, ex, np.arange(3), teacher, vectors, sentences)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    teacher[:] = 4.0  # target 0.8: squared error 0.04
    loss = task_loss(cfg, task, out, ex, np.arange(3), teacher, vectors, sentences)
    assert loss.item() == pytest.approx(0.04, abs=1e-5)


def test_bad_distillation_options(tmp_path, ft_caches, small_student, tiny_bert, tiny_glue):
    plain = make_task_cache(tmp_path, tiny_bert, "sst2", tiny_glue)
    with pytest.raises(CacheError, match="holds no teacher logits"):
        finetune(tiny(str(small_student), "sst2", plain, tmp_path / "a", distill_weight=1.0))
    bad = [
        (dict(distill_loss="kl", task="stsb"), "kl needs classes"),
        (dict(distill_loss="js"), "--distill-loss must be one of"),
        (dict(label_weight=0.0), "nothing to learn"),
        (dict(distill_weight=-1.0), "--distill-weight must be >= 0"),
    ]
    for kw, message in bad:
        task = kw.pop("task", "sst2")
        with pytest.raises(SraError, match=message):
            finetune(tiny(str(small_student), task, ft_caches[task], tmp_path / "b", **kw))
    assert not (tmp_path / "b").exists()


def test_unlabelled_rows_add_no_label_loss(ft_caches, small_student):
    from dataclasses import replace

    from cache.tasks import get_task

    cache = open_cache(ft_caches["sst2"])
    task = get_task("sst2")
    sentences = load_sentences(cache, "mean")
    enc = StudentEncoder.from_pretrained(small_student)
    model = FinetuneModel(enc.model, TaskHead(cache.dim, False, 2, "mlp", 16, 0.0))
    ex = Examples(np.arange(4), np.array([-1, -1, -1, -1]), np.arange(4), None)
    cfg = tiny(str(small_student), "sst2", Path(), Path())
    rows = np.arange(4)
    u, v = model.vectors(ex, rows, sentences, None, 0, torch.device("cpu"))
    out = model.head(u, v).float()
    loss = task_loss(cfg, task, out, ex, rows, None, (u, v), sentences)
    assert loss.item() == 0.0
    logits = np.zeros((4, 2), np.float32)
    cfg = replace(cfg, distill_weight=1.0)
    loss = task_loss(cfg, task, out, ex, rows, logits, (u, v), sentences)
    assert loss.item() > 0 and loss.requires_grad
