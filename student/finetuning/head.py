"""The fine-tuned model: a task head over sentence vectors, one sentence or a pair as
``[u; v; |u - v|; u * v]``, on top of the student's encoder.

The features are the vectors of the student (fine-tuned or frozen) or, for the
teacher-features baseline, the teacher's cached vectors; the head does not care which.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from student.finetuning.config import DISTILL_LOSSES, HEADS
from student.finetuning.data import Examples, Sentences
from student.model import BiLSTMEncoder
from student.runtime import autocast


def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # The InferSent / SentEval combination: symmetric in what it compares, cheap to compute.
    return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)


class TaskHead(nn.Module):
    """``mlp``: dropout -> Linear -> tanh -> dropout -> Linear; ``linear``: one Linear."""

    def __init__(
        self, dim: int, pair: bool, outputs: int, kind: str, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {kind!r}")
        features = 4 * dim if pair else dim
        self.pair = pair
        if kind == "linear":
            self.net: nn.Module = nn.Linear(features, outputs)
        else:
            self.net = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(features, hidden),
                nn.Tanh(),
                nn.Dropout(dropout),
                nn.Linear(hidden, outputs),
            )

    def forward(self, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        x = pair_features(u, v) if self.pair and v is not None else u
        out = self.net(x.float())
        return out.squeeze(-1) if out.shape[-1] == 1 else out


def distill_loss(
    student: torch.Tensor, teacher: torch.Tensor, kind: str, t: float, multilabel: bool = False
) -> torch.Tensor:
    """The student's outputs against a fine-tuned teacher's.

    ``mse``: squared error on the logits themselves, as Tang et al. (2019) found best for a
    BiLSTM student (it keeps the teacher's confidence, which softmax targets flatten).
    ``kl``: KL(teacher || student) of the temperature-softened distributions, scaled by T^2 so
    its gradients keep their size as T changes (Hinton et al., 2015). For a multi-label head
    each label is its own yes/no distribution (sigmoid): binary cross-entropy to the teacher's
    softened probabilities, which differs from that KL by the teacher's entropy only (the
    same gradients), averaged over labels.
    """
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "kl" and multilabel:
        target = torch.sigmoid(teacher / t)
        return F.binary_cross_entropy_with_logits(student / t, target) * t * t
    if kind == "kl":
        log_p = F.log_softmax(student / t, dim=-1)
        q = F.softmax(teacher / t, dim=-1)
        return F.kl_div(log_p, q, reduction="batchmean") * t * t
    raise ValueError(f"distill loss must be one of {', '.join(DISTILL_LOSSES)}, got {kind!r}")


class FinetuneModel(nn.Module):
    """The encoder (None for the teacher's cached vectors) and the task head."""

    def __init__(self, encoder: BiLSTMEncoder | None, head: TaskHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def encode(
        self, sentences: Sentences, ids: np.ndarray, pad: int, device: torch.device
    ) -> torch.Tensor:
        assert self.encoder is not None
        tokens, lengths = sentences.padded(ids, pad)
        return self.encoder(tokens.to(device), lengths)

    def vectors(
        self,
        ex: Examples,
        rows: np.ndarray,
        sentences: Sentences,
        features: torch.Tensor | None,
        pad: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The sentence vectors of examples ``rows``: ``(u, v)``, v None for one sentence.
        From ``features`` when the encoder is frozen (computed once), else encoded now."""
        if features is not None:
            u = features[torch.from_numpy(ex.first[rows])].to(device)
            v = None if ex.second is None else features[torch.from_numpy(ex.second[rows])]
            return u, None if v is None else v.to(device)
        u = self.encode(sentences, ex.first[rows], pad, device)
        v = None if ex.second is None else self.encode(sentences, ex.second[rows], pad, device)
        return u, v


@torch.inference_mode()
def frozen_features(
    model: FinetuneModel,
    sentences: Sentences,
    ids: np.ndarray,
    pad: int,
    device: torch.device,
    bf16: bool,
) -> torch.Tensor:
    """Every needed sentence's vector, computed once: the encoder is frozen (its parameters
    stop requiring gradients), or absent and the teacher's cached vectors are the features."""
    if model.encoder is None:
        return torch.from_numpy(sentences.vectors)
    model.encoder.eval()
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    out = torch.zeros(len(sentences.lengths), model.encoder.config.output_dim)
    order = ids[np.argsort(sentences.lengths[ids], kind="stable")]
    for i in range(0, len(order), 512):
        chunk = order[i : i + 512]
        with autocast(device, bf16):
            out[torch.from_numpy(chunk)] = model.encode(sentences, chunk, pad, device).float().cpu()
    return out
