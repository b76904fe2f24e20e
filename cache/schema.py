"""Column layout of a sentence cache.

Readers select columns by name, so later columns (labels, a second sentence of a pair,
teacher logits) can be added without breaking anything that reads today's columns.
"""

from __future__ import annotations

import pyarrow as pa

from cache.manifest import Manifest

BASE_FIELDS = [
    pa.field("id", pa.int64(), nullable=False),
    pa.field("text", pa.string()),
    pa.field("source", pa.string()),
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("n_tokens", pa.int32()),
    pa.field("truncated", pa.bool_()),
]


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def sentence_schema(poolings: list[str], dim: int) -> pa.Schema:
    """The base columns plus one fixed-size float32 vector column per pooling, named after it."""
    return pa.schema(BASE_FIELDS + [pa.field(p, vector_type(dim)) for p in poolings])


def schema_from_manifest(manifest: Manifest) -> pa.Schema:
    return sentence_schema(manifest.poolings, manifest.dim)
