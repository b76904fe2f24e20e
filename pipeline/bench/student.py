"""`pipeline bench student`: the student's size and speed against its teacher and BERT-base.

Every model encodes the same sentences (default: the unique sentences of STS-B dev), text in,
vectors out, tokenization included:

- the student: ``StudentEncoder.encode(sentences, batch_size=...)``, exactly what a user calls
  (length-sorted batches, bf16 autocast on CPUs with native bf16);
- the teacher at its best stage-one setting: ``pipeline.teacher.Teacher`` (dtype auto = bf16
  where native, Linear weights cast once, optional ``--compile``), sentences sorted by length
  and cut into batches by the same token budget as ``pipeline embed``;
- a BERT-base-sized encoder with random weights (the paper's teacher size), built in code
  and run exactly like the teacher, on at most 1,000 of the sentences, for throughput only.

Throughput: one untimed warm-up pass (kernel selection, allocator pools, compilation), then
three timed passes; the headline is the median pass (all three are in the JSON). Latency:
``--latency-samples`` calls with one sentence each, after a few untimed calls; p50 and p95.
Everything runs on the CPU.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.errors import SraError
from pipeline.bench.machine import machine_info, machine_line

REPO = Path(__file__).resolve().parents[1]
STS_B_DEV = REPO.parent / "shared" / "data" / "glue" / "STS-B" / "dev.tsv"
TIMED_PASSES = 3
LATENCY_WARMUP_CALLS = 10
BERT_BASE_SIZE = (768, 12, 12, 3072)  # hidden, layers, heads, intermediate
BERT_BASE_MAX_SENTENCES = 1000
CPU_TOKEN_BUDGET = 4096  # pipeline embed's default on CPU: padded tokens per teacher batch
SPEEDUP_TARGET = 5.0

Encode = Callable[[list[str]], object]


def bench_student(
    student: Path,
    sentences_file: Path | None = None,
    *,
    limit: int | None = None,
    batch_size: int = 256,
    latency_samples: int = 200,
    teacher: str | None = None,
    compile: bool = False,
    bert_base: bool = True,
    bert_base_size: Sequence[int] = BERT_BASE_SIZE,
) -> dict[str, Any]:
    """Measure the student, its teacher and (optionally) a random BERT-base; return JSON-ready
    results. See the module docstring for what each number is."""
    if batch_size < 1 or latency_samples < 1:
        raise SraError("--batch-size and --latency-samples must be >= 1")
    texts, source = load_sentences(sentences_file, limit)
    folder = student_folder(student)
    started_load = os.getloadavg()

    picks = _latency_picks(texts, latency_samples)
    student_row, recorded, max_length = _student_row(folder, texts, picks, batch_size)
    rows = [student_row]

    tutor, notes = _load_teacher(teacher, recorded, max_length, compile)
    run_teacher = teacher_encoder(tutor)
    tokens = [len(e.ids) for e in tutor.backend.encode_batch(texts)]
    teacher_row = {
        "model": "teacher",
        "name": tutor.name,
        "dtype": tutor.dtype,
        "compiled": compile,
        "params": _params(tutor.model),
        "mb_on_disk": _weights_mb(tutor.source),
        **_throughput(run_teacher, texts),
        **_latency(lambda s: run_teacher([s]), picks),
    }
    rows.append(teacher_row)

    if bert_base:
        rows.append(_bert_base_row(tutor, texts, bert_base_size))
    del tutor
    for row in rows:
        row["speedup_vs_teacher"] = round(
            row["sentences_per_second"] / teacher_row["sentences_per_second"], 2
        )
    speedup = rows[0]["speedup_vs_teacher"]
    return {
        "benchmark": "pipeline bench student",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        "load_average_before_after": [round(started_load[0], 2), round(os.getloadavg()[0], 2)],
        "sentences": {"source": source, "count": len(texts), "mean_tokens": _mean(tokens)},
        "throughput": f"median of {TIMED_PASSES} timed passes after one warm-up pass",
        "latency": f"{latency_samples} single-sentence encode calls after "
        f"{LATENCY_WARMUP_CALLS} warm-up calls",
        "student_batch_size": batch_size,
        "teacher_token_budget": CPU_TOKEN_BUDGET,
        "models": rows,
        "target": {
            "student_speedup_vs_teacher": SPEEDUP_TARGET,
            "measured": speedup,
            "met": speedup >= SPEEDUP_TARGET,
        },
        "notes": notes,
    }


# ------------------------------------------------------------------------------ inputs


def load_sentences(path: Path | None, limit: int | None) -> tuple[list[str], str]:
    """Sentences, one per line of ``path``; by default the unique sentences of STS-B dev."""
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SraError(f"cannot read --sentences {path}: {e}") from None
        texts, source = [line.strip() for line in lines if line.strip()], str(path)
    elif STS_B_DEV.is_file():
        texts, source = _sts_b_sentences(STS_B_DEV), f"{STS_B_DEV} (unique sentences)"
    else:
        raise SraError(
            f"no --sentences FILE given and STS-B dev is not at {STS_B_DEV}; "
            "pass --sentences FILE (one sentence per line)"
        )
    if limit is not None:
        texts = texts[:limit]
    if not texts:
        raise SraError(f"no sentences to encode in {source}")
    return texts, source


def _sts_b_sentences(path: Path) -> list[str]:
    # GLUE TSVs are unquoted: split on tabs only (STS-B holds raw `"` characters).
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split("\t")
    columns = [header.index("sentence1"), header.index("sentence2")]
    seen: dict[str, None] = {}
    for line in lines[1:]:
        fields = line.split("\t")
        for c in columns:
            if c < len(fields) and fields[c].strip():
                seen.setdefault(fields[c].strip())
    return list(seen)


def student_folder(path: Path) -> Path:
    """The folder holding the StudentEncoder: RUN itself, or RUN/encoder for runs (such as
    fine-tuning) that keep it in a subfolder."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "encoder" / "config.json").is_file():
        return path / "encoder"
    return path


