"""The manifest: one JSON file that says what a cache holds and which shards are complete.

Readers trust only the manifest. A shard file that exists but is not listed (a run killed
between writing a shard and recording it) is invisible and is replaced on resume.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cache.errors import CacheError
from cache.files import write_atomic

FORMAT = "sra-sentence-cache"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
EMBEDDINGS_NAME = "embeddings.safetensors"

STATUS_IN_PROGRESS = "in_progress"
STATUS_COMPLETE = "complete"


@dataclass
class ShardInfo:
    """One complete shard: where it is, what it holds, and how to check it."""

    file: str
    rows: int
    bytes: int
    sha256: str
    first_id: int
    last_id: int
    rank: int = 0
    # Stream windows [first_window, last_window] this shard covers; resume restarts after
    # the last complete window, which is why shards always end on a window boundary.
    first_window: int = 0
    last_window: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any], manifest_path: Path) -> ShardInfo:
        info = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        _check_inside(info.file, manifest_path)
        return info


@dataclass
class Manifest:
    """Everything a reader needs to know about a cache, and nothing it must guess."""

    fingerprint: str
    config: dict[str, Any]
    schema: dict[str, str] = field(default_factory=dict)
    status: str = STATUS_IN_PROGRESS
    world_size: int = 1
    shards: list[ShardInfo] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    # Side files written beside the manifest (tokenizer, embedding matrix) and their sha256.
    files: dict[str, str] = field(default_factory=dict)
    # How far the input stream was read: {"limit": N or None, "sentences": N, "exhausted": bool}.
    # Not part of the identity, so a larger --limit grows the cache instead of refusing it.
    stream: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def num_rows(self) -> int:
        return sum(s.rows for s in self.shards)

    @property
    def complete(self) -> bool:
        return self.status == STATUS_COMPLETE

    @property
    def poolings(self) -> list[str]:
        return list(self.config.get("teacher", {}).get("poolings", []))

    @property
    def dim(self) -> int:
        return int(self.config.get("teacher", {}).get("hidden_size", 0))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # Keep the identifying keys first so `head manifest.json` tells what the file is.
        order = ["format", "format_version", "status", "fingerprint", "world_size"]
        return {k: d[k] for k in order} | {k: v for k, v in d.items() if k not in order}


def fingerprint(config: dict[str, Any]) -> str:
    """A stable hash of the explicit JSON config; it decides whether a directory may resume."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_manifest(path: Path) -> Manifest:
    """Parse and validate a manifest file; every failure is one CacheError line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CacheError(
            f"{path.parent} is not a cache: it has no {path.name} "
            "(run `pipeline embed --out DIR` to create one)"
        ) from None
    except IsADirectoryError:
        raise CacheError(f"{path} is a directory, expected a manifest file") from None
    try:
        d = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CacheError(f"{path} is not valid JSON ({e}); the cache is damaged") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CacheError(
            f"{path} is not a sentence-cache manifest; "
            "point at a directory written by `pipeline embed`"
        )
    if d.get("format_version") != FORMAT_VERSION:
        raise CacheError(
            f"{path} has cache format version {d.get('format_version')!r}, this reader "
            f"understands {FORMAT_VERSION}; re-create the cache with this version"
        )
    _check_shape(d, path)
    shards = [ShardInfo.from_dict(s, path) for s in d.get("shards", [])]
    for name in d.get("files", {}):
        _check_inside(name, path)
    return Manifest(
        fingerprint=d["fingerprint"],
        config=d["config"],
        schema=d.get("schema", {}),
        status=d["status"],
        world_size=d.get("world_size", 1),
        shards=shards,
        totals=d.get("totals", {}),
        files=d.get("files", {}),
        stream=d.get("stream", {}),
        created_at=str(d.get("created_at", "")),
        updated_at=str(d.get("updated_at", "")),
    )


# field -> (type, what it must be, required); a manifest is user input, so a wrong shape is
# named in words, never as a Python exception.
_FIELDS: dict[str, tuple[type | tuple[type, ...], str, bool]] = {
    "fingerprint": (str, "a string", True),
    "status": (str, "a string", True),
    "config": (dict, "an object", True),
    "schema": (dict, "an object", False),
    "world_size": (int, "a whole number", False),
    "shards": (list, "a list of shard entries", False),
    "totals": (dict, "an object", False),
    "files": (dict, "an object of file names and checksums", False),
    "stream": (dict, "an object", False),
}
_SHARD_FIELDS: dict[str, tuple[type, bool]] = {
    "file": (str, True),
    "rows": (int, True),
    "bytes": (int, True),
    "sha256": (str, True),
    "first_id": (int, True),
    "last_id": (int, True),
    "rank": (int, False),
    "first_window": (int, False),
    "last_window": (int, False),
}


def _check_shape(d: dict[str, Any], path: Path) -> None:
    def damaged(what: str) -> CacheError:
        return CacheError(f"{path}: {what}; the manifest is damaged (re-create the cache)")

    for key, (typ, words, required) in _FIELDS.items():
        if key not in d:
            if required:
                raise damaged(f"field {key!r} is missing")
            continue
        value = d[key]
        if not isinstance(value, typ) or isinstance(value, bool):
            raise damaged(f"field {key!r} should be {words}, not {_kind(value)}")
    if d.get("status") not in (STATUS_IN_PROGRESS, STATUS_COMPLETE):
        raise damaged(f"status {d.get('status')!r} is neither {STATUS_IN_PROGRESS} nor complete")
    if any(not isinstance(v, str) for v in d.get("files", {}).values()):
        raise damaged("field 'files' should map file names to sha256 strings")
    for i, shard in enumerate(d.get("shards", [])):
        if not isinstance(shard, dict):
            raise damaged(f"shard entry {i} should be an object, not {_kind(shard)}")
        for key, (typ, required) in _SHARD_FIELDS.items():
            if key not in shard:
                if required:
                    raise damaged(f"shard entry {i} has no {key!r}")
            elif not isinstance(shard[key], typ) or isinstance(shard[key], bool):
                raise damaged(
                    f"shard entry {i}: {key!r} should be {typ.__name__}, not {_kind(shard[key])}"
                )


def _kind(value: Any) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "true/false",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Atomic replace: temp file, fsync, rename, fsync the directory."""
    manifest.updated_at = now()
    data = json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False).encode()
    write_atomic(path, data)


def _check_inside(name: str, manifest_path: Path) -> None:
    # A manifest is user input: a shard entry must name a plain file in the cache directory,
    # never an absolute path or `../` that would make us read (or delete) files elsewhere.
    p = Path(name)
    if p.is_absolute() or len(p.parts) != 1 or name in ("", ".", "..") or "\\" in name:
        raise CacheError(
            f"{manifest_path}: shard entry {name!r} points outside the cache directory; "
            "refusing to read it (the manifest is corrupt or was tampered with)"
        )
