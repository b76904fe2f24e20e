"""Stage one end to end on a tiny random BERT: content, pooling, resume, refusal, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cache import CacheError, open_cache
from cache.errors import SraError
from pipeline.embedding import EmbedConfig, embed
from tests.conftest import write_corpus


def run(corpus: Path, out: Path, teacher: Path, **kw) -> None:  # type: ignore[no-untyped-def]
    kw = {"window": 64, "shard_rows": 150, "progress": False} | kw
    embed(EmbedConfig(corpus=str(corpus), out=out, teacher=str(teacher), **kw))


def reference_vectors(teacher: Path, ids: list[list[int]]) -> dict[str, np.ndarray]:
    """fp32, one sentence at a time, no padding: the definition the cache must match."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(teacher).eval()
    out: dict[str, list[np.ndarray]] = {"mean": [], "cls": [], "pooler": []}
    with torch.inference_mode():
        for x in ids:
            o = model(input_ids=torch.tensor([x]))
            out["mean"].append(o.last_hidden_state[0].mean(0).numpy())
            out["cls"].append(o.last_hidden_state[0, 0].numpy())
            out["pooler"].append(o.pooler_output[0].numpy())
    return {k: np.stack(v) for k, v in out.items()}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_cache_content_and_poolings_match_the_teacher(tmp_path: Path, tiny_bert: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 400)
    run(corpus, tmp_path / "out", tiny_bert, dtype="fp32", poolings=("mean", "cls", "pooler"))
    c = open_cache(tmp_path / "out")
    assert c.num_rows == 400 and c.poolings == ["mean", "cls", "pooler"] and c.dim == 32
    # Shards end on window bounds (64) and roll over at >= 150 rows.
    assert [s.rows for s in c.shards] == [192, 192, 16]
    table = c.read_shard(0)
    assert table.column("id").to_pylist() == list(range(192))
    assert table.column("source").to_pylist()[:2] == ["c.txt:1", "c.txt:2"]
    first_line = corpus.read_text().splitlines()[0]
    assert table.column("text")[0].as_py() == first_line
    ids = table.column("input_ids").to_pylist()[:20]
    assert all(x[0] == 2 and x[-1] == 3 for x in ids)  # [CLS] ... [SEP] kept
    ref = reference_vectors(tiny_bert, ids)
    for pooling in ("mean", "cls", "pooler"):
        got = c.vectors(pooling, 0)[:20]
        assert cosine(got, ref[pooling]).min() > 0.99999, pooling
    # Side files for stage two: tokenizer and the input-embedding matrix.
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    emb = load_file(c.embeddings_path)["word_embeddings"]
    assert emb.shape == (c.manifest.config["teacher"]["vocab_size"], 32)
    tok = Tokenizer.from_file(str(c.tokenizer_path))
    assert tok.encode(first_line).ids == table.column("input_ids")[0].as_py()


def test_bf16_is_close_to_fp32(tmp_path: Path, tiny_bert: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 200)
    run(corpus, tmp_path / "a", tiny_bert, dtype="fp32")
    run(corpus, tmp_path / "b", tiny_bert, dtype="bf16")
    a, b = open_cache(tmp_path / "a"), open_cache(tmp_path / "b")
    assert b.manifest.config["teacher"]["dtype"] == "bf16"
    assert cosine(a.vectors("mean", 0), b.vectors("mean", 0)).min() > 0.999


def test_truncation_and_bad_bytes_are_flagged(tmp_path: Path, tiny_bert: Path) -> None:
    corpus = tmp_path / "c.txt"
    long_sentence = " ".join(["water"] * 100) + "."
    corpus.write_bytes(
        b"The cat sat on the mat with the dog today.\n"
        + long_sentence.encode()
        + b"\n"
        + b"A bad \xff\xfe byte is in this line of text.\n"
        + b"x" * 1_000_000
        + b"\n"
        + b"The red house by the river was small.\n"
    )
    run(corpus, tmp_path / "out", tiny_bert, max_length=16)
    c = open_cache(tmp_path / "out")
    t = c.read_shard(0).to_pydict()
    assert t["truncated"][t["text"].index(long_sentence)] is True
    assert max(t["n_tokens"]) == 16
    assert any("\ufffd" in s for s in t["text"])
    stats = c.manifest.totals["corpus"]
    assert stats["non_utf8_lines"] == 1 and stats["long_lines_truncated"] == 1


def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path, tiny_bert: Path) -> None:
    """The state a SIGKILL leaves (see writer): manifest lists shards 0..k, later files orphaned."""
    corpus = write_corpus(tmp_path / "c.txt", 500)
    run(corpus, tmp_path / "ref", tiny_bert)
    run(corpus, tmp_path / "cut", tiny_bert)
    m = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    m["shards"], m["status"] = m["shards"][:1], "in_progress"
    (tmp_path / "cut" / "manifest.json").write_text(json.dumps(m))
    (tmp_path / "cut" / ".shard-00002.arrow.tmp").write_bytes(b"half a shard")
    with pytest.raises(CacheError, match="incomplete"):
        open_cache(tmp_path / "cut")
    run(corpus, tmp_path / "cut", tiny_bert)
    assert_same_cache(tmp_path / "cut", tmp_path / "ref")


