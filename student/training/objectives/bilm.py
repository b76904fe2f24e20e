"""A bidirectional language-model loss beside distillation (``pipeline train --lm-weight``).

Why: approximating mean-pooled *semantic* vectors teaches the student little syntax, which is
what grammatical acceptability (CoLA) needs; a BiLSTM learns it from language modelling, as
ELMo did (Peters et al., 2018). The cache already holds the token ids, so the same batches can
carry both objectives: each direction of the student's single BiLSTM layer predicts the next
token it has not read yet (forward: token t+1 from tokens 0..t; backward: token t-1 from
tokens t..end). With more than one layer a bidirectional stack mixes the directions and each
state would see the token it predicts, so the loss needs ``layers == 1``.

A full softmax over a 30k WordPiece vocabulary would cost about ten times the LSTM itself, so
the loss is a *sampled* softmax (Jean et al., 2015): the true token against ``samples``
shared negatives drawn from the corpus unigram distribution (to the power 0.75), with the
usual log-expected-count correction and accidental hits removed. The output side is tied to
the student's own embedding table (plus a bias), so only one small projection per direction
is added; this head exists only during training and is not part of the saved student.

torch is imported inside the functions: the options above are read at command-line start-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cache.errors import SraError
from cache.options import option
from student.training.objectives.base import Objective

if TYPE_CHECKING:
    import torch

    from cache import Cache
    from student.model import BiLSTMEncoder
    from student.training.data import Batch
    from student.training.objectives.base import Setup

SMOOTHING = 0.75  # word2vec's exponent: frequent tokens are sampled less than in proportion


@dataclass(frozen=True)
class BiLMOptions:
    weight: float = option(
        0.0,
        "Add W * a bidirectional language-model loss (sampled softmax; --layers 1).",
        flag="lm-weight",
    )
    samples: int = option(
        256,
        "Negatives per batch for the --lm-weight loss (each costs time on every token).",
        flag="lm-samples",
    )

    def __post_init__(self) -> None:
        if not (self.weight >= 0 and math.isfinite(self.weight)):
            raise SraError(f"--lm-weight must be a number >= 0, got {self.weight}")
        if self.samples < 1:
            raise SraError(f"--lm-samples must be >= 1, got {self.samples}")

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def identity(self) -> dict[str, Any]:
        return {"lm": {"weight": self.weight, "samples": self.samples}}

    def check(self, cfg: Any) -> None:
        if cfg.student.num_layers != 1:
            raise SraError(
                "--lm-weight needs --layers 1: stacked BiLSTM layers mix both directions, so "
                "each state would already have read the token it is asked to predict"
            )

    def build(self, setup: Setup) -> BiLM:
        student = setup.student
        counts = unigram_counts(setup.cache, student.config.vocab_size)
        probs = sampling_distribution(counts, student.config.pad_id)
        return BiLM(self, bilm_head(student, probs, self.samples), setup.seed)


class BiLM(Objective):
    name = "lm"

    def __init__(self, options: BiLMOptions, head: torch.nn.Module, seed: int) -> None:
        self.options = options
        self.head = head
        self.seed = seed

    def prepare(self, batch: Batch, step: int, rank: int) -> torch.Tensor:
        import torch

        # Negatives seeded by step: the same on every rank and after a resume.
        return draw(self.head, torch.Generator().manual_seed(self.seed + step))

    def run(
        self,
        student: BiLSTMEncoder,
        head: torch.nn.Module | None,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        prepared: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ids, lengths, outputs = student.states(ids, lengths)
        vectors = student.projection(student.pool(outputs, lengths))
        loss = lm_loss(head, outputs, ids, lengths, prepared, student.embedding.weight)
        return vectors, {"lm_loss": loss}

    def loss(
        self, vectors: torch.Tensor, targets: torch.Tensor, side: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.options.weight * side["lm_loss"], {"lm_loss": side["lm_loss"]}


def unigram_counts(cache: Cache, vocab_size: int) -> np.ndarray:
    """How often each token id occurs in the cache's ``input_ids`` (int64 ``[vocab_size]``)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for shard in range(len(cache.shards)):
        # flatten(), not .values: it honours the array's offset should the column be a slice.
        values = cache.column_array(shard, "input_ids").flatten().to_numpy()
        if len(values):
            counts += np.bincount(values, minlength=vocab_size)[:vocab_size]
    return counts


