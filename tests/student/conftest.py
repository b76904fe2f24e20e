"""Fixtures for the student tests: a tiny in-memory BERT-style WordPiece tokenizer."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from student import StudentConfig, StudentEncoder

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the",
    "a",
    "an",
    "cat",
    "dog",
    "bird",
    "fish",
    "sat",
    "ran",
    "flew",
    "swam",
    "on",
    "in",
    "under",
    "over",
    "mat",
    "tree",
    "river",
    "sky",
    "house",
    "big",
    "small",
    "red",
    "blue",
    "green",
    "happy",
    "sad",
    "quickly",
    "slowly",
    "and",
    "or",
    "but",
    "is",
    "was",
    "are",
    "were",
    "sentence",
    "another",
    "one",
    "this",
    "that",
    "it",
    "he",
    "she",
    "they",
    "we",
]
PIECES = ["##s", "##ed", "##ing", "##ly", ".", ",", "!", "?"]


def build_tokenizer() -> Tokenizer:
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS + PIECES)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


@pytest.fixture(autouse=True, scope="package")
def _single_thread():
    """These models are tiny: one thread is fastest, and it keeps the tests quick when other
    processes compete for the (two) cores, where OpenMP thread hand-offs crawl."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tokenizer() -> Tokenizer:
    return build_tokenizer()


@pytest.fixture
def tiny_config(tokenizer: Tokenizer) -> StudentConfig:
    return StudentConfig(
        vocab_size=tokenizer.get_vocab_size(),
        embedding_dim=16,
        hidden_size=12,
        output_dim=10,
        max_length=16,
        dropout=0.0,
        teacher="tiny-test-teacher",
    )


@pytest.fixture
def tiny_encoder(tiny_config: StudentConfig, tokenizer: Tokenizer) -> StudentEncoder:
    torch.manual_seed(0)
    return StudentEncoder(tiny_config, tokenizer=tokenizer)


SENTENCES = [
    "The cat sat on the mat.",
    "A dog ran.",
    "",
    "Birds flew over the big green tree and the small red house quickly!",
    "She is happy",
    "they were swimming in the river, but the fish swam slowly.",
    "It",
    "xyzzy unknown words here",
    "The cat sat on the mat.",
    "an",
]


# -- helpers for the training and fine-tuning tests (import them from here) ----------------


def tiny_train(cache, out, **kw):  # type: ignore[no-untyped-def]
    """A TrainConfig for a few dozen fast steps of a very small student, fp32 (exact, and
    bf16-free CPUs too); ``kw``: more options, by their command-line names."""
    from cache.options import configure
    from student import TrainConfig

    base = dict(
        hidden_size=16,
        embedding_dim=16,
        batch_size=32,
        token_budget=800,
        val_fraction=0.05,
        lr=1e-2,
        eval_every=10,
        checkpoint_every=0,
        log_every=1,
        bf16=False,
        progress=False,
    )
    return configure(TrainConfig, cache=cache, out=out, **(base | kw))


def tiny_finetune(student, task, cache, out, **kw):  # type: ignore[no-untyped-def]
    """A FinetuneConfig for a few quick epochs; ``kw``: more options, by their names."""
    from cache.options import configure
    from student.finetuning.config import FinetuneConfig

    base = dict(epochs=6, batch_size=16, lr=3e-3, bf16=False, progress=False, patience=0)
    options = dict(student=student, task=task, cache=cache, out=out)
    return configure(FinetuneConfig, **(options | base | kw))


def metrics(run):  # type: ignore[no-untyped-def]
    """(training lines, validation lines) of a run's metrics.jsonl."""
    import json

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if "loss" in x], [x for x in lines if "val_cos" in x]


def weights(run):  # type: ignore[no-untyped-def]
    import safetensors.torch

    return safetensors.torch.load_file(str(run / "model.safetensors"))


def assert_same_weights(a_run, b_run) -> None:  # type: ignore[no-untyped-def]
    a, b = weights(a_run), weights(b_run)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def interrupt_after_checkpoint(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make ``train`` raise KeyboardInterrupt right after it saves the checkpoint of ``step``
    (``monkeypatch.undo()`` lets the next run go through)."""
    import student.training.loop as loop

    real = loop.save_state

    def save_then_stop(checkpoints, weights, optimizer, state, *rest):  # type: ignore[no-untyped-def]
        real(checkpoints, weights, optimizer, state, *rest)
        if state.step == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_state", save_then_stop)


def make_small_student(task_cache, folder):  # type: ignore[no-untyped-def]
    """An untrained small student over a task cache's vocabulary (fast to fine-tune)."""
    from cache import open_cache

    cache = open_cache(task_cache)
    tokenizer = str(cache.tokenizer_path)
    vocab = Tokenizer.from_file(tokenizer).get_vocab_size(with_added_tokens=True)
    config = StudentConfig(vocab, embedding_dim=32, hidden_size=32, output_dim=cache.dim)
    torch.manual_seed(0)
    StudentEncoder(config, tokenizer=tokenizer).save_pretrained(folder)
    return folder
