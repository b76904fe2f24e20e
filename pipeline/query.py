"""Looking into a cache with DuckDB: a summary, and arbitrary read-only SQL."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa

from cache import Cache, open_cache
from cache.errors import SraError

FORMATS = ("table", "csv", "json", "parquet")


def summarize(path: str | Path) -> dict[str, Any]:
    """Rows, shards, bytes, teacher, poolings, dim, token-length percentiles, truncation, status."""
    cache = open_cache(path, require_complete=False)
    m = cache.manifest
    teacher = m.config.get("teacher", {})
    summary: dict[str, Any] = {
        "path": str(cache.path),
        "status": m.status,
        "rows": m.num_rows,
        "shards": len(m.shards),
        "bytes": sum(s.bytes for s in m.shards),
        "teacher": teacher.get("name"),
        "teacher_layers": teacher.get("num_layers"),
        "poolings": ", ".join(m.poolings),
        "dim": m.dim,
        "dtype": teacher.get("dtype"),
        "max_length": teacher.get("max_length"),
        "normalized": teacher.get("normalize"),
        "corpus": m.config.get("corpus", {}).get("kind"),
        "fingerprint": m.fingerprint,
    }
    if m.num_rows:
        row = (
            cache.connect()
            .execute(
                "SELECT quantile_cont(n_tokens, [0.5, 0.9, 0.99]) AS q, max(n_tokens) AS mx, "
                "avg(truncated::INT) AS tr FROM sentences"
            )
            .fetchone()
        )
        assert row is not None
        q, mx, tr = row
        summary["tokens_p50_p90_p99_max"] = f"{q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f} / {mx}"
        summary["truncated_share"] = f"{100 * tr:.2f}%"
    corpus_stats = m.totals.get("corpus", {})
    for key in ("non_utf8_lines", "long_lines_truncated", "duplicates"):
        if key in corpus_stats:
            summary[key] = corpus_stats[key]
    return summary


def run_sql(path: str | Path, query: str, fmt: str = "table", out: Any = None) -> pa.Table:
    """Run a read-only query over `sentences` and `shards`; write it to `out` in `fmt`."""
    if fmt not in FORMATS:
        raise SraError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    cache: Cache = open_cache(path, require_complete=False)
    con = cache.connect()
    import duckdb

    try:
        result = con.sql(query)
        table = result.arrow() if result is not None else pa.table({})
    except duckdb.Error as e:
        first = str(e).strip().splitlines()[0]
        raise SraError(f"SQL failed: {first} (tables: sentences, shards)") from None
    if isinstance(table, pa.RecordBatchReader):
        table = table.read_all()
    out = out if out is not None else sys.stdout
    if fmt == "csv":
        import pyarrow.csv as pcsv

        buf = io.BytesIO()
        pcsv.write_csv(_flatten_vectors(table), buf)
        _write(out, buf.getvalue())
    elif fmt == "json":
        for row in table.to_pylist():
            _write(out, (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode())
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(table, buf)
        _write(out, buf.getvalue())
    return table


def _flatten_vectors(table: pa.Table) -> pa.Table:
    # CSV has no list type: lists are written as JSON text.
    cols = []
    for col in table.columns:
        if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type):
            col = pa.array([json.dumps(v) for v in col.to_pylist()], pa.string())
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def _write(out: Any, data: bytes) -> None:
    if hasattr(out, "buffer"):
        out.buffer.write(data)
        out.flush()
    elif isinstance(out, io.TextIOBase):
        out.write(data.decode())
    else:
        out.write(data)
