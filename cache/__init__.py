"""The Arrow sentence cache shared by both stages: the contract between them.

A cache is a directory holding `manifest.json`, Arrow IPC shards (`shard-00000.arrow`, ...),
the teacher's `tokenizer.json` and its input-embedding matrix (`embeddings.safetensors`).

    from cache import open_cache
    c = open_cache("caches/wiki-minilm")
    for batch in c.iter_batches(["input_ids", "mean"], shuffle_shards=True, seed=0):
        ...
    vecs = c.vectors("mean", 0)              # zero-copy [rows, dim] float32
    c.connect().sql("SELECT count(*) FROM sentences").show()
"""

from cache.errors import CacheError
from cache.manifest import Manifest, ShardInfo
from cache.reader import Cache, open_cache
from cache.schema import sentence_schema
from cache.verify import VerifyReport, verify_cache
from cache.writer import CacheWriter, merge_rank_manifests

__all__ = [
    "Cache",
    "CacheError",
    "CacheWriter",
    "Manifest",
    "ShardInfo",
    "VerifyReport",
    "merge_rank_manifests",
    "open_cache",
    "sentence_schema",
    "verify_cache",
]
