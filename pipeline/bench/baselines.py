"""The baselines `pipeline bench student` times beside the students, and the row they share.

`Entry` is one row of the table (students' rows too): what it is, and how to get its encoder
for a thread count. The baselines: the teacher as stage one runs it (`teacher_entries`; with
`--teacher-onnx` also on ONNX Runtime, fp32 and int8), a BERT-base-sized encoder with random
weights for speed only (`bert_entries`), and Model2Vec distilled from the teacher
(`static_entry`). Separate from `pipeline/bench/student.py` because they are the reference
points, not the models under test: each needs the teacher (and `transformers`) to load.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.errors import SraError
from pipeline.bench.quality import QualityRefs, agreement, read_sts_pairs, sts_spearman

BERT_BASE_SIZE = (768, 12, 12, 3072)  # hidden, layers, heads, intermediate
CPU_TOKEN_BUDGET = 4096  # pipeline embed's default on CPU: padded tokens per teacher batch
TEACHER, BERT, STATIC = "teacher", "BERT-base (random)", "static (Model2Vec)"


@dataclass
class Entry:
    """One row of the table: what it is (``row``, JSON-ready) and how to get an encoder for
    a thread count (``make(threads) -> (encode(list) -> vectors, encode_one(str) or None)``)."""

    row: dict[str, Any]
    make: Callable[[int], tuple[Callable[[list[str]], Any], Callable[[str], Any] | None]]
    subset: bool = False  # BERT-base: at most BERT_BASE_MAX_SENTENCES sentences
    quality: Callable[[Callable[[list[str]], Any]], dict[str, Any]] | None = None


def teacher_entries(tutor: Any, with_onnx: bool, refs: QualityRefs) -> list[Entry]:
    run = teacher_encoder(tutor)
    row = {
        "model": TEACHER,
        "backend": "torch",
        "dtype": tutor.dtype,
        "compiled": tutor.compiled,
        "name": tutor.name,
        "params": params(tutor.model),
        "mb_on_disk": _weights_mb(tutor.source),
        "speed": {},
    }
    entries = [
        Entry(row, lambda count: (run, lambda s: run([s])), quality=_teacher_quality(refs, None))
    ]
    if with_onnx:
        entries += _onnx_rows(tutor, row, refs, quality=True)
    return entries


def _onnx_rows(
    tutor: Any, torch_row: dict[str, Any], refs: QualityRefs, quality: bool
) -> list[Entry]:
    """The same encoder exported to ONNX, on ONNX Runtime in fp32 and with int8 weights."""
    from pipeline.bench.onnx_teacher import export_encoder, onnx_encoder
    from student.deploy.session import quantize_int8

    fp32 = export_encoder(tutor.model, int(tutor.config.vocab_size))
    entries = []
    for backend, model in (("onnx", fp32), ("onnx-int8", quantize_int8(fp32))):
        row = {
            **{k: v for k, v in torch_row.items() if k not in ("speed", "compiled")},
            "backend": backend,
            "dtype": "int8" if backend == "onnx-int8" else "fp32",
            "mb_on_disk": round(len(model) / 1e6, 1) if torch_row["mb_on_disk"] else None,
            "speed": {},
        }

        def make(count: int, model: bytes = model) -> Any:
            run = onnx_encoder(tutor, model, CPU_TOKEN_BUDGET, count)
            return run, lambda s: run([s])

        check = _teacher_quality(refs, tutor) if quality else None
        entries.append(Entry(row, make, subset=torch_row["model"] == BERT, quality=check))
    return entries


def _teacher_quality(
    refs: QualityRefs, tutor: Any | None
) -> Callable[[Callable[[list[str]], Any]], dict[str, Any]] | None:
    """STS-B Spearman; for ONNX rows (``tutor`` given) also the cosine to the torch teacher."""
    if refs.pairs is None:
        return None

    def measure(encode: Callable[[list[str]], Any]) -> dict[str, Any]:
        vectors = np.asarray(encode(refs.unique))
        out: dict[str, Any] = {"stsb_spearman": sts_spearman(refs, vectors)}
        if tutor is None:
            refs.references["teacher"] = vectors
        else:
            reference = refs.references.get("teacher")
            if reference is None:
                reference = refs.references["teacher"] = teacher_encoder(tutor)(refs.unique)
            out.update(agreement(vectors, reference))
        return out

    return measure


def bert_entries(tutor: Any, size: Sequence[int], with_onnx: bool) -> list[Entry]:
    bert = random_bert_base(tutor, size)
    run = teacher_encoder(bert)
    row = {
        "model": BERT,
        "backend": "torch",
        "dtype": tutor.dtype,
        "compiled": tutor.compiled,
        "name": bert.name,
        "params": params(bert.model),
        "mb_on_disk": None,  # never saved; mb_fp32 is what its weights would take
        "mb_fp32": round(params(bert.model) * 4 / 1e6, 1),
        "speed": {},
    }
    entries = [Entry(row, lambda count: (run, lambda s: run([s])), subset=True)]
    if with_onnx:
        entries += _onnx_rows(bert, row, QualityRefs(None, []), quality=False)
    return entries


def static_entry(folder: Path, tutor: Any, notes: list[str]) -> Entry:
    """Model2Vec from the teacher: loaded from ``folder``, or distilled into it first."""
    try:
        from model2vec import StaticModel
    except ImportError as e:
        raise SraError("--model2vec needs model2vec: pip install 'sra-distill[bench]'") from e
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        started = time.perf_counter()
        distill_model2vec(tutor.source, folder)
        notes.append(
            f"Model2Vec distilled from {tutor.name} into {folder} "
            f"({time.perf_counter() - started:.0f} s, pca_dims 256)"
        )
    model = StaticModel.from_pretrained(str(folder))
    params = int(np.prod(model.embedding.shape))
    files = [p for p in folder.iterdir() if p.suffix == ".safetensors"]
    row = {
        "model": STATIC,
        "backend": "numpy",
        "dtype": str(model.embedding.dtype),
        "name": str(folder),
        "params": params,
        "mb_on_disk": round(sum(p.stat().st_size for p in files) / 1e6, 1),
        "speed": {},
    }

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=1024)

    def quality(run: Callable[[list[str]], Any]) -> dict[str, Any]:
        refs = QualityRefs(read_sts_pairs([]), [])
        if refs.pairs is None:
            return {}
        refs.unique = list(dict.fromkeys(refs.pairs.first + refs.pairs.second))
        return {"stsb_spearman": sts_spearman(refs, np.asarray(run(refs.unique)))}

    return Entry(row, lambda count: (encode, lambda s: model.encode([s])), quality=quality)


def distill_model2vec(teacher_source: str, folder: Path) -> None:
    """Model2Vec's own distillation from the teacher (its default recipe, 256 PCA dims)."""
    try:
        from model2vec.distill import distill
    except ImportError as e:
        raise SraError(
            "distilling Model2Vec needs model2vec[distill]: pip install 'sra-distill[bench]'"
        ) from e
    distill(model_name=teacher_source, pca_dims=256, device="cpu").save_pretrained(str(folder))


