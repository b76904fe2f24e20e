"""`pipeline bench embed` and `bench startup`: stage one's speed, accuracy, memory and start-up.

Every number is measured in this run on this machine:
- `pipeline embed` (the real command, in a subprocess) on N Wikipedia sentences of the dump;
- sentence-transformers' `SentenceTransformer(<same folder>).encode(batch_size=64)` on exactly
  the sentences that landed in the cache, with the same max length;
- cosine of the cache's vectors to sentence-transformers' fp32 output, and to our own fp32 run;
- the teacher's useful FLOP/s (padding excluded) against a measured bf16/fp32 matmul peak;
- peak RSS of `pipeline embed` at N and 4N sentences (shards small enough that both roll over).

`bench startup` times whole processes, start-up included, as a user meets them on a small job:
`pipeline embed` (the CLI, a fresh cache) against a Python process that imports
sentence-transformers, loads the same model and encodes the same sentences; and where
`pipeline embed`'s start-up goes (`totals.startup_seconds` of its manifest).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache import open_cache
from cache.errors import SraError
from pipeline.corpus import WIKI_DUMP_ENV
from pipeline.teacher import Teacher, resolve_teacher


def bench_embed(
    wiki_dump: str | None, sentences: int, workdir: Path, memory_sentences: int = 4000
) -> dict[str, Any]:
    dump = wiki_dump or os.environ.get(WIKI_DUMP_ENV)
    if not dump or not Path(dump).exists():
        raise SraError(
            f"the benchmark needs a local WikiExtractor dump; pass --wiki-dump PATH "
            f"(e.g. ../shared/data/wiki/enwiki_2015_wikiextractor_AA-AB.txt.gz), got {dump!r}"
        )
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise SraError(
            "the benchmark compares against sentence-transformers: pip install -e '.[bench]'"
        ) from None
    workdir.mkdir(parents=True, exist_ok=True)
    # Scratch caches from an earlier run would be complete already and make a rerun a no-op.
    for name in ("auto", "fp32", "compiled", "mem1", "mem4"):
        if (workdir / name / "manifest.json").exists():
            shutil.rmtree(workdir / name)
    base = ["--corpus", "wiki", "--wiki-dump", dump, "--limit", str(sentences)]

    auto_wall = _run_embed([*base, "--out", str(workdir / "auto")])[0]
    fp32_wall = _run_embed([*base, "--out", str(workdir / "fp32"), "--dtype", "fp32"])[0]
    comp_wall = _run_embed([*base, "--out", str(workdir / "compiled"), "--compile"])[0]
    auto, fp32 = open_cache(workdir / "auto"), open_cache(workdir / "fp32")
    compiled = open_cache(workdir / "compiled")
    texts, lengths, vec_auto = _read(auto)
    _, _, vec_fp32 = _read(fp32)
    _, _, vec_comp = _read(compiled)

    model_dir = resolve_teacher(None)
    st = SentenceTransformer(model_dir, device="cpu")
    st.max_seq_length = auto.manifest.config["teacher"]["max_length"]
    st.encode(texts[:64], batch_size=64)  # warm-up
    t0 = time.perf_counter()
    vec_st = st.encode(texts, batch_size=64, convert_to_numpy=True)
    st_seconds = time.perf_counter() - t0
    del st

    teacher_cfg = auto.manifest.config["teacher"]
    forward_seconds = _forward_only(auto, teacher_cfg)
    forward_compiled_seconds = _forward_only(auto, teacher_cfg, compile=True)
    flops = float(sum(_encoder_flops(int(n), teacher_cfg) for n in lengths))
    totals = auto.manifest.totals
    peak = _matmul_peak()
    result: dict[str, Any] = {
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
        "sentences": len(texts),
        "mean_tokens": round(float(np.mean(lengths)), 1),
        "teacher": teacher_cfg["name"],
        "dtype_auto": teacher_cfg["dtype"],
        "pipeline_embed": {
            "sentences_per_second_streaming": totals["sentences_per_second"],
            "wall_seconds_including_startup": round(auto_wall, 1),
            "fp32_sentences_per_second_streaming": fp32.manifest.totals["sentences_per_second"],
            "fp32_wall_seconds_including_startup": round(fp32_wall, 1),
            "sentences_per_second_after_first_window": totals["steady_sentences_per_second"],
            "compiled_sentences_per_second_streaming": compiled.manifest.totals[
                "sentences_per_second"
            ],
            "compiled_sentences_per_second_after_first_window": compiled.manifest.totals[
                "steady_sentences_per_second"
            ],
            "compiled_wall_seconds_including_startup": round(comp_wall, 1),
        },
        "sentence_transformers_fp32_batch64": {
            "sentences_per_second": round(len(texts) / st_seconds, 1),
        },
        "speedup_vs_sentence_transformers": round(
            totals["sentences_per_second"] / (len(texts) / st_seconds), 2
        ),
        "speedup_vs_sentence_transformers_compiled_after_first_window": round(
            compiled.manifest.totals["steady_sentences_per_second"] / (len(texts) / st_seconds), 2
        ),
        "cosine": {
            "auto_vs_sentence_transformers_min": _min_cos(vec_auto, vec_st),
            "auto_vs_sentence_transformers_mean": _mean_cos(vec_auto, vec_st),
            "fp32_vs_sentence_transformers_min": _min_cos(vec_fp32, vec_st),
            "auto_vs_fp32_min": _min_cos(vec_auto, vec_fp32),
            "compiled_vs_fp32_min": _min_cos(vec_comp, vec_fp32),
        },
        "flops": {
            "useful_gflop_total": round(flops / 1e9, 1),
            "teacher_forward_seconds": round(forward_seconds, 2),
            "achieved_gflops_forward": round(flops / forward_seconds / 1e9, 1),
            "teacher_forward_seconds_compiled": round(forward_compiled_seconds, 2),
            "achieved_gflops_forward_compiled": round(flops / forward_compiled_seconds / 1e9, 1),
            "achieved_gflops_end_to_end": round(
                flops * totals["sentences_per_second"] / len(texts) / 1e9, 1
            ),
            "achieved_gflops_compiled_after_first_window": round(
                flops * compiled.manifest.totals["steady_sentences_per_second"] / len(texts) / 1e9,
                1,
            ),
            "matmul_peak_gflops": peak,
        },
    }
    key = teacher_cfg["dtype"] if teacher_cfg["dtype"] in peak else "fp32"
    f = result["flops"]
    f["share_of_peak_forward"] = round(f["achieved_gflops_forward"] / peak[key], 3)
    f["share_of_peak_forward_compiled"] = round(
        f["achieved_gflops_forward_compiled"] / peak[key], 3
    )
    f["share_of_peak_end_to_end"] = round(f["achieved_gflops_end_to_end"] / peak[key], 3)
    f["share_of_peak_compiled_after_first_window"] = round(
        f["achieved_gflops_compiled_after_first_window"] / peak[key], 3
    )
    if memory_sentences:
        result["peak_rss_mb"] = _memory(dump, memory_sentences, workdir)
    return result


# A whole sentence-transformers job, as a user would write it: import, load, encode.
ST_JOB = """
import json, sys
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(sys.argv[1], device="cpu")
model.max_seq_length = int(sys.argv[2])
with open(sys.argv[3], encoding="utf-8") as f:
    texts = json.load(f)
