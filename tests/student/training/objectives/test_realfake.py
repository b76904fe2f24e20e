"""The real-vs-corrupted loss beside distillation (`train --rf-weight`): edits that respect
words and end tokens, learning, exact resume, refusals, and a saved student without the head."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from cache.options import configure
from student import SraError, StudentEncoder, TrainConfig, train
from student.config import StudentConfig
from student.model import BiLSTMEncoder
from student.training.objectives.realfake import (
    CONTINUES,
    PUNCTUATION,
    corrupt,
    replace_tokens,
    sentence_head,
    sentence_loss,
    token_head,
    token_kinds,
    token_loss,
)
from tests.conftest import build_tiny_tokenizer, make_cache
from tests.student.conftest import (
    assert_same_weights,
    interrupt_after_checkpoint,
    metrics,
    weights,
)
from tests.student.conftest import tiny_train as tiny


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    """A cache of sentences with a fixed word order, so corrupted copies can be told apart
    (the shared test corpus is random words, where any order is as real as any other)."""
    lines = [
        f"the {a} {n} {v} to the {m} ."
        for a, n, v, m in itertools.product(
            ["red", "blue", "green", "small", "large"],
            ["cat", "dog", "house", "tree", "river", "city"],
            ["ran", "sat"],
            ["mat", "water", "city", "house", "tree", "river"],
        )
    ]
    return make_cache(tmp_path_factory.mktemp("rf"), tiny_bert, lines=lines)


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    path = tmp_path_factory.mktemp("tok")
    build_tiny_tokenizer(path)
    return Tokenizer.from_file(str(path / "tokenizer.json"))


def _batch(tok: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    rows = [tok.encode(t).ids for t in texts]
    ids = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, np.array([len(r) for r in rows])


def _words(tok: Tokenizer, ids: np.ndarray) -> list[str]:
    """The row's words: each token with the ``##`` pieces after it glued back on."""
    words: list[str] = []
    for token in (tok.id_to_token(int(i)) for i in ids):
        if token.startswith("##") and words:
            words[-1] += token[2:]
        else:
            words.append(token)
    return words


def test_token_kinds(tok):
    kinds = token_kinds(tok, tok.get_vocab_size())
    vocab = tok.get_vocab()
    assert kinds[vocab["##a"]] == CONTINUES
    assert kinds[vocab["."]] == PUNCTUATION and kinds[vocab[","]] == PUNCTUATION
    assert kinds[vocab["cat"]] == 0 and kinds[vocab["[CLS]"]] == 0 and kinds[vocab["#"]] != 0


def test_every_edit_keeps_words_whole_and_the_ends_in_place(tok):
    # "zq" and "xk" are not in the vocabulary: each is a word of two or more pieces.
    texts = ["the zq cat sat on the xk mat .", "a dog ran fast to the river .", "red tree ."]
    ids, lengths = _batch(tok, texts)
    kinds = token_kinds(tok, tok.get_vocab_size())
    vocab = set(" ".join(texts).split())
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    seen = Counter()
    for seed in range(60):
        fake, fake_lengths = corrupt(ids, lengths, kinds, 0, np.random.default_rng(seed))
        assert fake.shape[0] == 3 and (fake[:, 0] == cls).all()
        for b in range(3):
            row, real = fake[b, : fake_lengths[b]], ids[b, : lengths[b]]
            assert row[-1] == sep and row[-2] == tok.token_to_id(".")  # final stop stays
            assert (fake[b, fake_lengths[b] :] == 0).all()
            assert len(row) != len(real) or not np.array_equal(row, real), "an edit must change"
            words = _words(tok, row[1:-1])
            assert set(words) <= vocab, words  # no word split, none invented
            change = len(words) - len(texts[b].split())
            seen["delete" if change < 0 else "repeat" if change > 0 else "same-length"] += 1
    assert seen["delete"] and seen["repeat"] and seen["same-length"]


def test_a_two_token_row_is_left_alone_and_a_one_word_row_still_changes(tok):
    ids, lengths = _batch(tok, ["", "cat ."])
    fake, fake_lengths = corrupt(ids, lengths, token_kinds(tok, 400), 0, np.random.default_rng(0))
    assert list(fake[0, : fake_lengths[0]]) == list(ids[0, :2])
    assert not np.array_equal(fake[1, : fake_lengths[1]], ids[1, : lengths[1]])


def _tiny_student() -> BiLSTMEncoder:
    torch.manual_seed(0)
    return BiLSTMEncoder(
        StudentConfig(vocab_size=40, embedding_dim=6, hidden_size=5, output_dim=4, dropout=0)
    )