def assert_same_cache(a: Path, b: Path) -> None:
    ca, cb = open_cache(a), open_cache(b)
    assert [s.rows for s in ca.shards] == [s.rows for s in cb.shards]
    cols = ["id", "text", "source", "input_ids", "n_tokens", "truncated"]
    for sa, sb in zip(ca.shards, cb.shards, strict=True):
        assert ca.read_shard(sa, cols).equals(cb.read_shard(sb, cols))
        for pooling in ca.poolings:
            assert cosine(ca.vectors(pooling, sa), cb.vectors(pooling, sb)).min() >= 0.99999


def test_other_config_is_refused_unless_overwrite(tmp_path: Path, tiny_bert: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 100)
    run(corpus, tmp_path / "out", tiny_bert)
    run(corpus, tmp_path / "out", tiny_bert)  # same config, complete: nothing to do
    with pytest.raises(CacheError, match=r"different config .*max_length.*--overwrite"):
        run(corpus, tmp_path / "out", tiny_bert, max_length=32)
    run(corpus, tmp_path / "out", tiny_bert, max_length=32, overwrite=True)
    assert open_cache(tmp_path / "out").manifest.config["teacher"]["max_length"] == 32


def test_bad_inputs_fail_before_writing(tmp_path: Path, tiny_bert: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(SraError):
        run(tmp_path / "missing.txt", out, tiny_bert)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(SraError):
        run(tmp_path / "empty.txt", out, tiny_bert)
    (tmp_path / "short.txt").write_text("too short.\nhi.\n")
    with pytest.raises(SraError, match="no sentences"):
        run(tmp_path / "short.txt", out, tiny_bert)
    assert not out.exists()
    corpus = write_corpus(tmp_path / "c.txt", 10)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SraError, match="is a file"):
        run(corpus, tmp_path / "file", tiny_bert)
    with pytest.raises(SraError, match="unknown pooling"):
        run(corpus, out, tiny_bert, poolings=("max",))


def test_a_hidden_layer_mean_matches_the_teacher(tmp_path: Path, tiny_bert: Path) -> None:
    from transformers import AutoModel

    corpus = write_corpus(tmp_path / "c.txt", 40)
    layers = AutoModel.from_pretrained(tiny_bert).config.num_hidden_layers
    wanted = ("mean", "mean_layer1", f"mean_layer{layers}")
    run(corpus, tmp_path / "out", tiny_bert, dtype="fp32", poolings=wanted)
    c = open_cache(tmp_path / "out")
    assert c.poolings == list(wanted)
    ids = c.read_shard(0).column("input_ids").to_pylist()[:10]
    model = AutoModel.from_pretrained(tiny_bert).eval()
    with torch.inference_mode():
        ref = np.stack(
            [
                model(input_ids=torch.tensor([x]), output_hidden_states=True)
                .hidden_states[1][0]
                .mean(0)
                .numpy()
                for x in ids
            ]
        )
    assert cosine(c.vectors("mean_layer1", 0)[:10], ref).min() > 0.99999
    # The last hidden layer is the plain mean; layer 1 is another vector.
    np.testing.assert_allclose(c.vectors(f"mean_layer{layers}", 0), c.vectors("mean", 0))
    assert np.abs(c.vectors("mean_layer1", 0) - c.vectors("mean", 0)).max() > 1e-3
    with pytest.raises(SraError, match=f"has {layers} layers, so mean_layer9 does not exist"):
        run(corpus, tmp_path / "deep", tiny_bert, poolings=("mean", "mean_layer9"))
    with pytest.raises(SraError, match="unknown pooling mean_layer"):
        run(corpus, tmp_path / "bad", tiny_bert, poolings=("mean_layer",))


def test_pooler_needs_a_trained_pooler(tmp_path: Path, tiny_bert_no_pooler: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 10)
    with pytest.raises(SraError, match="no trained pooler"):
        run(corpus, tmp_path / "out", tiny_bert_no_pooler, poolings=("mean", "pooler"))


def test_decoder_is_not_a_teacher(tmp_path: Path, tiny_bert: Path) -> None:
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=50)).save_pretrained(
        tmp_path / "gpt"
    )
    corpus = write_corpus(tmp_path / "c.txt", 10)
    with pytest.raises(SraError, match="not a BERT-style encoder"):
        run(corpus, tmp_path / "out", tmp_path / "gpt")


def test_unknown_teacher_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus = write_corpus(tmp_path / "c.txt", 10)
    with pytest.raises(SraError, match="cannot load teacher 'nobody/no-such-model'"):
        embed(EmbedConfig(corpus=str(corpus), out=tmp_path / "o", teacher="nobody/no-such-model"))
    assert not (tmp_path / "o").exists()
