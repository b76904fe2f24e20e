"""How `pipeline bench student` times one encoder: throughput over a sentence set and
single-sentence latency, each after untimed warm-up calls.

Separate from ``pipeline/bench/student.py`` (which decides what to time and tabulates it) so
the measuring rules live in one short place: one warm-up pass then ``TIMED_PASSES`` timed
passes, median as the headline; ``LATENCY_WARMUP_CALLS`` untimed calls, then p50 and p95.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

TIMED_PASSES = 3
LATENCY_WARMUP_CALLS = 10


def throughput(encode: Callable[[list[str]], Any], texts: list[str]) -> dict[str, Any]:
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


def latency(encode_one: Callable[[str], object] | None, picks: list[str]) -> dict[str, Any]:
    if encode_one is None:
        return {"p50_ms": None, "p95_ms": None}
    for i in range(LATENCY_WARMUP_CALLS):
        encode_one(picks[i % len(picks)])
    times = []
    for text in picks:
        t0 = time.perf_counter()
        encode_one(text)
        times.append((time.perf_counter() - t0) * 1000)
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3)}
