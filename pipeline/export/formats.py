"""`pipeline export`: a student (or fine-tuned run) in the formats people serve.

``--format onnx`` (``student.deploy.export``): one ONNX graph from token ids to vectors (or a
task's logits), dynamic batch and length axes, fp32 or ``--int8``, with the tokenizer and
config beside it; ``StudentEncoder.from_pretrained(out)`` runs it on ONNX Runtime.

``--format sentence-transformers`` (here, since it builds sentence-transformers modules, which
``student/`` must not import): a folder that ``SentenceTransformer(out)`` loads without
``trust_remote_code``, because it is made only of the library's own modules:

    WordEmbeddings (the teacher's WordPiece tokenizer, the student's token embeddings)
    -> LSTM (the student's BiLSTM, run over packed sequences: the student's own semantics)
    -> Pooling (max, mean, or max then mean, over real tokens)
    -> Dense (the projection; two Dense layers with GELU between for an MLP projection)

One difference, by construction of WordEmbeddings: a sentence longer than ``max_length``
word pieces is cut after tokenization, so it loses its final [SEP] where ``encode`` keeps it
(and drops one more word piece instead). Shorter sentences get the same vectors.

Both formats end with a check on sample sentences against ``StudentEncoder.encode``, printed,
and write nothing unless it passes.
"""

from __future__ import annotations

import shutil
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from cache.errors import SraError
from cache.options import option

FORMATS = ("onnx", "sentence-transformers")
ST_MAX_ABS_DIFF = 1e-4  # fp32 in both, packed vs right-padded LSTM: float rounding only


@dataclass(frozen=True)
class ExportConfig:
    """Everything `pipeline export` takes; its fields are the command's options."""

    model: Path = option(
        MISSING, "Student folder, or a fine-tuned run folder (pipeline finetune --out)."
    )
    out: Path = option(MISSING, "Folder to write the export to.")
    format: str = option("onnx", "onnx | sentence-transformers")
    int8: bool = option(
        False, "ONNX with int8 weights (dynamic quantization; refused where unsupported)."
    )
    overwrite: bool = option(False, "Replace an earlier export in --out.")
    check_sentences: Path | None = option(
        None, "One sentence per line to check the export on (default: a built-in sample)."
    )

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise SraError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.int8 and self.format != "onnx":
            raise SraError("--int8 applies to --format onnx only")


def export(cfg: ExportConfig) -> dict[str, Any]:
    """Run the export ``cfg`` asks for; returns what was written and the check."""
    sentences = _read_sentences(cfg.check_sentences)
    if cfg.format == "onnx":
        from student.deploy.export import export_onnx

        return export_onnx(
            cfg.model, cfg.out, int8=cfg.int8, sentences=sentences, overwrite=cfg.overwrite
        )
    return export_sentence_transformers(cfg.model, cfg.out, sentences, overwrite=cfg.overwrite)


