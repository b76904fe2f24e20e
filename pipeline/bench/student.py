"""`pipeline bench student`: the deployment frontier in one run, quality beside speed.

Every model encodes the same sentences, text in, vectors out, tokenization included, for each
sentence set (``--sentences``, repeatable: ``stsb`` = the unique sentences of STS-B dev,
``wiki`` = 1,000 Wikipedia sentences split and filtered as ``pipeline embed`` does, or a file
with one sentence per line) and each thread count (``--threads 1,2``):

- each student (``--student``, repeatable) on each backend (``--backend torch,onnx,onnx-int8``):
  ``StudentEncoder.from_pretrained(folder, backend=...).encode(sentences, batch_size=...)``,
  exactly what a user calls (length-sorted batches; bf16 autocast on CPUs with native bf16);
- the teacher at its best stage-one setting: ``pipeline.teacher.Teacher`` (dtype auto = bf16
  where native, Linear weights cast once, optional ``--compile``), sentences sorted by length
  and cut into batches by the same token budget as ``pipeline embed``; with ``--teacher-onnx``
  also exported to ONNX and run on ONNX Runtime, fp32 and int8 (``bench/onnx_teacher.py``);
- a BERT-base-sized encoder with random weights (the paper's teacher size), built in code and
  run exactly like the teacher (and on ONNX Runtime with ``--teacher-onnx``), on at most 1,000
  of the sentences (``--bert-base-sentences``), for speed only;
- with ``--model2vec DIR``, a static baseline: Model2Vec distilled from the same teacher (into
  DIR first when DIR does not hold one; needs the ``bench`` extra).

Quality beside speed (on by default; ``--no-quality`` skips it): STS-B dev zero-shot Spearman
of cosine similarity for every model that has a meaning (not the random BERT); for each ONNX
row, the cosine of its vector to the torch fp32 model's, per STS-B dev sentence (min, mean);
and for ``--student FOLDER:RUN`` (or a fine-tuned run given directly), the dev metric of the
fine-tuned run RUN (``pipeline finetune --out``) on each backend.

Timing. Throughput: one untimed warm-up pass, then three timed passes; the median is the
headline (all three are in the JSON). Latency: ``--latency-samples`` calls with one sentence
each, after ten untimed calls; p50 and p95. Speed-ups are against the fastest fp32 teacher row
(torch, or ONNX: the teacher's own answers) and the fastest BERT-base row of the same sentence
set and thread count. Everything runs on the CPU.

This module builds the students' rows, runs every row on every set and thread count, works out
the speed-ups and the target, and renders the tables. The rest is beside it in
`pipeline/bench/`: the baselines (teacher, random BERT-base, Model2Vec) and the row type `Entry`
in `baselines.py`, the quality columns in `quality.py`, the sentence sets in `sentence_sets.py`,
how one encoder is timed in `timing.py`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.errors import SraError
from pipeline.bench.baselines import (
    BERT,
    BERT_BASE_SIZE,
    CPU_TOKEN_BUDGET,
    TEACHER,
    Entry,
    bert_entries,
    load_teacher,
    params,
    static_entry,
    teacher_entries,
)
from pipeline.bench.machine import machine_info, machine_line
from pipeline.bench.quality import (
    QualityRefs,
    agreement,
    load_model,
    read_sts_pairs,
    sts_spearman,
    task_quality,
)
from pipeline.bench.sentence_sets import SentenceSet, latency_picks, load_set, subset
from pipeline.bench.timing import LATENCY_WARMUP_CALLS, TIMED_PASSES, latency, throughput

BERT_BASE_MAX_SENTENCES = 1000
BACKENDS = ("torch", "onnx", "onnx-int8")
# The deployment targets, checked on the Wikipedia set at the most threads measured.
TARGET = {"min_stsb_spearman": 0.83, "vs_teacher": 12.0, "vs_bert_base": 80.0, "max_p50_ms": 1.0}

STUDENT = "student"


@dataclass
class StudentSpec:
    folder: Path  # the StudentEncoder folder
    run: Path | None = None  # a fine-tuned run whose dev metric is reported
    label: str = ""


def bench_student(
    students: Sequence[str | Path],
    sentences: Sequence[str | Path] | None = None,
    *,
    limit: int | None = None,
    batch_size: int = 256,
    latency_samples: int = 200,
    threads: Sequence[int] | None = None,
    backends: Sequence[str] = ("torch",),
    teacher: str | None = None,
    compile: bool = False,
    teacher_onnx: bool = False,
    bert_base: bool = True,
    bert_base_size: Sequence[int] = BERT_BASE_SIZE,
    bert_base_sentences: int = BERT_BASE_MAX_SENTENCES,
    model2vec: Path | None = None,
    quality: bool = True,
) -> dict[str, Any]:
    """Measure every model on every sentence set and thread count; JSON-ready results."""
    if batch_size < 1 or latency_samples < 1 or bert_base_sentences < 1:
        raise SraError("--batch-size, --latency-samples and --bert-base-sentences must be >= 1")
    if not students:
        raise SraError("pass at least one --student")
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise SraError(f"--backend takes a comma list of {', '.join(BACKENDS)}, got {backends}")
    thread_counts = list(threads) if threads else [torch.get_num_threads()]
    if any(t < 1 for t in thread_counts):
        raise SraError(f"--threads must be >= 1, got {thread_counts}")
    sets = [load_set(spec, limit) for spec in (sentences or ["stsb"])]
    specs = [parse_student(s) for s in students]
    started_load = os.getloadavg()
    previous_threads = torch.get_num_threads()
    notes: list[str] = []

    refs = QualityRefs(read_sts_pairs(notes) if quality else None, [])
    if refs.pairs is not None:
        refs.unique = list(dict.fromkeys(refs.pairs.first + refs.pairs.second))
    entries: list[Entry] = []
    first = _load_student(specs[0].folder)
    for spec in specs:
        entries += student_entries(spec, backends, batch_size, refs)
    tutor, teacher_notes = load_teacher(
        teacher, first.config.teacher, first.config.max_length, compile
    )
    notes += teacher_notes
    entries += teacher_entries(tutor, teacher_onnx, refs)
    if bert_base:
        entries += bert_entries(tutor, bert_base_size, teacher_onnx)
    if model2vec is not None:
        entries.append(static_entry(model2vec, tutor, notes))

    try:
        for count in thread_counts:
            torch.set_num_threads(count)
            for entry in entries:
                encode, one = entry.make(count)
                name = f"{_label(entry.row)} {entry.row['backend']}"
                for s in sets:
                    texts = subset(s.texts, bert_base_sentences) if entry.subset else s.texts
                    _progress(f"{name}: {s.name}, {count} threads")
                    speed = throughput(encode, texts)
                    speed.update(latency(one, latency_picks(texts, latency_samples)))
                    if entry.subset:
                        speed["sentences"] = len(texts)
                    entry.row["speed"].setdefault(s.name, {})[str(count)] = speed
                if quality and entry.quality is not None and count == max(thread_counts):
                    _progress(f"{name}: quality")
                    entry.row["quality"] = entry.quality(encode)
    finally:
        torch.set_num_threads(previous_threads)

    rows = [e.row for e in entries]
    _speedups(rows, sets, thread_counts)
    return {
        "benchmark": "pipeline bench student",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        "load_average_before_after": [round(started_load[0], 2), round(os.getloadavg()[0], 2)],
        "sentences": [
            {
                "name": s.name,
                "source": s.source,
                "count": len(s.texts),
                "mean_tokens": _mean([len(e.ids) for e in tutor.backend.encode_batch(s.texts)]),
            }
            for s in sets
        ],
        "threads": thread_counts,
        "throughput": f"median of {TIMED_PASSES} timed passes after one warm-up pass",
        "latency": f"{latency_samples} single-sentence encode calls after "
        f"{LATENCY_WARMUP_CALLS} warm-up calls",
        "student_batch_size": batch_size,
        "teacher_token_budget": CPU_TOKEN_BUDGET,
        "models": rows,
        "target": _target(rows, sets, thread_counts),
        "notes": notes,
    }


def _progress(what: str) -> None:
    """A long benchmark says where it is (stderr, so the tables and JSON stay clean)."""
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ students


def parse_student(spec: str | Path) -> StudentSpec:
    """``FOLDER``, ``FOLDER:RUN`` (a fine-tuned run whose dev metric to report), or a
    fine-tuned run itself (its ``encoder/`` is timed, its metric reported)."""
    from student.task_folder import is_task_run

    text = str(spec)
    folder, run = Path(text), None
    if not folder.exists() and ":" in text:
        left, right = text.rsplit(":", 1)
        folder, run = Path(left), Path(right)
        if not run.is_dir():
            raise SraError(f"--student {text}: the fine-tuned run {run} is not a folder")
    elif is_task_run(folder):
        run = folder
    return StudentSpec(student_folder(folder), run, label=text)


def student_folder(path: Path) -> Path:
    """The folder holding the StudentEncoder: RUN itself, or RUN/encoder for runs (such as
    fine-tuning) that keep it in a subfolder."""
    path = Path(path)
    if not (path / "config.json").is_file() and (path / "encoder" / "config.json").is_file():
        return path / "encoder"
    return path


def student_entries(
    spec: StudentSpec, backends: Sequence[str], batch_size: int, refs: QualityRefs
) -> list[Entry]:
    """One row per backend; the ONNX graph is built (and quantized) once, sessions per thread
    count, since an ONNX Runtime session's thread pool is fixed when it opens."""
    from student.deploy.encoder import OnnxStudentEncoder, load_encoder

    base = _load_student(spec.folder)
    entries = []
    for backend in backends:
        loaded = (
            base
            if backend == "torch"
            else load_model(lambda b=backend: load_encoder(spec.folder, b))
        )
        on_disk = (
            _mb(spec.folder / "model.safetensors")
            if backend == "torch"
            else round(len(loaded.onnx_model) / 1e6, 1)
        )
        row = {
            "model": STUDENT,
            "backend": backend,
            "dtype": _student_dtype(backend),
            "path": str(spec.folder),
            "name": spec.label,
            "params": params(base.model),
            "mb_on_disk": on_disk,
            "speed": {},
        }

        def make(count: int, loaded: Any = loaded, backend: str = backend) -> Any:
            encoder = loaded
            if backend != "torch":
                encoder = OnnxStudentEncoder(
                    loaded.config,
                    loaded.tokenizer,
                    loaded.onnx_model,
                    int8=loaded.backend == "onnx-int8",
                    threads=count,
                )

            def encode(texts: list[str]) -> np.ndarray:
                return encoder.encode(texts, batch_size=batch_size)

            return encode, encoder.encode

        entries.append(
            Entry(row, make, quality=_student_quality(spec, backend, base, refs, batch_size))
        )
    return entries