model.encode(texts, batch_size=64, convert_to_numpy=True)
"""


def bench_startup(
    wiki_dump: str | None, sentences: int, workdir: Path, repeats: int = 3
) -> dict[str, Any]:
    """Whole-process `pipeline embed` vs a whole-process sentence-transformers encode of the
    same sentences (same model, same max length), alternating, `repeats` times each; medians."""
    dump = wiki_dump or os.environ.get(WIKI_DUMP_ENV)
    if not dump or not Path(dump).exists():
        raise SraError(
            f"the benchmark needs a local WikiExtractor dump; pass --wiki-dump PATH, got {dump!r}"
        )
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        raise SraError(
            "the benchmark compares against sentence-transformers: pip install -e '.[bench]'"
        ) from None
    if repeats < 1:
        raise SraError(f"--repeats must be >= 1, got {repeats}")
    workdir.mkdir(parents=True, exist_ok=True)
    base = ["--corpus", "wiki", "--wiki-dump", dump, "--limit", str(sentences)]
    texts_file = workdir / "startup-sentences.json"
    embed_walls, st_walls, phases = [], [], []
    for r in range(repeats):
        out = workdir / f"startup-{r}"
        shutil.rmtree(out, ignore_errors=True)  # a complete cache would make the run a no-op
        embed_walls.append(_run_embed([*base, "--out", str(out)])[0])
        cache = open_cache(out)
        phases.append(cache.manifest.totals["startup_seconds"])
        if r == 0:
            import json

            texts, _, _ = _read(cache)
            texts_file.write_text(json.dumps(texts))
            max_length = cache.manifest.config["teacher"]["max_length"]
            streaming = cache.manifest.totals["sentences_per_second"]
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", ST_JOB, resolve_teacher(None), str(max_length), str(texts_file)],
            check=True,
            capture_output=True,
        )
        st_walls.append(time.perf_counter() - t0)
    embed_wall, st_wall = float(np.median(embed_walls)), float(np.median(st_walls))
    return {
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
        "sentences": len(texts),
        "repeats": repeats,
        "pipeline_embed_seconds": round(embed_wall, 2),
        "pipeline_embed_seconds_each": [round(x, 2) for x in embed_walls],
        "sentence_transformers_seconds": round(st_wall, 2),
        "sentence_transformers_seconds_each": [round(x, 2) for x in st_walls],
        "whole_process_speedup": round(st_wall / embed_wall, 2),
        "pipeline_streaming_sentences_per_second": streaming,
        # From process start: CLI imports, teacher (torch, transformers, weights), the first
        # window from the reader, the first teacher batch done.
        "pipeline_startup_seconds_median": {
            k: round(float(np.median([p[k] for p in phases])), 2) for k in phases[0]
        },
    }


def _run_embed(args: list[str]) -> tuple[float, int]:
    """Run the real CLI; returns (wall seconds, peak memory in MB of its process tree).

    Memory is the sum of PSS (proportional set size) over the embed process and its reader
    child, sampled every 50 ms: RSS would count the pages the forked reader shares with its
    parent twice.
    """
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "embed", *args, "--no-progress"],
            env=env,
            stderr=subprocess.PIPE,
            stdout=devnull,
            text=True,
        )
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _tree_pss_kb(proc.pid))
            time.sleep(0.05)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SraError(f"pipeline embed failed in the benchmark: {err.strip()[-300:]}")
    return time.perf_counter() - t0, peak // 1024


def _tree_pss_kb(pid: int) -> int:
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            pass  # the process ended between listing and reading
    return total


def _children(pid: int) -> list[int]:
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []
    return kids + [g for k in kids for g in _children(k)]


def _read(cache: Any) -> tuple[list[str], np.ndarray, np.ndarray]:
    table = cache.connect().sql("SELECT text, n_tokens, mean FROM sentences ORDER BY id")
    t = table.to_arrow_table()
    vecs = np.asarray(t["mean"].combine_chunks().values.to_numpy()).reshape(len(t), -1)
    return t["text"].to_pylist(), t["n_tokens"].to_numpy(), vecs


def _forward_only(cache: Any, teacher_cfg: dict[str, Any], compile: bool = False) -> float:
    """Seconds of teacher forward passes alone over the cache's token ids, same batching.

    The first 256 sentences run once before timing (kernel selection; compilation with
    `compile`), so this is the teacher's steady speed.
    """
    from cache.schema import schema_from_manifest
    from pipeline.embedding import encode_window
    from pipeline.reader import Window

    teacher = Teacher(
        None, ["mean"], teacher_cfg["max_length"], teacher_cfg["dtype"], "cpu", compile=compile
    )
    schema = schema_from_manifest(cache.manifest)
    ids = [x for s in cache.shards for x in cache.read_shard(s, ["input_ids"])[0].to_pylist()]
    texts = [""] * len(ids)
    window = Window(0, 0, texts, texts, ids, [False] * len(ids))
    encode_window(
        Window(0, 0, texts[:256], texts[:256], ids[:256], [False] * 256),
        teacher,
        4096,
        False,
        schema,
    )  # warm-up
    t0 = time.perf_counter()
    encode_window(window, teacher, 4096, False, schema)
    return time.perf_counter() - t0


def _encoder_flops(n: int, cfg: dict[str, Any]) -> float:
    """Multiply-adds x 2 of one BERT layer stack over n tokens (no padding counted)."""
    h = cfg["hidden_size"]
    ffn = 4 * h  # BERT's intermediate size; exact for MiniLM and BERT-base
    per_layer = 8 * n * h * h + 4 * n * h * ffn + 4 * n * n * h
    return float(cfg["num_layers"] * per_layer)


def _matmul_peak(size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """Best-of-N GFLOP/s of a square matmul, the practical ceiling on this CPU."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        torch.matmul(a, b)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t0)
        out[name] = round(2 * size**3 / best / 1e9, 1)
    return out


def _memory(dump: str, sentences: int, workdir: Path) -> dict[str, int]:
    args = [
        "--corpus",
        "wiki",
        "--wiki-dump",
        dump,
        "--shard-rows",
        "2048",
        "--window",
        "1024",
    ]
    small = _run_embed([*args, "--limit", str(sentences), "--out", str(workdir / "mem1")])[1]
    large = _run_embed([*args, "--limit", str(4 * sentences), "--out", str(workdir / "mem4")])[1]
    return {
        f"{sentences}_sentences": small,
        f"{4 * sentences}_sentences": large,
        "shard_rows": 2048,
    }


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(_cos(a, b).min()), 6)


def _mean_cos(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(_cos(a, b).mean()), 6)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _machine() -> str:
    from pipeline.bench.machine import cpu_name

    cpu = cpu_name()
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {threads} threads"