def _read_sentences(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SraError(f"cannot read --check-sentences {path}: {e}") from None
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise SraError(f"--check-sentences {path} holds no sentences")
    return sentences


# ------------------------------------------------------------------ sentence-transformers


def export_sentence_transformers(
    source: Path, out: Path, sentences: list[str] | None = None, *, overwrite: bool = False
) -> dict[str, Any]:
    """Write ``source`` (a student folder) as a sentence-transformers folder, checked."""
    from student.deploy.export import SAMPLE_SENTENCES, source_kind
    from student.deploy.folder import check_out, publish, staging
    from student.encoder import StudentEncoder

    source, out = Path(source), Path(out)
    if source_kind(source) != "encoder":
        raise SraError(
            f"--model {source} is a fine-tuned task run: --format sentence-transformers takes "
            "an encoder; pass its encoder/ folder, or use --format onnx for the task model"
        )
    check_out(out, overwrite)
    encoder = StudentEncoder.from_pretrained(source)
    model = sentence_transformer(encoder)
    built = staging(out)
    try:
        model.save(str(built))
        check = _check(encoder, built, list(sentences or SAMPLE_SENTENCES))
        if not check["passed"]:
            raise SraError(
                f"SentenceTransformer({out}) does not give encode()'s vectors on "
                f"{check['sentences']} sample sentences (max |diff| {check['max_abs_diff']:.2e})"
                "; nothing was written"
            )
        publish(built, out)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return {"out": str(out), "kind": "encoder", "format": "sentence-transformers", "check": check}


def sentence_transformer(encoder: Any) -> Any:
    """The student as a ``SentenceTransformer`` of the library's own modules (see above)."""
    import torch

    st = _require_sentence_transformers()
    config, net = encoder.config, encoder.model
    words = st.WordEmbeddings(
        tokenizer=_hf_tokenizer(encoder.tokenizer),
        embedding_weights=net.embedding.weight.detach().cpu().float(),
        max_seq_length=config.max_length,
    )
    lstm = st.LSTM(
        config.embedding_dim,
        config.hidden_size,
        num_layers=config.num_layers,
        bidirectional=config.bidirectional,
        dropout=0.0,
    )
    lstm.encoder.load_state_dict(net.lstm.state_dict())
    modes = ("max", "mean") if config.pooling == "max+mean" else config.pooling
    pooling = st.Pooling(net.state_dim, pooling_mode=modes)
    linears = [m for m in net.projection.modules() if isinstance(m, torch.nn.Linear)]
    dense = []
    for i, linear in enumerate(linears):
        activation = torch.nn.GELU() if i < len(linears) - 1 else torch.nn.Identity()
        layer = st.Dense(linear.in_features, linear.out_features, activation_function=activation)
        layer.linear.load_state_dict(linear.state_dict())
        dense.append(layer)
    model = st.SentenceTransformer(modules=[words, lstm, pooling, *dense], device="cpu")
    return model.eval()


def _hf_tokenizer(tokenizer: Any) -> Any:
    """The student's ``tokenizers.Tokenizer`` as a transformers fast tokenizer, which
    WordEmbeddings saves and reloads (special tokens named so that it round-trips)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    copy.no_truncation()
    vocab = copy.get_vocab()
    specials = {
        k: t
        for k, t in (
            ("unk_token", "[UNK]"),
            ("sep_token", "[SEP]"),
            ("pad_token", "[PAD]"),
            ("cls_token", "[CLS]"),
            ("mask_token", "[MASK]"),
        )
        if t in vocab
    }
    return PreTrainedTokenizerFast(tokenizer_object=copy, **specials)


def _check(encoder: Any, folder: Path, sentences: list[str]) -> dict[str, Any]:
    """Load the written folder as a user would and compare with ``encode`` (sentences within
    ``max_length`` word pieces; longer ones differ by design, see the module doc)."""
    import numpy as np
    from tokenizers import Tokenizer

    st = _require_sentence_transformers()
    counter = Tokenizer.from_str(encoder.tokenizer.to_str())  # the saved one may truncate
    counter.no_truncation()
    lengths = [len(e.ids) for e in counter.encode_batch(sentences)]
    fits = [s for s, n in zip(sentences, lengths, strict=True) if n <= encoder.config.max_length]
    if not fits:
        raise SraError("no check sentence fits within max_length word pieces; pass shorter ones")
    loaded = st.SentenceTransformer(str(folder), device="cpu")
    got = loaded.encode(fits, convert_to_numpy=True, batch_size=64)
    expected = encoder.encode(fits)
    diff = float(np.abs(got - expected).max())
    return {
        "sentences": len(fits),
        "max_abs_diff": diff,
        "min_cosine": float(_cosines(got, expected).min()),
        "passed": diff <= ST_MAX_ABS_DIFF,
    }


def _cosines(a: Any, b: Any) -> Any:
    import numpy as np

    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


class _SentenceTransformers:
    """The few names used from sentence-transformers, wherever its version keeps them."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        try:  # 6.x
            from sentence_transformers.sentence_transformer import modules
        except ImportError:  # 3.x - 5.x
            from sentence_transformers import models as modules  # type: ignore[no-redef]
        self.SentenceTransformer = SentenceTransformer
        self.WordEmbeddings = modules.WordEmbeddings
        self.LSTM = modules.LSTM
        self.Pooling = modules.Pooling
        self.Dense = modules.Dense


def _require_sentence_transformers() -> _SentenceTransformers:
    try:
        return _SentenceTransformers()
    except ImportError as e:
        raise SraError(
            "--format sentence-transformers needs the sentence-transformers package: "
            "pip install 'sra-distill[bench]'"
        ) from e
