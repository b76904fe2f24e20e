"""The bi-LM loss beside distillation (`train --lm-weight`): no peeking, the sampled softmax,
learning, exact resume, refusals, and a saved student without the head."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cache import open_cache
from cache.options import configure
from student import SraError, StudentEncoder, TrainConfig, train
from student.config import StudentConfig
from student.model import BiLSTMEncoder
from student.training.objectives.bilm import (
    BiLM,
    BiLMOptions,
    bilm_head,
    draw,
    lm_loss,
    predictions,
    sampling_distribution,
    unigram_counts,
)
from tests.conftest import make_cache
from tests.student.conftest import (
    assert_same_weights,
    interrupt_after_checkpoint,
    metrics,
    weights,
)
from tests.student.conftest import tiny_train as tiny


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return make_cache(tmp_path_factory.mktemp("lm"), tiny_bert)


def small(vocab: int = 40, samples: int = 8) -> tuple[BiLSTMEncoder, torch.nn.Module]:
    torch.manual_seed(0)
    model = BiLSTMEncoder(
        StudentConfig(vocab_size=vocab, embedding_dim=6, hidden_size=5, output_dim=4, dropout=0)
    )
    probs = sampling_distribution(np.arange(vocab) + 1, pad_id=0)
    return model, bilm_head(model, probs, samples)


def test_no_state_has_read_the_token_it_predicts():
    model, head = small()
    ids = torch.tensor([[1, 5, 7, 9, 11, 2], [1, 6, 8, 2, 0, 0]])
    lengths = torch.tensor([6, 4])
    changed = ids.clone()
    changed[0, 3] = 30  # token 3 of row 0

    def queries(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, n, out = model.eval().states(x, lengths)
        return predictions(head, out, i, n)

    (qa, ta), (qb, tb) = queries(ids), queries(changed)
    # Token 3 is the target of forward t = 2 and of backward t = 4, nothing else.
    assert (ta != tb).nonzero().flatten().tolist() == [2, 11]
    # Row 0 gives 5 predictions per direction, row 1 gives 3; forward ones come first, in
    # row-major order of (row, t): row 0 t = 0..4, then row 1 t = 0..2.
    assert len(ta) == 2 * (5 + 3)
    fwd_targets = ta[:8].tolist()
    assert fwd_targets == [5, 7, 9, 11, 2, 6, 8, 2]
    assert ta[8:].tolist() == [1, 5, 7, 9, 11, 1, 6, 8]
    same = (qa - qb).abs().amax(dim=1) < 1e-6
    # Forward: predicting tokens 1..3 of row 0 (t = 0, 1, 2) reads only tokens before 3.
    assert same[:3].all() and not same[3:5].any()
    # Backward: predicting tokens 3..4 of row 0 (backward t = 3, 4) reads only tokens after 3.
    assert not same[8:11].any() and same[11:13].all()
    assert same[5:8].all() and same[13:].all()  # the other row is untouched


@torch.no_grad()
def test_sampled_softmax_matches_a_hand_computed_loss():
    model, head = small(samples=6)
    head.bias.normal_()
    ids = torch.tensor([[1, 5, 7, 2], [1, 9, 2, 0]])
    lengths = torch.tensor([4, 3])
    negatives = torch.tensor([5, 3, 3, 9, 20, 2])
    i, n, out = model.eval().states(ids, lengths)
    loss = lm_loss(head, out, i, n, negatives, model.embedding.weight)

    queries, targets = predictions(head, out, i, n)
    table, bias = model.embedding.weight, head.bias
    log_q = torch.log(head.probs * 6)  # by hand, not head.log_count
    total = 0.0
    for q, y in zip(queries, targets.tolist(), strict=True):
        kept = [y] + [j for j in negatives.tolist() if j != y]  # accidental hits removed
        scores = [float(q @ table[j] + bias[j] - log_q[j]) for j in kept]
        total += math.log(sum(math.exp(s) for s in scores)) - scores[0]
    assert float(loss) == pytest.approx(total / len(targets), rel=1e-5)


def test_unigram_counts_and_sampling(cache_dir):
    cache = open_cache(cache_dir)
    vocab = 1 + max(max(row) for s in range(len(cache.shards)) for row in _ids(cache, s))
    counts = unigram_counts(cache, vocab)
    tokens = sum(len(v) for s in range(len(cache.shards)) for v in _ids(cache, s))
    assert counts.sum() == tokens
    probs = sampling_distribution(counts, pad_id=0)
    assert float(probs[0]) == 0 and float(probs.sum()) == pytest.approx(1.0)
    assert bool((probs[1:] > 0).all())  # unseen ids keep a floor: log q stays finite


def _ids(cache, shard):  # type: ignore[no-untyped-def]
    return cache.read_shard(shard, ["input_ids"]).column("input_ids").to_pylist()


def test_training_with_the_lm_learns_both_and_saves_only_the_student(tmp_path, cache_dir):
    run = train(tiny(cache_dir, tmp_path / "run", epochs=3, lm_weight=0.5, lm_samples=16))
    trained, val = metrics(run)
    lm = [x["lm_loss"] for x in trained]
    assert np.mean(lm[-5:]) < np.mean(lm[:5]) - 0.2
    assert val[-1]["val_cos"] > val[0]["val_cos"]
    assert not any(k.startswith("lm.") or k.startswith("student.") for k in weights(run))
    enc = StudentEncoder.from_pretrained(run)
    assert enc.encode(["a sentence"]).shape == (1, enc.config.output_dim)
    identity = json.loads((run / "run.json").read_text())["config"]
    assert identity["lm"] == {"weight": 0.5, "samples": 16}

    plain = train(tiny(cache_dir, tmp_path / "plain", max_steps=2))
    assert "lm" not in json.loads((plain / "run.json").read_text())["config"]


def test_resume_with_the_lm_gives_the_same_weights(tmp_path, cache_dir, monkeypatch):
    opts = dict(epochs=2, checkpoint_every=7, lm_weight=0.5, lm_samples=16, dropout=0.3)
    reference = train(tiny(cache_dir, tmp_path / "ref", **opts))

    interrupt_after_checkpoint(monkeypatch, 14)
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        train(tiny(cache_dir, out, **opts))
    ckpt = out / "checkpoint" / "step-000000014" / "model.safetensors"
    assert any(k.startswith("lm.") for k in _keys(ckpt))
    monkeypatch.undo()
    train(tiny(cache_dir, out, **opts))  # resumes
    assert_same_weights(reference, out)


def _keys(path: Path) -> list[str]:
    import safetensors

    with safetensors.safe_open(str(path), "pt") as f:
        return list(f.keys())


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (dict(lm_weight=0.5, layers=2), "--lm-weight needs --layers 1"),
        (dict(lm_weight=-1.0), "--lm-weight must be a number >= 0"),
        (dict(lm_weight=0.5, lm_samples=0), "--lm-samples must be >= 1"),
    ],
)
def test_refusals(tmp_path, cache_dir, opts, message):
    with pytest.raises(SraError, match=message):
        train(configure(TrainConfig, cache=cache_dir, out=tmp_path / "run", **opts))
    assert not (tmp_path / "run").exists()


@torch.no_grad()
def test_the_objective_runs_the_student_once_and_gives_its_vectors():
    model, head = small()
    model.eval()
    lm = BiLM(BiLMOptions(weight=0.5, samples=8), head, seed=0)
    ids = torch.tensor([[1, 5, 7, 2], [1, 9, 2, 0]])
    lengths = torch.tensor([4, 3])
    negatives = draw(head, torch.Generator().manual_seed(0))
    vectors, side = lm.run(model, head, ids, lengths, negatives)
    assert torch.allclose(vectors, model(ids, lengths)) and side["lm_loss"].dim() == 0
    share, logged = lm.loss(vectors, vectors, side)
    assert float(share) == pytest.approx(0.5 * float(side["lm_loss"]))
    assert set(logged) == {"lm_loss"}