def sampling_distribution(counts: np.ndarray, pad_id: int) -> torch.Tensor:
    """Smoothed unigram probabilities; the pad id is never a target, so never a negative.

    Every other id keeps a small floor so that the log-probability correction stays finite.
    """
    import torch

    p = np.asarray(counts, dtype=np.float64) ** SMOOTHING
    p = p + 1e-3 * max(p.max(), 1.0) / len(p)
    p[pad_id] = 0.0
    return torch.from_numpy(p / p.sum()).to(torch.float32)


def bilm_head(student: BiLSTMEncoder, probs: torch.Tensor, samples: int) -> torch.nn.Module:
    """The training-only head of a one-layer BiLSTM student: a projection per direction into
    the embedding space and an output bias (the output table is the student's embeddings)."""
    from torch import nn

    cfg = student.config
    if cfg.num_layers != 1 or not cfg.bidirectional:
        raise ValueError("the bi-LM loss needs a one-layer bidirectional student")
    if probs.shape != (cfg.vocab_size,):
        raise ValueError(f"probs must have shape [{cfg.vocab_size}], got {list(probs.shape)}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    head = nn.Module()
    head.forward_proj = nn.Linear(cfg.hidden_size, cfg.embedding_dim)
    head.backward_proj = nn.Linear(cfg.hidden_size, cfg.embedding_dim)
    head.bias = nn.Parameter(probs.new_zeros(cfg.vocab_size))
    # Not in checkpoints: both follow from the cache, which the run's identity pins.
    head.register_buffer("probs", probs.clone(), persistent=False)
    # log of each id's expected count among the negatives, the sampled-softmax correction
    head.register_buffer("log_count", (probs * samples).log(), persistent=False)
    head.samples = samples
    head.hidden = cfg.hidden_size
    return head


def draw(head: torch.nn.Module, generator: torch.Generator) -> torch.Tensor:
    """``samples`` negative ids (with replacement), from a generator the caller seeds."""
    import torch

    return torch.multinomial(head.probs.cpu(), head.samples, True, generator=generator)


def predictions(
    head: torch.nn.Module, outputs: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(queries ``[N, E]``, target ids ``[N]``): forward predictions first, then backward.

    The forward state at t has read tokens 0..t and predicts t+1; the backward state at
    t+1 has read t+1..end and predicts t. Both use the same valid (row, t) pairs.
    """
    import torch

    steps = max(outputs.shape[1] - 1, 0)
    valid = torch.arange(steps, device=ids.device)[None, :] < (lengths.to(ids.device)[:, None] - 1)
    fwd = head.forward_proj(outputs[:, :-1, : head.hidden][valid])
    bwd = head.backward_proj(outputs[:, 1:, head.hidden :][valid])
    return torch.cat([fwd, bwd]), torch.cat([ids[:, 1:][valid], ids[:, :-1][valid]])


def lm_loss(
    head: torch.nn.Module,
    outputs: torch.Tensor,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    negatives: torch.Tensor,
    embedding: torch.Tensor,
) -> torch.Tensor:
    """Mean cross-entropy (nats per predicted token) of both directions.

    ``outputs [B, T, 2H]``, ``ids [B, T]`` and ``lengths [B]`` as ``BiLSTMEncoder.states``
    returns them; ``embedding`` is the student's ``[vocab, E]`` table (the tied output).
    A row of length 1 predicts nothing; a batch where no row has two tokens gives 0.
    """
    import torch
    import torch.nn.functional as F

    queries, targets = predictions(head, outputs, ids, lengths)
    if not len(targets):
        return outputs.sum() * 0.0
    negatives = negatives.to(ids.device)
    offset = head.bias - head.log_count
    # F.embedding, not indexing: its backward is a dense kernel, where indexing's
    # index_put accumulate is serial on CPU and cost more than the whole LM head.
    true = (queries.float() * F.embedding(targets, embedding).float()).sum(-1)
    true = true + F.embedding(targets, offset[:, None])[:, 0]
    table = F.embedding(negatives, embedding).to(queries.dtype)
    sampled = (queries @ table.T).float() + offset[negatives]  # bf16 matmul under autocast
    sampled = sampled.masked_fill(targets[:, None] == negatives[None, :], -torch.inf)
    logits = torch.cat([true[:, None], sampled], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(targets))
