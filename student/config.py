"""The student's architecture and provenance, saved as ``config.json`` next to its weights.

``StudentShape`` is the part a user chooses (``pipeline train``'s student options);
``StudentConfig`` is the whole saved config: the shape, plus what the teacher's cache fixes
(vocabulary, output size, pad id) and provenance. Its defaults are the shape's, written once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from cache.errors import SraError
from cache.options import option

#: How the student pools its LSTM states into a sentence vector (the teacher's poolings,
#: which name cache columns, are ``pipeline.teacher.POOLINGS``).
POOLINGS = ("max", "mean", "max+mean")


@dataclass(frozen=True)
class StudentShape:
    """The student's architecture as ``pipeline train`` takes it (see StudentConfig for why
    these defaults)."""

    embedding_dim: int = option(300, "Student token-embedding size.")
    hidden_size: int = option(300, "LSTM hidden size per direction.")
    num_layers: int = option(1, "Stacked BiLSTM layers.", flag="layers")
    pooling: str = option("max", "max | mean | max+mean over LSTM states.", flag="student-pooling")
    dropout: float = option(0.1, "Dropout on token embeddings (and between layers).")
    projection_hidden: int = option(
        0, "0: linear projection to the teacher's space; N: an MLP with N hidden units."
    )

    def __post_init__(self) -> None:
        for name, flag in (
            ("embedding_dim", "embedding-dim"),
            ("hidden_size", "hidden-size"),
            ("num_layers", "layers"),
        ):
            if getattr(self, name) < 1:
                raise SraError(f"--{flag} must be >= 1, got {getattr(self, name)}")
        if self.projection_hidden < 0:
            raise SraError(f"--projection-hidden must be >= 0, got {self.projection_hidden}")
        if self.pooling not in POOLINGS:
            raise SraError(
                f"--student-pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}"
            )
        if not (math.isfinite(self.dropout) and 0 <= self.dropout < 1):
            raise SraError(f"--dropout must be in [0, 1), got {self.dropout}")

    def config(self, **sized: Any) -> StudentConfig:
        """The whole StudentConfig: this shape plus what the cache fixes (``vocab_size``,
        ``output_dim``, ``pad_id``, ``max_length``) and provenance."""
        return StudentConfig(**dataclasses.asdict(self), **sized)


_SHAPE = StudentShape()

_INT_FIELDS = (
    "vocab_size",
    "embedding_dim",
    "hidden_size",
    "num_layers",
    "output_dim",
    "max_length",
)
_STR_FIELDS = ("pooling", "teacher", "teacher_pooling", "cache_fingerprint")


@dataclass
class StudentConfig:
    """Shape of the BiLSTM student that approximates a BERT teacher's sentence vectors.

    Why these defaults:

    * Wu et al. (2020) distil into a *single-layer BiLSTM with max pooling* that reads the
      teacher's own WordPiece ids, so the student needs no tokenizer of its own and can be
      initialised from the teacher's token embeddings (see ``model.pca_project``). Hence
      ``num_layers=1``, ``bidirectional=True``, ``pooling="max"``, and ``vocab_size`` /
      ``pad_id`` / ``max_length`` mirror the teacher's tokenizer.
    * ``hidden_size=300`` per direction is a CPU-speed choice, not the paper's. Measured on
      this project's 2-core CPU for BiLSTM inference at L=30 under bf16 autocast: about
      1,600 sentences/s at hidden 512, about 3,400 at 300 and about 8,000 at 128, against
      about 400/s for the MiniLM teacher; 300 sits between capacity and that speed.
    * ``embedding_dim=300`` matches the hidden size and is the usual word-vector size;
      ``output_dim=384`` is the teacher's (all-MiniLM-L6-v2) vector size, so the final
      projection lands in the teacher's space and cosine against the teacher is the loss.
    * ``pooling="max+mean"`` learns faster (held-out cosine 0.747 vs 0.702 after 600 steps,
      as much as hidden 512) at almost no cost, but ends only a little ahead after two epochs
      (0.884 vs 0.880) with mixed GLUE results (docs/results.md), so the paper's max stays
      the default.
    * ``dropout=0.1`` (on the token embeddings) and ``projection_hidden=0`` (one linear layer
      into the teacher's space) are the paper-like defaults. Distilling from a million
      sentences underfits, so ``dropout=0`` and an MLP projection (``projection_hidden=3072``:
      run once per sentence, not per token, so nearly free at ``encode`` time) fit the teacher
      better; docs/results.md measures both. Fine-tuning sets its own embedding dropout.

    ``teacher``, ``teacher_pooling`` and ``cache_fingerprint`` are provenance only (which
    teacher, how its vectors were pooled, which stage-one cache trained this student); they
    do not change the network.
    """

    vocab_size: int
    embedding_dim: int = _SHAPE.embedding_dim
    hidden_size: int = _SHAPE.hidden_size
    num_layers: int = _SHAPE.num_layers
    bidirectional: bool = True
    pooling: str = _SHAPE.pooling
    dropout: float = _SHAPE.dropout
    projection_hidden: int = _SHAPE.projection_hidden
    output_dim: int = 384
    pad_id: int = 0
    max_length: int = 128
    teacher: str = ""
    teacher_pooling: str = ""
    cache_fingerprint: str = ""

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int):
            raise ValueError(f"pad_id must be an integer, got {self.pad_id!r}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(
                f"pad_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_id!r}"
            )
        hidden = self.projection_hidden
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
            raise ValueError(f"projection_hidden must be an integer >= 0, got {hidden!r}")
        if not isinstance(self.bidirectional, bool):
            raise ValueError(f"bidirectional must be true or false, got {self.bidirectional!r}")
        for name in _STR_FIELDS:
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        dropout = self.dropout
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, int | float)
            or not math.isfinite(dropout)
            or not 0 <= dropout < 1
        ):
            raise ValueError(f"dropout must be a number with 0 <= dropout < 1, got {dropout!r}")
        self.dropout = float(dropout)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of the fields.

        ``projection_hidden`` came later: it is written only when set, so a linear-projection
        student's config.json, and the fingerprint of the run that trained it, are as before.
        """
        data = dataclasses.asdict(self)
        if not data["projection_hidden"]:
            del data["projection_hidden"]
        return data

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudentConfig:
        """Build from ``to_dict()`` output; unknown keys or bad values raise ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"a student config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in known)
        if unknown:
            raise ValueError(f"unknown student config key(s): {', '.join(map(str, unknown))}")
        if "vocab_size" not in d:
            raise ValueError("vocab_size is missing from the student config")
        return cls(**d)
