"""The BiLSTM student network and the PCA initialisation of its embeddings from the teacher's."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from student.config import StudentConfig
from student.runtime import onednn_bf16_available


def _between_layers(config: StudentConfig) -> float:
    # nn.LSTM only applies dropout between stacked layers (and warns when given it for one).
    return config.dropout if config.num_layers > 1 else 0.0


class BiLSTMEncoder(nn.Module):
    """Embedding -> dropout -> (Bi)LSTM -> pooling over valid positions -> projection.

    The projection is one Linear, or with ``projection_hidden > 0`` a Linear -> GELU -> Linear
    MLP: capacity that costs once per sentence rather than once per token.

    ``forward(input_ids, lengths)`` maps teacher WordPiece ids ``[B, L]`` plus true lengths
    ``[B]`` to vectors ``[B, output_dim]`` in the teacher's space; ``pooled`` gives the
    sentence vector before the projection (``[B, pooled_dim]``) for fine-tuning heads.

    Padding never influences a sentence's vector: the result equals running the LSTM on
    packed sequences (``lstm_packed``, the reference the tests hold it to), so the backward
    direction starts at each sentence's real last token, and pooling only looks at valid
    positions. It is computed with dense LSTM calls, which on CPU use oneDNN's kernel: rows of
    one length directly, mixed lengths as in ``_lstm_right_padded``.

    Empty rows: a row with length 0 has no tokens to run, so its length is clamped to 1 and its
    first id is replaced by ``pad_id``; an empty sentence therefore gets the fixed vector of
    a lone pad token. A batch with no rows returns an empty ``[0, output_dim]`` tensor.

    The module has no device or dtype baked in: move it with ``.to(device)`` and run it under
    ``torch.autocast`` as usual. ``lengths`` may live on any device.
    """

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        if not isinstance(config, StudentConfig):
            raise TypeError(f"BiLSTMEncoder needs a StudentConfig, got {type(config).__name__}")
        self.config = config
        self.embedding = nn.Embedding(
            config.vocab_size, config.embedding_dim, padding_idx=config.pad_id
        )
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            input_size=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=config.bidirectional,
            dropout=_between_layers(config),
        )
        self.projection: nn.Module
        if config.projection_hidden:
            self.projection = nn.Sequential(
                nn.Linear(self.pooled_dim, config.projection_hidden),
                nn.GELU(),
                nn.Linear(config.projection_hidden, config.output_dim),
            )
        else:
            self.projection = nn.Linear(self.pooled_dim, config.output_dim)

    def set_dropout(self, p: float) -> None:
        """Change the dropout (token embeddings and between layers) and its config together,
        e.g. to fine-tune with other regularisation than distillation used."""
        self.config = dataclasses.replace(self.config, dropout=p)  # validates p
        self.dropout.p = self.config.dropout
        self.lstm.dropout = _between_layers(self.config)

    @property
    def state_dim(self) -> int:
        """Size of one position's LSTM output (both directions)."""
        return self.config.hidden_size * (2 if self.config.bidirectional else 1)

    @property
    def pooled_dim(self) -> int:
        """Size of the pooled sentence vector (before the projection)."""
        return 2 * self.state_dim if self.config.pooling == "max+mean" else self.state_dim

    def init_embeddings(self, matrix: torch.Tensor | np.ndarray) -> None:
        """Copy a ``[vocab_size, embedding_dim]`` matrix into the embedding table.

        The ``pad_id`` row is zeroed afterwards, as ``nn.Embedding(padding_idx=...)`` expects
        (that row gets no gradient, so a non-zero value there would be frozen forever).
        """
        tensor = torch.as_tensor(matrix)
        expected = (self.config.vocab_size, self.config.embedding_dim)
        if tuple(tensor.shape) != expected:
            raise ValueError(
                f"embedding matrix must have shape {list(expected)}, got {list(tensor.shape)}"
            )
        if not tensor.is_floating_point():
            raise ValueError(f"embedding matrix must be floating point, got {tensor.dtype}")
        with torch.no_grad():
            self.embedding.weight.copy_(tensor)
            self.embedding.weight[self.config.pad_id].zero_()

    def _prepare(
        self, input_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate; clamp empty rows to one pad token; trim to the longest row.

        Returns ids ``[B, T]`` and CPU int64 lengths ``[B]`` with ``1 <= lengths <= T``.
        """
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError("input_ids must be a [batch, length] tensor")
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
        batch, width = input_ids.shape
        lengths = torch.as_tensor(lengths).detach().to("cpu", torch.int64)
        if lengths.shape != (batch,):
            raise ValueError(
                f"lengths must have shape [{batch}] to match input_ids, got {list(lengths.shape)}"
            )
        if batch and (int(lengths.min()) < 0 or int(lengths.max()) > width):
            raise ValueError(f"lengths must lie in [0, {width}] (the width of input_ids)")
        empty = lengths == 0
        if bool(empty.any()):
            if width == 0:
                input_ids = input_ids.new_full((batch, 1), self.config.pad_id)
            else:
                input_ids = input_ids.clone()
                input_ids[empty.to(input_ids.device), 0] = self.config.pad_id
            lengths = lengths.clamp(min=1)
        if batch:
            input_ids = input_ids[:, : int(lengths.max())]
        return input_ids, lengths

    def pool(self, out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Pool ``out [B, T, D]`` over the first ``lengths[b]`` positions of each row (the
        states and lengths ``states`` returns)."""
        steps = torch.arange(out.shape[1], device=out.device)
        valid = (steps[None, :] < lengths.to(out.device)[:, None]).unsqueeze(-1)  # [B, T, 1]
        parts = []
        if self.config.pooling in ("max", "max+mean"):
            parts.append(out.masked_fill(~valid, float("-inf")).amax(dim=1))
        if self.config.pooling in ("mean", "max+mean"):
            # Sum in float32: under bf16 autocast a bf16 running sum over 128 steps is lossy.
            summed = (out * valid).sum(dim=1, dtype=torch.float32)
            parts.append(summed / lengths.to(out.device, torch.float32)[:, None])
        dtype = self.embedding.weight.dtype
        return torch.cat([p.to(dtype) for p in parts], dim=1)

    def pooled(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Sentence vectors before the projection: ``[B, pooled_dim]``."""
        ids, lengths = self._prepare(input_ids, lengths)
        if ids.shape[0] == 0:
            return self.embedding.weight.new_zeros((0, self.pooled_dim))
        return self.pool(self._run(ids, lengths), lengths)

    def states(
        self, input_ids: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-token LSTM outputs, for objectives beyond the sentence vector (the bi-LM).

        Returns ``(ids [B, T], lengths [B], outputs [B, T, directions * hidden_size])`` with
        the ids and lengths as ``_prepare`` leaves them (trimmed, empty rows clamped), so that
        ``projection(pool(outputs, lengths))`` is exactly ``forward``.
        """
        ids, lengths = self._prepare(input_ids, lengths)
        if ids.shape[0] == 0:
            raise ValueError("states needs at least one row")
        return ids, lengths, self._run(ids, lengths)

    def _run(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.embedding(ids))
        if x.device.type == "cpu" and _cpu_bf16_autocast() and not onednn_bf16_available():
            # oneDNN has no bf16 LSTM on CPUs without AVX-512 ("could not create a primitive
            # descriptor"): there the LSTM runs in fp32 and the rest of the model stays in bf16.
            with torch.autocast("cpu", enabled=False):
                return self._lstm(x.float(), lengths)
        return self._lstm(x, lengths)

    def _lstm(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if bool((lengths == x.shape[1]).all()):
            return self.lstm(x)[0]
        return self._lstm_right_padded(x, lengths)

    def _lstm_right_padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The (Bi)LSTM over right-padded rows, exactly as over packed sequences, but faster.

        A forward pass never sees the padding after a row's last token, so its states at the
        valid positions are exact. The backward direction is run as a forward pass over each
        row reversed within its own length (padding stays at the end), then un-reversed. Both
        are plain dense LSTM calls, which on CPU use oneDNN's kernel: measured about twice as
        fast as the packed-sequence loop (``lstm_packed`` below is the reference it must equal).
        """
        lstm = self.lstm
        steps = torch.arange(x.shape[1], device=x.device)[None, :]
        lens = lengths.to(x.device)[:, None]
        # Reversal index within each row's length; an involution, so it also un-reverses.
        flip = torch.where(steps < lens, lens - 1 - steps, steps)
        suffixes = ["", "_reverse"] if lstm.bidirectional else [""]
        for layer in range(lstm.num_layers):
            if layer and lstm.dropout and self.training:
                x = nn.functional.dropout(x, lstm.dropout, training=True)
            outs = []
            for suffix in suffixes:
                names = [
                    f"{w}_l{layer}{suffix}"
                    for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                ]
                weights = [getattr(lstm, n) for n in names]
                inp = x if not suffix else _gather_steps(x, flip)
                out = torch._VF.lstm(  # type: ignore[attr-defined]
                    inp, _zeros(lstm, inp), weights, True, 1, 0.0, self.training, False, True
                )[0]
                outs.append(out if not suffix else _gather_steps(out, flip))
            x = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
        return x

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Vectors in the teacher's space: ``[B, output_dim]``."""
        return self.projection(self.pooled(input_ids, lengths))


def _cpu_bf16_autocast() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def _gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[-1]))


def _zeros(lstm: nn.LSTM, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = x.new_zeros((1, x.shape[0], lstm.hidden_size))
    return h, h


def lstm_packed(
    model: BiLSTMEncoder, input_ids: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Reference: ``model.pooled`` computed over packed sequences (``enforce_sorted=False``)."""
    ids, lengths = model._prepare(input_ids, lengths)
    x = model.dropout(model.embedding(ids))
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = model.lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
    return model.pool(out, lengths)


def pca_project(
    teacher_embeddings: np.ndarray | torch.Tensor, dim: int, seed: int = 0
) -> torch.Tensor:
    """Project a teacher's ``[vocab, hidden]`` input-embedding matrix to ``[vocab, dim]``.

    The rows are centred and projected onto their top ``dim`` principal directions (exact
    SVD, components ordered by variance, signs fixed so the result is deterministic). If
    ``dim`` exceeds the number of available directions (``hidden``, or ``vocab`` for tiny
    vocabularies) every direction is kept and the remaining columns are filled with small
    seeded noise (std 0.01), so the table stays full rank without inventing structure.

    Initialising the student's embeddings with this lifted held-out cosine to the teacher
    from 0.64 to 0.84 in a prototype of this project, against a random init.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if isinstance(teacher_embeddings, torch.Tensor):
        x = teacher_embeddings.detach().to("cpu", torch.float64)
    else:
        x = torch.from_numpy(np.asarray(teacher_embeddings, dtype=np.float64))
    if x.dim() != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"teacher_embeddings must be [vocab>=2, hidden], got {list(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("teacher_embeddings contains NaN or infinite values")

    vocab = x.shape[0]
    centred = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # rows: principal directions
    keep = min(dim, vh.shape[0])
    components = vh[:keep]
    # SVD signs are arbitrary; make each direction's largest-magnitude loading positive.
    pivots = components.abs().argmax(dim=1)
    signs = torch.sign(components.gather(1, pivots[:, None]))
    signs[signs == 0] = 1
    projected = centred @ (components * signs).T  # [vocab, keep]

    # nn.Embedding initialises entries as N(0, 1), and the LSTM's default U(+-1/sqrt(hidden))
    # weights, learning rate and gradient clipping are all tuned to inputs of that scale.
    # Teacher embeddings are far smaller (std ~0.05 for BERT/MiniLM), which would leave the
    # gates almost blind to the input at the start of training. One global scale factor
    # brings the entries to std 1 while keeping the geometry (cosines, the variance ratios
    # between components) exactly as PCA found it.
    std = projected.std()
    if float(std) > 0:
        projected = projected / std
    if keep < dim:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(vocab, dim - keep, generator=generator, dtype=torch.float64) * 0.01
        projected = torch.cat([projected, noise], dim=1)
    return projected.to(torch.float32).contiguous()