def _student_dtype(backend: str) -> str:
    if backend == "onnx-int8":
        return "int8"
    if backend == "onnx":
        return "fp32"
    from student.runtime import cpu_bf16_supported

    return "bf16" if cpu_bf16_supported() else "fp32"


def _student_quality(
    spec: StudentSpec, backend: str, base: Any, refs: QualityRefs, batch_size: int
) -> Callable[[Callable[[list[str]], Any]], dict[str, Any]]:
    def measure(encode: Callable[[list[str]], Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if refs.pairs is not None:
            vectors = np.asarray(encode(refs.unique))
            out["stsb_spearman"] = sts_spearman(refs, vectors)
            key = f"student:{spec.folder}"
            if backend == "torch":
                refs.references[key] = vectors
            else:
                reference = refs.references.get(key)
                if reference is None:
                    reference = refs.references[key] = base.encode(
                        refs.unique, batch_size=batch_size
                    )
                out.update(agreement(vectors, reference))
        if spec.run is not None:
            out.update(task_quality(spec.run, backend))
        return out

    return measure


def _load_student(folder: Path) -> Any:
    from student.encoder import StudentEncoder

    return load_model(lambda: StudentEncoder.from_pretrained(folder))


# ------------------------------------------------------------------------------ speed-ups


def _speedups(rows: list[dict[str, Any]], sets: list[SentenceSet], threads: list[int]) -> None:
    """``row["speedup"][set][threads]``: vs the fastest fp32 teacher row and BERT-base row."""
    for s in sets:
        for count in map(str, threads):
            teacher = _fastest(rows, s.name, count, TEACHER, ("torch", "onnx"))
            bert = _fastest(rows, s.name, count, BERT, ("torch", "onnx"))
            for row in rows:
                rate = row["speed"][s.name][count]["sentences_per_second"]
                row.setdefault("speedup", {}).setdefault(s.name, {})[count] = {
                    "vs_teacher": round(rate / teacher, 2) if teacher else None,
                    "vs_bert_base": round(rate / bert, 1) if bert else None,
                }


def _fastest(
    rows: list[dict[str, Any]], set_name: str, count: str, model: str, backends: Sequence[str]
) -> float | None:
    rates = [
        r["speed"][set_name][count]["sentences_per_second"]
        for r in rows
        if r["model"] == model and r["backend"] in backends
    ]
    return max(rates) if rates else None


def _target(
    rows: list[dict[str, Any]], sets: list[SentenceSet], threads: list[int]
) -> dict[str, Any]:
    """The fastest student row with STS-B Spearman >= 0.83, against the targets, on the
    Wikipedia set (else the last set) at the most threads measured."""
    names = [s.name for s in sets]
    set_name = "wiki" if "wiki" in names else names[-1]
    count = str(max(threads))
    result: dict[str, Any] = {**TARGET, "sentences": set_name, "threads": int(count)}
    eligible = [
        r
        for r in rows
        if r["model"] == STUDENT
        and (r.get("quality") or {}).get("stsb_spearman", -1) >= TARGET["min_stsb_spearman"]
    ]
    if not eligible:
        best = max(
            (r for r in rows if r["model"] == STUDENT),
            key=lambda r: r["speed"][set_name][count]["sentences_per_second"],
        )
        result.update(_measured(best, set_name, count), eligible=False, met=False)
        return result
    best = max(eligible, key=lambda r: r["speed"][set_name][count]["sentences_per_second"])
    measured = _measured(best, set_name, count)
    met = (
        (measured["vs_teacher"] or 0) >= TARGET["vs_teacher"]
        and (measured["vs_bert_base"] or 0) >= TARGET["vs_bert_base"]
        and measured["p50_ms"] is not None
        and measured["p50_ms"] <= TARGET["max_p50_ms"]
    )
    result.update(measured, eligible=True, met=met)
    return result


def _measured(row: dict[str, Any], set_name: str, count: str) -> dict[str, Any]:
    speed, up = row["speed"][set_name][count], row["speedup"][set_name][count]
    return {
        "student": row["name"],
        "backend": row["backend"],
        "stsb_spearman": (row.get("quality") or {}).get("stsb_spearman"),
        "vs_teacher": up["vs_teacher"],
        "vs_bert_base": up["vs_bert_base"],
        "p50_ms": speed["p50_ms"],
    }


# ------------------------------------------------------------------------------ facts


def _mb(path: Path) -> float:
    """Megabytes (10^6 bytes) of a file."""
    return round(path.stat().st_size / 1e6, 1)


def _mean(values: list[int]) -> float:
    return round(float(np.mean(values)), 1) if values else 0.0


# ------------------------------------------------------------------------------ output


def _columns(result: dict[str, Any]) -> list[str]:
    top = str(max(result["threads"]))
    columns = ["model", "backend", "params", "MB", "STS-B ρ", "task", "cos min"]
    for count in map(str, result["threads"]):
        columns += [f"sent/s {count}t", f"p50 ms {count}t", f"p95 ms {count}t"]
    return columns + [f"× teacher {top}t", f"× BERT-base {top}t"]


def table_rows(result: dict[str, Any], set_name: str) -> list[list[str]]:
    """One sentence set's rows as display strings, in the order of ``_columns``."""
    top = str(max(result["threads"]))
    out = []
    for row in result["models"]:
        q = row.get("quality") or {}
        mb = _number(row["mb_on_disk"])
        if row.get("mb_fp32") is not None:
            mb = f"({_number(row['mb_fp32'])} fp32)"
        task = f"{q['task']} {q['task_score']:.3f}" if q.get("task_score") is not None else "-"
        cells = [
            _label(row),
            row["backend"],
            f"{row['params'] / 1e6:.2f}M",
            mb,
            f"{q['stsb_spearman']:.3f}" if "stsb_spearman" in q else "-",
            task,
            f"{q['cos_to_fp32_min']:.4f}" if "cos_to_fp32_min" in q else "-",
        ]
        for count in map(str, result["threads"]):
            speed = row["speed"][set_name][count]
            cells += [
                f"{speed['sentences_per_second']:,.0f}",
                _ms(speed["p50_ms"]),
                _ms(speed["p95_ms"]),
            ]
        up = row["speedup"][set_name][top]
        cells += [_times(up["vs_teacher"]), _times(up["vs_bert_base"])]
        out.append(cells)
    return out


def render(result: dict[str, Any]) -> list[Any]:
    """One rich table per sentence set, the targets and machine in the last caption."""
    from rich.table import Table

    tables = []
    for i, s in enumerate(result["sentences"]):
        last = i == len(result["sentences"]) - 1
        table = Table(
            title=f"{s['name']}: {s['count']:,} sentences ({s['mean_tokens']} tokens on average)",
            caption=_caption(result) if last else None,
        )
        for name in _columns(result):
            table.add_column(name, justify="left" if name in ("model", "backend") else "right")
        for cells in table_rows(result, s["name"]):
            table.add_row(*cells)
        tables.append(table)
    return tables


def markdown(result: dict[str, Any]) -> str:
    """The same tables as markdown, for docs/benchmarks.md."""
    lines = []
    for s in result["sentences"]:
        lines += [
            f"**{s['name']}**: {s['count']:,} sentences ({s['mean_tokens']} tokens on average)",
            "",
        ]
        columns = _columns(result)
        lines.append("| " + " | ".join(columns) + " |")
        lines.append(
            "|" + "|".join("---" if c in ("model", "backend") else "---:" for c in columns) + "|"
        )
        lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(result, s["name"])]
        lines.append("")
    lines += [f"- {line}" for line in _caption(result).splitlines()]
    return "\n".join(lines) + "\n"


def _caption(result: dict[str, Any]) -> str:
    t = result["target"]
    if t.get("eligible"):
        verdict = "met" if t["met"] else "NOT met"
        head = (
            f"target (fastest student with STS-B ρ >= {t['min_stsb_spearman']}, {t['sentences']}, "
            f"{t['threads']} threads: >= {t['vs_teacher']:.0f}x teacher, >= "
            f"{t['vs_bert_base']:.0f}x BERT-base, p50 <= {t['max_p50_ms']} ms): {verdict} — "
            f"{t['student']} on {t['backend']}: {_times(t['vs_teacher'])} teacher, "
            f"{_times(t['vs_bert_base'])} BERT-base, p50 {_ms(t['p50_ms'])} ms"
        )
    else:
        head = (
            f"target: NOT met — no student reaches STS-B ρ >= {t['min_stsb_spearman']} (fastest "
            f"student: {t['student']} on {t['backend']}, {_times(t['vs_teacher'])} teacher, "
            f"{_times(t['vs_bert_base'])} BERT-base, p50 {_ms(t['p50_ms'])} ms)"
        )
    lines = [
        head,
        f"throughput: {result['throughput']}; latency: {result['latency']}; "
        f"speed-ups vs the fastest fp32 teacher / BERT-base row",
        *(f"{row['model']} {row['backend']}: {_describe(row)}" for row in result["models"]),
        machine_line(result) + f"; load average {result['load_average_before_after']}",
        *result["notes"],
    ]
    return "\n".join(lines)


def _label(row: dict[str, Any]) -> str:
    if row["model"] == STUDENT:
        return f"student {Path(row['path']).name if row['path'] else ''}".strip()
    return row["model"]


def _describe(row: dict[str, Any]) -> str:
    if row["model"] == STUDENT:
        return f"{row['name']} ({row['dtype']})"
    how = f"{row['dtype']}{', compiled' if row.get('compiled') else ''}"
    sentences = {s.get("sentences") for sets in row["speed"].values() for s in sets.values()}
    sentences.discard(None)
    where = f", on at most {max(sentences):,} sentences" if sentences else ""
    return f"{row['name']} ({how}){where}"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}x" if value >= 10 else f"{value:.2f}x"
