"""Full check of a cache: manifest, every shard's size, checksum, schema, ids and vectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from cache.errors import CacheError
from cache.files import sha256_file
from cache.reader import open_cache
from cache.writer import is_cache_file


@dataclass
class VerifyReport:
    path: Path
    shards_checked: int = 0
    rows_checked: int = 0
    complete: bool = True  # False: an unfinished cache (what is there may still verify)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_cache(path: str | Path) -> VerifyReport:
    """Recompute checksums and re-read every shard; collect every problem instead of stopping."""
    cache = open_cache(path, require_complete=False, checksums=True)
    report = VerifyReport(cache.path)
    m = cache.manifest
    report.complete = m.complete
    expected = {name: typ for name, typ in m.schema.items()}
    seen_ids: list[np.ndarray] = []
    for info in cache.shards:
        try:
            table = cache.read_shard(info)
        except CacheError as e:
            report.problems.append(str(e))
            continue
        got = {f.name: str(f.type) for f in table.schema}
        if got != expected:
            report.problems.append(
                f"shard {info.file}: schema differs from the manifest ({got} vs {expected})"
            )
            continue
        ids = table.column("id").to_numpy()
        if len(ids) and (int(ids.min()) != info.first_id or int(ids.max()) != info.last_id):
            report.problems.append(f"shard {info.file}: id range differs from the manifest")
        for pooling in m.poolings:
            vecs = cache.vectors(pooling, info)
            if vecs.shape[1] != m.dim or not np.isfinite(vecs).all():
                report.problems.append(
                    f"shard {info.file}: {pooling} vectors are not finite {m.dim}-d"
                )
        n_tokens = table.column("n_tokens")
        lengths = pc.list_value_length(table.column("input_ids")).cast(n_tokens.type)
        if not pc.all(pc.equal(lengths, n_tokens)).as_py() and table.num_rows:
            report.problems.append(f"shard {info.file}: n_tokens disagrees with input_ids")
        seen_ids.append(ids)
        report.shards_checked += 1
        report.rows_checked += table.num_rows
    if seen_ids:
        all_ids = np.concatenate(seen_ids)
        if len(np.unique(all_ids)) != len(all_ids):
            report.problems.append("ids are not unique across shards")
    for name, digest in m.files.items():
        p = cache.path / name
        if not p.exists():
            report.problems.append(f"{p} is missing")
        elif sha256_file(p) != digest:
            report.problems.append(f"{p} fails its sha256 check")
    listed = {s.file for s in cache.shards}
    for p in sorted(cache.path.iterdir()):
        if p.name in m.files:
            continue  # a side file (tokenizer, task examples, logits): checked above
        if p.name.endswith(".arrow") and p.name not in listed:
            report.notes.append(f"{p.name} is not in the manifest (left by a killed run; ignored)")
        elif not is_cache_file(p.name):
            report.notes.append(f"{p.name} is not a cache file (ignored)")
    return report