def _student_row(
    folder: Path, texts: list[str], picks: list[str], batch_size: int
) -> tuple[dict[str, Any], str, int]:
    """The student's measurements, and the teacher and max length its config records."""
    encoder = _load_student(folder)
    row = {
        "model": "student",
        "path": str(folder),
        "params": _params(encoder.model),
        "mb_on_disk": _mb(folder / "model.safetensors"),
        **_throughput(lambda batch: encoder.encode(batch, batch_size=batch_size), texts),
        **_latency(encoder.encode, picks),
    }
    return row, encoder.config.teacher, encoder.config.max_length


def _load_student(folder: Path) -> Any:
    from cache.errors import SraError
    from student.encoder import StudentEncoder

    try:
        return StudentEncoder.from_pretrained(folder)
    except SraError as e:
        raise SraError(str(e)) from None


def _load_teacher(
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


# ------------------------------------------------------------------------------ models


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


def _bert_base_row(teacher: Any, texts: list[str], size: Sequence[int]) -> dict[str, Any]:
    # An even spread over the sentences, so its length mix matches the full set's.
    step = max(1, -(-len(texts) // BERT_BASE_MAX_SENTENCES))
    subset = texts[::step][:BERT_BASE_MAX_SENTENCES]
    bert = random_bert_base(teacher, size)
    row = {
        "model": "BERT-base (random)",
        "name": bert.name,
        "dtype": teacher.dtype,
        "compiled": teacher.compiled,
        "params": _params(bert.model),
        "mb_on_disk": None,  # never saved; mb_fp32 is what its weights would take
        "mb_fp32": round(_params(bert.model) * 4 / 1e6, 1),
        **_throughput(teacher_encoder(bert), subset),
        "p50_ms": None,
        "p95_ms": None,
        "sentences": len(subset),
        "mean_tokens": _mean([len(e.ids) for e in teacher.backend.encode_batch(subset)]),
    }
    del bert
    return row


# ------------------------------------------------------------------------------ timing


def _throughput(encode: Encode, texts: list[str]) -> dict[str, Any]:
    encode(texts)  # warm-up: kernel selection, allocator pools, compilation
    rates = []
    for _ in range(TIMED_PASSES):
        t0 = time.perf_counter()
        encode(texts)
        rates.append(len(texts) / (time.perf_counter() - t0))
    return {
        "sentences_per_second": round(float(np.median(rates)), 1),
        "passes_sentences_per_second": [round(r, 1) for r in rates],
    }


def _latency(encode_one: Callable[[str], object], picks: list[str]) -> dict[str, float]:
    for i in range(LATENCY_WARMUP_CALLS):
        encode_one(picks[i % len(picks)])
    times = []
    for text in picks:
        t0 = time.perf_counter()
        encode_one(text)
        times.append((time.perf_counter() - t0) * 1000)
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2)}


def _latency_picks(texts: list[str], samples: int) -> list[str]:
    """``samples`` sentences spread evenly over the set (repeating if it is smaller)."""
    return [texts[i * len(texts) // samples % len(texts)] for i in range(samples)]


# ------------------------------------------------------------------------------ facts


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _mb(path: Path) -> float:
    """Megabytes (10^6 bytes) of a file."""
    return round(path.stat().st_size / 1e6, 1)


def _weights_mb(source: str) -> float | None:
    folder = Path(source)
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    return round(sum(f.stat().st_size for f in files) / 1e6, 1) if files else None


def _mean(values: list[int]) -> float:
    return round(float(np.mean(values)), 1) if values else 0.0


# ------------------------------------------------------------------------------ output


def render(result: dict[str, Any]) -> Any:
    """The results as a rich table (prints as a markdown-like grid)."""
    from rich.table import Table

    s = result["sentences"]
    table = Table(
        title=f"{s['count']:,} sentences ({s['mean_tokens']} tokens on average)",
        caption=_caption(result),
    )
    for name in ("model", "params", "MB on disk", "sent/s", "p50 ms", "p95 ms", "speed-up"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for row in result["models"]:
        mb = _number(row["mb_on_disk"])
        if row.get("mb_fp32") is not None:
            mb = f"({_number(row['mb_fp32'])} fp32)"
        table.add_row(
            row["model"],
            f"{row['params'] / 1e6:.2f}M",
            mb,
            f"{row['sentences_per_second']:,.1f}",
            _ms(row["p50_ms"]),
            _ms(row["p95_ms"]),
            f"{row['speedup_vs_teacher']:.2f}x",
        )
    return table


def _caption(result: dict[str, Any]) -> str:
    t = result["target"]
    verdict = "met" if t["met"] else "NOT met"
    lines = [
        f"student speed-up {t['measured']:.2f}x vs teacher (target >= "
        f"{t['student_speedup_vs_teacher']:.0f}x): {verdict}",
        f"throughput: {result['throughput']}; latency: {result['latency']}",
        *(_describe(row) for row in result["models"]),
        machine_line(result),
        *result["notes"],
    ]
    return "\n".join(lines)


def _describe(row: dict[str, Any]) -> str:
    if "path" in row:
        return f"{row['model']}: {row['path']}"
    how = f"{row['dtype']}{', compiled' if row['compiled'] else ''}"
    where = (
        f", on {row['sentences']:,} of the sentences ({row['mean_tokens']} tokens on average)"
        if "sentences" in row
        else ""
    )
    return f"{row['model']}: {row['name']} ({how}){where}"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