def test_token_replacement_keeps_lengths_ends_and_whole_words(tok):
    texts = ["the zq cat sat on the xk mat .", "a dog ran fast to the river .", "red tree ."]
    ids, lengths = _batch(tok, texts)
    kinds = token_kinds(tok, tok.get_vocab_size())
    one_piece = {w for w in " ".join(texts).split() if len(tok.encode(w).ids) == 3} - {"."}
    replaced_total = 0
    for seed in range(40):
        fake, replaced = replace_tokens(ids, lengths, kinds, np.random.default_rng(seed))
        assert fake.shape == ids.shape and replaced.shape == ids.shape
        assert (replaced == (fake != ids)).all()
        assert replaced[:, 0].sum() == 0 and (fake[:, -1] == ids[:, -1]).all()  # ends, padding
        for b in range(3):
            n = int(lengths[b])
            assert fake[b, n - 1] == ids[b, n - 1] and fake[b, n - 2] == ids[b, n - 2]  # [SEP] .
            for i in np.flatnonzero(replaced[b]):
                # A one-piece word in for a one-piece word: the multi-piece words stay whole.
                assert tok.id_to_token(int(ids[b, i])) in one_piece
                assert tok.id_to_token(int(fake[b, i])) in one_piece
        replaced_total += int(replaced.sum())
    assert replaced_total > 40  # at least one per row most of the time


def test_token_rf_gives_the_students_vectors_and_a_balanced_accuracy():
    model = _tiny_student().eval()
    head = token_head(model, hidden=8)
    ids, lengths = torch.tensor([[1, 5, 7, 2], [1, 9, 2, 0]]), torch.tensor([4, 3])
    fake = torch.tensor([[1, 9, 7, 2], [1, 5, 2, 0]])
    vectors, loss, acc = token_loss(model, head, ids, lengths, fake, fake != ids)
    assert torch.allclose(vectors, model(ids, lengths), atol=1e-6)
    assert loss.dim() == 0 and 0 <= float(acc) <= 1
    # A head that says "kept" everywhere scores exactly 0.5, whatever the share replaced.
    with torch.no_grad():
        head.net[-1].weight.zero_()
        head.net[-1].bias.fill_(-5.0)
    assert float(token_loss(model, head, ids, lengths, fake, fake != ids)[2]) == pytest.approx(0.5)


def test_training_with_token_rf_learns_to_spot_replaced_words(tmp_path, cache_dir):
    opts = dict(epochs=4, rf_weight=1.0, rf_level="token")
    run = train(tiny(cache_dir, tmp_path / "run", **opts))
    trained, val = metrics(run)
    acc = [x["rf_acc"] for x in trained]
    assert np.mean(acc[-5:]) > 0.65 > np.mean(acc[:3])
    assert not any(k.startswith(("rf.", "student.")) for k in weights(run))
    identity = json.loads((run / "run.json").read_text())["config"]
    assert identity["rf"]["level"] == "token"


def test_sentence_rf_gives_the_students_vectors_and_a_loss():
    model = _tiny_student().eval()
    head = sentence_head(model, hidden=8)
    ids, lengths = torch.tensor([[1, 5, 7, 2], [1, 9, 2, 0]]), torch.tensor([4, 3])
    fake, fake_lengths = torch.tensor([[1, 7, 5, 9, 2]]), torch.tensor([5])
    vectors, loss, acc = sentence_loss(
        model, head, ids, lengths, fake.expand(2, -1), fake_lengths.expand(2)
    )
    assert torch.allclose(vectors, model(ids, lengths), atol=1e-6)
    assert loss.dim() == 0 and 0 <= float(acc) <= 1


def test_training_with_rf_learns_to_tell_and_saves_only_the_student(tmp_path, cache_dir):
    run = train(tiny(cache_dir, tmp_path / "run", epochs=4, rf_weight=1.0))
    trained, val = metrics(run)
    acc = [x["rf_acc"] for x in trained]
    assert np.mean(acc[-5:]) > 0.65 > np.mean(acc[:3])
    assert val[-1]["val_cos"] > val[0]["val_cos"]
    assert not any(k.startswith(("rf.", "student.")) for k in weights(run))
    enc = StudentEncoder.from_pretrained(run)
    assert enc.encode(["a sentence"]).shape == (1, enc.config.output_dim)
    identity = json.loads((run / "run.json").read_text())["config"]
    assert identity["rf"]["weight"] == 1.0


def test_resume_with_rf_gives_the_same_weights(tmp_path, cache_dir, monkeypatch):
    opts = dict(epochs=2, checkpoint_every=7, rf_weight=1.0, dropout=0.3)
    reference = train(tiny(cache_dir, tmp_path / "ref", **opts))
    interrupt_after_checkpoint(monkeypatch, 14)
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        train(tiny(cache_dir, out, **opts))
    monkeypatch.undo()
    train(tiny(cache_dir, out, **opts))  # resumes
    assert_same_weights(reference, out)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (dict(rf_weight=-1.0), "--rf-weight must be a number >= 0"),
        (dict(rf_weight=1.0, lm_weight=0.1), "cannot be combined"),
        (dict(rf_weight=1.0, rf_level="word"), "--rf-level must be sentence or token"),
    ],
)
def test_refusals(tmp_path, cache_dir, opts, message):
    with pytest.raises(SraError, match=message):
        train(configure(TrainConfig, cache=cache_dir, out=tmp_path / "run", **opts))
    assert not (tmp_path / "run").exists()
