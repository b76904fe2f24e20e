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
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cache import Cache
from student.model import BiLSTMEncoder

SMOOTHING = 0.75  # word2vec's exponent: frequent tokens are sampled less than in proportion


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
    p = np.asarray(counts, dtype=np.float64) ** SMOOTHING
    p = p + 1e-3 * max(p.max(), 1.0) / len(p)
    p[pad_id] = 0.0
    return torch.from_numpy(p / p.sum()).to(torch.float32)


class BiLMHead(nn.Module):
    """Sampled-softmax bi-LM loss over a one-layer BiLSTM student's per-token outputs."""

    def __init__(self, student: BiLSTMEncoder, probs: torch.Tensor, samples: int) -> None:
        super().__init__()
        cfg = student.config
        if cfg.num_layers != 1 or not cfg.bidirectional:
            raise ValueError("the bi-LM loss needs a one-layer bidirectional student")
        if probs.shape != (cfg.vocab_size,):
            raise ValueError(f"probs must have shape [{cfg.vocab_size}], got {list(probs.shape)}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.samples = samples
        self.hidden = cfg.hidden_size
        self.forward_proj = nn.Linear(cfg.hidden_size, cfg.embedding_dim)
        self.backward_proj = nn.Linear(cfg.hidden_size, cfg.embedding_dim)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.register_buffer("probs", probs.clone(), persistent=False)
        # log of each id's expected count among the negatives, the sampled-softmax correction
        self.register_buffer("log_count", torch.log(probs * samples), persistent=False)

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        """``samples`` negative ids (with replacement), from a generator the caller seeds."""
        return torch.multinomial(self.probs.cpu(), self.samples, True, generator=generator)

    def predictions(
        self, outputs: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(queries ``[N, E]``, target ids ``[N]``): forward predictions first, then backward.

        The forward state at t has read tokens 0..t and predicts t+1; the backward state at
        t+1 has read t+1..end and predicts t. Both use the same valid (row, t) pairs.
        """
        steps = max(outputs.shape[1] - 1, 0)
        valid = torch.arange(steps, device=ids.device)[None, :] < (
            lengths.to(ids.device)[:, None] - 1
        )
        fwd = self.forward_proj(outputs[:, :-1, : self.hidden][valid])
        bwd = self.backward_proj(outputs[:, 1:, self.hidden :][valid])
        return torch.cat([fwd, bwd]), torch.cat([ids[:, 1:][valid], ids[:, :-1][valid]])

    def forward(
        self,
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
        queries, targets = self.predictions(outputs, ids, lengths)
        if not len(targets):
            return outputs.sum() * 0.0
        negatives = negatives.to(ids.device)
        offset = self.bias - self.log_count
        # F.embedding, not indexing: its backward is a dense kernel, where indexing's
        # index_put accumulate is serial on CPU and cost more than the whole LM head.
        true = (queries.float() * F.embedding(targets, embedding).float()).sum(-1)
        true = true + F.embedding(targets, offset[:, None])[:, 0]
        table = F.embedding(negatives, embedding).to(queries.dtype)
        sampled = (queries @ table.T).float() + offset[negatives]  # bf16 matmul under autocast
        sampled = sampled.masked_fill(targets[:, None] == negatives[None, :], -torch.inf)
        logits = torch.cat([true[:, None], sampled], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(targets))


class StudentWithLM(nn.Module):
    """The student and its bi-LM head as one module, so DDP and checkpoints see both."""

    def __init__(self, student: BiLSTMEncoder, lm: BiLMHead) -> None:
        super().__init__()
        self.student = student
        self.lm = lm

    def forward(
        self, input_ids: torch.Tensor, lengths: torch.Tensor, negatives: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors in the teacher's space ``[B, output_dim]``, the bi-LM loss)."""
        s = self.student
        ids, lengths, outputs = s.states(input_ids, lengths)
        vectors = s.projection(s._pool(outputs, lengths))
        return vectors, self.lm(outputs, ids, lengths, negatives, s.embedding.weight)
