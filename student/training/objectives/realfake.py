"""A real-or-corrupted sentence loss beside distillation (``pipeline train --rf-weight``).

Why: the student learns to reproduce mean-pooled *semantic* vectors, and the teacher's
vectors barely change when a sentence stops being grammatical (a linear probe on them scores
CoLA MCC 0.01), so nothing in distillation alone teaches acceptability. Warstadt et al. (2019,
"Neural Network Acceptability Judgments") pretrained their CoLA encoders to tell real
sentences from corrupted ones; the same can ride along here at no data cost, because the
cache already holds every sentence's token ids.

Each batch of real sentences gets one corrupted copy per sentence, made from its token ids by
one word-level edit (a word is a WordPiece token plus the ``##`` pieces that follow it, so an
edit never splits a word): swap two neighbouring words, move a word elsewhere, delete a word,
repeat a word, or replace a word with one from another sentence of the batch. The first and
last tokens ([CLS] and [SEP] in BERT ids) stay put, and so does a final punctuation mark:
moving or dropping the full stop would be a corruption the head spots without learning any
grammar. A small MLP on the student's pooled
vector scores real against corrupted with a logistic loss; the distillation loss still sees
only the real sentences. The head exists only during training and is never saved with the
student.

``--rf-level token`` asks instead, of every token, whether it was replaced (see below).
torch is imported inside the functions: the options are read at command-line start-up.
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
    from tokenizers import Tokenizer

    from student.model import BiLSTMEncoder
    from student.training.data import Batch
    from student.training.objectives.base import Setup

EDITS = ("swap", "move", "delete", "repeat", "replace")
MIN_WORDS = {"swap": 2, "move": 2, "delete": 3, "repeat": 1, "replace": 1}
HEAD_HIDDEN = 256


CONTINUES, PUNCTUATION = 1, 2  # token kinds
LEVELS = ("sentence", "token")


@dataclass(frozen=True)
class RealFakeOptions:
    weight: float = option(
        0.0,
        "Add W * a real-vs-corrupted sentence loss (one edited copy per sentence).",
        flag="rf-weight",
    )
    # sentence: one edited copy per sentence, one head on the pooled vector; token: replaced
    # words, a head on every token's state (replaced-token detection).
    level: str = option(
        "sentence",
        "--rf-weight on: sentence (one head, pooled) | token (replaced words).",
        flag="rf-level",
    )

    def __post_init__(self) -> None:
        if not (self.weight >= 0 and math.isfinite(self.weight)):
            raise SraError(f"--rf-weight must be a number >= 0, got {self.weight}")
        if self.level not in LEVELS:
            raise SraError(f"--rf-level must be sentence or token, got {self.level!r}")

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def identity(self) -> dict[str, Any]:
        # Sentence-level runs keep the fingerprint they had before the token level existed.
        if self.level == "token":
            return {"rf": {"weight": self.weight, "level": "token", "rate": TOKEN_RATE}}
        return {"rf": {"weight": self.weight, "edits": list(EDITS)}}

    def check(self, cfg: Any) -> None:
        if cfg.objectives.bilm.enabled:
            raise SraError("--rf-weight and --lm-weight cannot be combined yet; pass one of them")

    def build(self, setup: Setup) -> RealFake:
        kinds = token_kinds(setup.tokenizer, setup.student.config.vocab_size)
        make = token_head if self.level == "token" else sentence_head
        student = setup.student
        return RealFake(self, make(student), kinds, student.config.pad_id, setup.seed)


class RealFake(Objective):
    name = "rf"

    def __init__(
        self,
        options: RealFakeOptions,
        head: torch.nn.Module,
        kinds: np.ndarray,
        pad_id: int,
        seed: int,
    ) -> None:
        self.options = options
        self.head = head
        self.kinds = kinds
        self.pad_id = pad_id
        self.seed = seed

    def prepare(self, batch: Batch, step: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """The corrupted copy of the batch, made on the CPU from its ids; the edits are seeded
        by step and rank, so a resumed run makes the same ones."""
        ids, lengths = batch.input_ids.numpy(), batch.lengths.numpy()
        rng = np.random.default_rng([self.seed, step, rank])
        if self.options.level == "token":
            return replace_tokens(ids, lengths, self.kinds, rng)
        return corrupt(ids, lengths, self.kinds, self.pad_id, rng)

    def run(
        self,
        student: BiLSTMEncoder,
        head: torch.nn.Module | None,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        prepared: tuple[np.ndarray, np.ndarray],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        import torch

        fake, extra = (torch.from_numpy(x) for x in prepared)
        score = token_loss if self.options.level == "token" else sentence_loss
        vectors, loss, accuracy = score(student, head, ids, lengths, fake, extra)
        return vectors, {"rf_loss": loss, "rf_acc": accuracy}

    def loss(
        self, vectors: torch.Tensor, targets: torch.Tensor, side: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logged = {"rf_loss": side["rf_loss"], "rf_acc": side["rf_acc"]}
        return self.options.weight * side["rf_loss"], logged


def token_kinds(tokenizer: Tokenizer, vocab_size: int) -> np.ndarray:
    """``[vocab_size]`` int8: CONTINUES for a piece that continues the word before it
    (``##...``), PUNCTUATION for a token of punctuation marks only, else 0."""
    kinds = np.zeros(vocab_size, dtype=np.int8)
    for token, i in tokenizer.get_vocab(with_added_tokens=True).items():
        if i >= vocab_size:
            continue
        if token.startswith("##") and len(token) > 2:
            kinds[i] = CONTINUES
        elif token and not any(c.isalnum() for c in token) and not token.startswith("["):
            kinds[i] = PUNCTUATION
    return kinds


def _words(row: np.ndarray, kinds: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each editable word in ``row``: the ids between the first and last
    token, less a final punctuation mark."""
    stop = len(row) - 1
    if stop > 1 and kinds[row[stop - 1]] == PUNCTUATION:
        stop -= 1
    starts = [i for i in range(1, stop) if i == 1 or kinds[row[i]] != CONTINUES]
    if not starts:
        return []
    return list(zip(starts, starts[1:] + [stop], strict=True))


def _edit(
    row: np.ndarray,
    words: list[tuple[int, int]],
    edit: str,
    donor: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    pieces = [row[a:b] for a, b in words]
    n = len(pieces)
    if edit == "swap":
        i = int(rng.integers(n - 1))
        pieces[i], pieces[i + 1] = pieces[i + 1], pieces[i]
    elif edit == "move":
        i = int(rng.integers(n))
        word = pieces.pop(i)
        # Anywhere but where it was or next to it (that would only be a swap).
        choices = [j for j in range(n) if abs(j - i) > 1] or [j for j in range(n) if j != i]
        pieces.insert(int(rng.choice(choices)), word)
    elif edit == "delete":
        pieces.pop(int(rng.integers(n)))
    elif edit == "repeat":
        i = int(rng.integers(n))
        pieces.insert(i, pieces[i])
    else:  # replace
        pieces[int(rng.integers(n))] = donor
    return np.concatenate([row[: words[0][0]], *pieces, row[words[-1][1] :]])


def corrupt(
    ids: np.ndarray,
    lengths: np.ndarray,
    kinds: np.ndarray,
    pad_id: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One corrupted copy of each row: ``(ids [B, T'], lengths [B])``, right-padded.

    ``kinds`` is ``token_kinds``'s table. Each row gets one edit, drawn uniformly among
    those its number of words allows (a one-word row cannot be reordered, a two-word row is
    not shortened). A row with no editable word (its end tokens and a full stop at most) is
    left as it is: rare, and harmless noise.
    """
    rows = [ids[b, : int(lengths[b])] for b in range(len(lengths))]
    words = [_words(r, kinds) for r in rows]
    out = []
    for row, spans in zip(rows, words, strict=True):
        if not spans:
            out.append(row)
            continue
        edits = [e for e in EDITS if len(spans) >= MIN_WORDS[e]]
        for _ in range(4):  # an edit can leave the row as it was (two equal words swapped)
            edit = edits[int(rng.integers(len(edits)))]
            # The donor word is drawn whatever the edit, so every edit consumes the same draws.
            other = int(rng.integers(len(rows)))
            donor_spans = words[other] or spans
            a, z = donor_spans[int(rng.integers(len(donor_spans)))]
            donor = (rows[other] if words[other] else row)[a:z]
            new = _edit(row, spans, edit, donor, rng)
            if len(new) != len(row) or not np.array_equal(new, row):
                break
        out.append(new)
    new_lengths = np.array([len(r) for r in out], dtype=np.int64)
    padded = np.full((len(out), int(new_lengths.max(initial=1))), pad_id, dtype=np.int64)
    for b, r in enumerate(out):
        padded[b, : len(r)] = r
    return padded, new_lengths


def sentence_head(student: BiLSTMEncoder, hidden: int = HEAD_HIDDEN) -> torch.nn.Module:
    """Scores a pooled sentence vector (``head.net``): positive logit = a real sentence."""
    from torch import nn

    head = nn.Module()
    head.net = nn.Sequential(nn.Linear(student.pooled_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    return head


def sentence_loss(
    student: BiLSTMEncoder,
    head: torch.nn.Module,
    input_ids: torch.Tensor,
    lengths: torch.Tensor,
    fake_ids: torch.Tensor,
    fake_lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(vectors of the real rows ``[B, output_dim]``, the real/fake loss, its accuracy).

    Real and corrupted rows run through the LSTM as one batch of ``2B``.
    """
    import torch
    import torch.nn.functional as F

    s = student
    width = max(input_ids.shape[1], fake_ids.shape[1])
    both = torch.cat(
        [
            F.pad(input_ids, (0, width - input_ids.shape[1]), value=s.config.pad_id),
            F.pad(
                fake_ids.to(input_ids.device),
                (0, width - fake_ids.shape[1]),
                value=s.config.pad_id,
            ),
        ]
    )
    pooled = s.pooled(both, torch.cat([lengths.cpu(), fake_lengths.cpu()]))
    real = len(lengths)
    vectors = s.projection(pooled[:real])
    logits = head.net(pooled).squeeze(-1).float()
    labels = torch.cat([logits.new_ones(real), logits.new_zeros(len(fake_lengths))])
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    accuracy = ((logits > 0).float() == labels).float().mean()
    return vectors, loss, accuracy


# -- the token-level variant (``--rf-level token``) ------------------------------------------
#
# Why: the sentence-level head gets one bit per sentence and tells only ~70% of the edited
# copies from the real ones. Replaced-token detection (Clark et al. 2020, ELECTRA) asks the
# same question of every token instead, on the per-token LSTM states: a dense signal about
# which words do not fit where they stand, which is what acceptability turns on.

TOKEN_RATE = 0.15  # share of the replaceable words replaced, as ELECTRA's masking rate


def replace_tokens(
    ids: np.ndarray,
    lengths: np.ndarray,
    kinds: np.ndarray,
    rng: np.random.Generator,
    rate: float = TOKEN_RATE,
) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``ids`` with some one-piece words replaced: ``(ids [B, T], replaced [B, T])``.

    Only words of a single WordPiece token are replaced, and only by one-piece words drawn from
    the whole batch (so by how often words occur): lengths do not change and no word is left
    half replaced, which a head could spot without learning anything about sentences. Each
    replaceable word goes with probability ``rate``, at least one per row that has one; the
    end tokens and a final punctuation mark stay. ``replaced`` is False where the drawn word
    happened to be the same one.
    """
    fake = ids.copy()
    replaced = np.zeros(ids.shape, dtype=bool)
    slots = []
    for b in range(len(lengths)):
        spans = _words(ids[b, : int(lengths[b])], kinds)
        slots.append([a for a, z in spans if z - a == 1])
    pool = np.array([ids[b, i] for b, row in enumerate(slots) for i in row], dtype=ids.dtype)
    if len(pool) == 0:
        return fake, replaced
    for b, row in enumerate(slots):
        if not row:
            continue
        chosen = [i for i in row if rng.random() < rate] or [row[int(rng.integers(len(row)))]]
        for i in chosen:
            fake[b, i] = pool[int(rng.integers(len(pool)))]
            replaced[b, i] = fake[b, i] != ids[b, i]
    return fake, replaced


def token_head(student: BiLSTMEncoder, hidden: int = HEAD_HIDDEN) -> torch.nn.Module:
    """Scores each token's LSTM state (``head.net``): positive logit = the token was replaced."""
    from torch import nn

    head = nn.Module()
    head.net = nn.Sequential(nn.Linear(student.state_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    return head


def token_loss(
    student: BiLSTMEncoder,
    head: torch.nn.Module,
    input_ids: torch.Tensor,
    lengths: torch.Tensor,
    fake_ids: torch.Tensor,
    replaced: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(vectors of the real rows, the per-token logistic loss on the altered rows and its
    accuracy, both balanced: the mean over replaced and over kept tokens, so a head that
    always says the same scores 0.5).

    Real and altered rows (same shape) run through the LSTM as one batch of ``2B``.
    """
    import torch
    import torch.nn.functional as F

    s = student
    real = len(lengths)
    _, lens, states = s.states(
        torch.cat([input_ids, fake_ids.to(input_ids.device)]),
        torch.cat([lengths.cpu(), lengths.cpu()]),
    )
    vectors = s.projection(s.pool(states[:real], lens[:real]))
    logits = head.net(states[real:]).squeeze(-1).float()
    width = logits.shape[1]
    steps = torch.arange(width, device=logits.device)
    valid = steps[None, :] < lens[:real].to(logits.device)[:, None]
    labels = replaced[:, :width].to(logits.device, torch.float32)
    # Balanced over the two kinds of token: with ~1 token in 8 replaced, a plain mean is
    # minimised early by saying "kept" everywhere, which teaches the encoder nothing.
    per_token = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    said = (logits > 0).float()
    loss = logits.new_zeros(())
    accuracy = logits.new_zeros(())
    for k in (1.0, 0.0):
        where = valid & (labels == k)
        count = where.sum().clamp(min=1)
        loss = loss + (per_token * where).sum() / count / 2
        accuracy = accuracy + ((said == labels) & where).sum() / count / 2
    return vectors, loss, accuracy
