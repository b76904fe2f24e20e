"""The student, sized to a stage-one cache: its tokenizer, its config and its first embeddings.

The cache fixes what the student cannot choose: the teacher's vocabulary and tokenizer (the
student reads the teacher's own WordPiece ids and ships its ``tokenizer.json``), the size of
the vectors it approximates, the pad id and the maximum length. Fine-tuning's from-scratch
student is sized the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from cache import Cache, CacheError
from cache.errors import SraError
from student.config import StudentConfig, StudentShape

if TYPE_CHECKING:
    import torch


def cache_tokenizer(cache: Cache) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(cache.tokenizer_path))
    except Exception:
        raise CacheError(
            f"cache {cache.path} has no readable tokenizer.json, which the student ships with; "
            "re-create the cache with `pipeline embed`"
        ) from None


def student_config(
    shape: StudentShape, cache: Cache, tokenizer: Tokenizer, pooling: str = "mean"
) -> StudentConfig:
    """The student's config: ``shape`` sized to the cache's teacher and tokenizer, to
    approximate the cache's ``pooling`` column(s)."""
    from student.training.data import target_dim

    teacher = cache.manifest.config.get("teacher", {})
    vocab = max(
        int(teacher.get("vocab_size") or 0), tokenizer.get_vocab_size(with_added_tokens=True)
    )
    try:
        return shape.config(
            vocab_size=vocab,
            output_dim=target_dim(cache, pooling),
            pad_id=int(teacher.get("special_ids", {}).get("pad", 0)),
            max_length=int(teacher.get("max_length", 128)),
            teacher=str(teacher.get("name", "")),
            teacher_pooling=pooling,
            cache_fingerprint=cache.manifest.fingerprint,
        )
    except ValueError as e:
        raise SraError(f"bad student options: {e}") from None


def teacher_embeddings(cache: Cache, config: StudentConfig, seed: int) -> torch.Tensor:
    """The teacher's input embeddings, PCA-projected to the student's embedding size."""
    import safetensors.numpy

    from student.model import pca_project

    path = cache.embeddings_path
    try:
        matrix = safetensors.numpy.load_file(str(path))["word_embeddings"]
    except Exception:
        raise CacheError(
            f"cache {cache.path} has no readable embeddings.safetensors (word_embeddings); "
            "pass --init-embeddings random or re-create the cache"
        ) from None
    if matrix.shape[0] != config.vocab_size:
        raise CacheError(
            f"{path} has {matrix.shape[0]} rows but the vocabulary has "
            f"{config.vocab_size}; the cache is inconsistent, pass --init-embeddings random"
        )
    return pca_project(matrix, config.embedding_dim, seed=seed)
