"""Stage one (corpus -> teacher -> Arrow cache) and the `pipeline` command line.

from pipeline import EmbedConfig, embed
embed(EmbedConfig(corpus="wiki", wiki_dump="dump.txt.gz", out=Path("caches/wiki"), limit=1000))
"""

from typing import Any

__all__ = ["EmbedConfig", "PipelineError", "embed"]


def __getattr__(name: str) -> Any:
    # Lazy, so `pipeline sql` and `pipeline inspect` start without importing torch.
    if name in ("EmbedConfig", "embed"):
        from pipeline import embed as module

        return getattr(module, name)
    if name == "PipelineError":
        from pipeline.errors import PipelineError

        return PipelineError
    raise AttributeError(name)
