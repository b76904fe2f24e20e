"""Stage one (corpus -> sentences -> teacher -> Arrow cache) and the `pipeline` command line.

    from pathlib import Path
    from pipeline import EmbedConfig, embed
    embed(EmbedConfig(corpus="wiki", wiki_dump="dump.txt.gz", out=Path("caches/w"), limit=1000))

Sub-packages sit on top of stage one: `pipeline.tasks` (task corpora, teacher fine-tuning,
logits, augmentation, evaluate), `pipeline.bench` (benchmarks), `pipeline.cli` (the commands).
"""

from cache.errors import SraError
from pipeline.embedding import EmbedConfig, embed

PipelineError = SraError  # the name before one error class served both stages

__all__ = ["EmbedConfig", "SraError", "embed"]
