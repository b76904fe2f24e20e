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