def load_teacher(
    name: str | None, recorded: str, max_length: int, compile: bool
) -> tuple[Any, list[str]]:
    """``--teacher``, else the teacher the student's config.json names, else the default."""
    from pipeline.teacher import Teacher

    kw: dict[str, Any] = {"max_length": max_length, "device": "cpu", "compile": compile}
    if name is not None:
        return Teacher(name, **kw), []
    if not recorded:
        return Teacher(None, **kw), ["the student's config.json names no teacher; used the default"]
    if os.path.isabs(recorded) and not Path(recorded).exists():
        # A local folder that is gone: asking the hub for it would only fail, slowly.
        note = f"the student's teacher folder {recorded} no longer exists; used the default"
        return Teacher(None, **kw), [note]
    try:
        return Teacher(recorded, **kw), []
    except SraError as e:
        note = f"the student's teacher {recorded!r} did not load ({e}); used the default teacher"
        return Teacher(None, **kw), [note]


def teacher_encoder(teacher: Any) -> Callable[[list[str]], np.ndarray]:
    """Text in, vectors out, as stage one runs the teacher: tokenize, sort by length, grow each
    batch while (members x longest) stays inside the token budget."""
    from pipeline.teacher import budget_batches

    def encode(texts: list[str]) -> np.ndarray:
        ids = [e.ids for e in teacher.backend.encode_batch(texts)]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        out = np.empty((len(ids), teacher.hidden_size), dtype=np.float32)
        for idx in budget_batches(lengths, CPU_TOKEN_BUDGET):
            out[idx] = teacher.encode([ids[k] for k in idx])["mean"]
        return out

    return encode


def random_bert_base(teacher: Any, size: Sequence[int]) -> Any:
    """A Teacher running a randomly initialised BERT of the given size (BERT-base by default),
    with the teacher's tokenizer, dtype, device and compile setting: speed does not depend on
    the weights, so no download is needed."""
    from transformers import BertConfig, BertModel

    from pipeline.teacher import DTYPES

    hidden, layers, heads, intermediate = (int(x) for x in size)
    vocab = max(int(teacher.config.vocab_size), teacher.backend.get_vocab_size(True))
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max(512, teacher.max_length),
    )
    torch.manual_seed(0)
    model = BertModel(config, add_pooling_layer=False).to(teacher.device).eval()
    if teacher.dtype != "fp32":
        # As Teacher._load does: Linear weights cast once instead of by autocast every call.
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(DTYPES[teacher.dtype])
    bert = copy.copy(teacher)  # tokenizer, dtype, device, max_length, pad id: the teacher's
    bert.name = f"random BERT (hidden {hidden}, {layers} layers, {heads} heads, ffn {intermediate})"
    bert.config, bert.model, bert.hidden_size, bert.poolings = config, model, hidden, ["mean"]
    bert.layers = {}  # only the last layer's mean is timed
    bert._forward = torch.compile(model, dynamic=True) if teacher.compiled else model
    return bert


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _weights_mb(source: str) -> float | None:
    folder = Path(source)
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    return round(sum(f.stat().st_size for f in files) / 1e6, 1) if files else None
