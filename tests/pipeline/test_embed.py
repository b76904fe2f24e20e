"""Stage one end to end on a tiny random BERT: content, pooling, resume, refusal, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cache import CacheError, open_cache, verify_cache
from cache.errors import SraError
from pipeline.embedding import EmbedConfig, embed, encode_window
from tests.conftest import (
    assert_same_cache,
    assert_same_rows,
    cosine,
    embed_any,
    write_corpus,
)


@pytest.fixture(autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny teachers run fastest on one thread, and far faster when other jobs share the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Read once at import: an earlier test imported it online, and without this the hub lookup
    # waits for a network that is not there (20 s).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    corpus = write_corpus(tmp_path / "c.txt", 10)
    with pytest.raises(SraError, match="cannot load teacher 'nobody/no-such-model'"):
        embed(EmbedConfig(corpus=str(corpus), out=tmp_path / "o", teacher="nobody/no-such-model"))
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- repair


def shard_inodes(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in path.glob("shard-*.arrow")}


@pytest.mark.slow
def test_rerun_repairs_missing_and_truncated_shards_and_repair_finds_bit_flips(
    tmp_path: Path, tiny_bert: Path
) -> None:
    """Damaged shards are embedded again, and only those, with the rows of an uninterrupted run."""
    corpus = write_corpus(tmp_path / "c.txt", 700)
    run(corpus, tmp_path / "ref", tiny_bert)
    run(corpus, tmp_path / "out", tiny_bert)
    out = tmp_path / "out"
    (out / "shard-00001.arrow").unlink()
    data = (out / "shard-00002.arrow").read_bytes()
    (out / "shard-00002.arrow").write_bytes(data[:-100])
    untouched = {k: v for k, v in shard_inodes(out).items() if k != "shard-00002.arrow"}
    run(corpus, out, tiny_bert)  # the same command again
    assert_same_cache(out, tmp_path / "ref")
    m = open_cache(out).manifest
    assert m.totals["rows_this_run"] == 192 + 192  # exactly the two damaged shards
    after = shard_inodes(out)
    assert {k: after[k] for k in untouched} == untouched  # the others were not rewritten
    # A flipped bit keeps the size: only the checksum finds it, with --repair.
    shard = out / "shard-00000.arrow"
    flipped = bytearray(shard.read_bytes())
    flipped[len(flipped) // 2] ^= 0x01
    shard.write_bytes(bytes(flipped))
    run(corpus, out, tiny_bert)
    assert not verify_cache(out).ok
    run(corpus, out, tiny_bert, repair=True)
    assert verify_cache(out).ok
    assert_same_cache(out, tmp_path / "ref")
    assert open_cache(out).manifest.totals["rows_this_run"] == 192


def test_missing_side_file_is_written_again(tmp_path: Path, tiny_bert: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 100)
    run(corpus, tmp_path / "out", tiny_bert)
    before = (tmp_path / "out" / "tokenizer.json").read_bytes()
    (tmp_path / "out" / "tokenizer.json").unlink()
    run(corpus, tmp_path / "out", tiny_bert)
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == before
    assert verify_cache(tmp_path / "out").ok


def test_task_cache_is_repaired_with_its_side_files(
    tmp_path: Path, tiny_bert: Path, tiny_glue: Path
) -> None:
    kw = {
        "corpus": "glue:sst2",
        "glue_dir": str(tiny_glue),
        "teacher": str(tiny_bert),
        "window": 64,
        "shard_rows": 100,
        "progress": False,
    }
    embed_any(out=tmp_path / "ref", **kw)
    embed_any(out=tmp_path / "out", **kw)
    out = tmp_path / "out"
    (out / "shard-00001.arrow").unlink()
    examples = sorted(out.glob("examples-*.arrow"))
    examples[0].unlink()
    embed_any(out=out, **kw)
    assert_same_cache(out, tmp_path / "ref")
    assert verify_cache(out).ok
    for p in (tmp_path / "ref").glob("examples-*.arrow"):
        assert (out / p.name).read_bytes() == p.read_bytes()


def test_overwrite_of_the_same_config_starts_over(tmp_path: Path, tiny_bert: Path) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 100)
    run(corpus, tmp_path / "out", tiny_bert)
    (tmp_path / "out" / "shard-00000.arrow").write_bytes(b"junk")
    run(corpus, tmp_path / "out", tiny_bert, overwrite=True)
    m = open_cache(tmp_path / "out").manifest
    assert m.totals["rows_this_run"] == 100 and verify_cache(tmp_path / "out").ok


# ---------------------------------------------------------------------------- --limit


@pytest.mark.slow
def test_a_larger_limit_grows_the_cache(
    tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 700)
    run(corpus, tmp_path / "ref", tiny_bert, limit=600)
    out = tmp_path / "out"
    run(corpus, out, tiny_bert, limit=250)  # its last window (192..249) is cut short
    run(corpus, out, tiny_bert, limit=600)
    assert_same_rows(out, tmp_path / "ref")
    m = open_cache(out).manifest
    assert m.stream == {"limit": 600, "sentences": 600, "exhausted": False}
    assert m.totals["rows_this_run"] == 600 - 192  # the cut window's shard, then the rest
    # A smaller limit takes nothing away and says what is there.
    capsys.readouterr()
    run(corpus, out, tiny_bert, limit=100)
    assert "already holds 600 sentences" in capsys.readouterr().err
    assert open_cache(out).num_rows == 600
    # No limit: the whole corpus; then nothing more to read.
    run(corpus, out, tiny_bert)
    assert open_cache(out).num_rows == 700
    run(corpus, out, tiny_bert, limit=5000)
    assert "all 700 sentences" in capsys.readouterr().err


def test_a_cache_made_when_limit_was_its_identity_grows_too(
    tmp_path: Path, tiny_bert: Path
) -> None:
    from cache.manifest import fingerprint

    corpus = write_corpus(tmp_path / "c.txt", 300)
    out = tmp_path / "out"
    run(corpus, out, tiny_bert, limit=128)
    m = json.loads((out / "manifest.json").read_text())  # as the previous version wrote it
    m["config"]["corpus"]["limit"] = 128
    m["fingerprint"] = fingerprint(m["config"])
    del m["stream"]
    (out / "manifest.json").write_text(json.dumps(m))
    run(corpus, out, tiny_bert, limit=300)
    run(corpus, tmp_path / "ref", tiny_bert, limit=300)
    assert_same_rows(out, tmp_path / "ref")  # its first shard ended at 128 rows: layout differs


def test_unfinished_cache_with_more_rows_than_a_smaller_limit_is_refused(
    tmp_path: Path, tiny_bert: Path
) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 500)
    out = tmp_path / "out"
    run(corpus, out, tiny_bert, limit=500)
    m = json.loads((out / "manifest.json").read_text())
    m["status"], m["shards"] = "in_progress", m["shards"][:2]
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CacheError, match="holds 384 sentences of an unfinished run.*--limit 500"):
        run(corpus, out, tiny_bert, limit=100)


# ---------------------------------------------------------------------------- bad input, lock


def test_failed_first_run_leaves_nothing_and_a_fixed_corpus_just_runs(
    tmp_path: Path, tiny_bert: Path
) -> None:
    lines = [
        json.dumps({"text": line})
        for line in write_corpus(tmp_path / "c.txt", 300).read_text().splitlines()
    ]
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join([*lines[:250], "{broken", *lines[250:]]) + "\n")
    out = tmp_path / "out"
    with pytest.raises(SraError, match=r"c.jsonl:251 is not valid JSON"):
        # The bad line is late: the reader finds it, after the teacher loaded, no shard written.
        run(corpus, out, tiny_bert, shard_rows=1000)
    assert not out.exists()
    corpus.write_text("\n".join(lines) + "\n")
    run(corpus, out, tiny_bert, shard_rows=1000)
    assert open_cache(out).num_rows == 300


def test_zero_row_unfinished_cache_of_another_config_is_restarted(
    tmp_path: Path, tiny_bert: Path
) -> None:
    corpus = write_corpus(tmp_path / "c.txt", 100)
    out = tmp_path / "out"
    run(corpus, out, tiny_bert, max_length=32)
    m = json.loads((out / "manifest.json").read_text())
    m["status"], m["shards"] = "in_progress", []
    (out / "manifest.json").write_text(json.dumps(m))
    run(corpus, out, tiny_bert)  # another max_length: no refusal, nothing was there
    assert open_cache(out).num_rows == 100


def test_bad_first_rows_of_any_file_fail_before_the_teacher_loads(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_corpus(folder / "a.txt", 50)
    (folder / "b.jsonl").write_text('{"text": "fine text here for a while"}\n{"body": "x"}\n')
    with pytest.raises(SraError, match=r"b.jsonl:2 has no field 'text'"):
        embed(EmbedConfig(corpus=str(folder), out=tmp_path / "o", teacher="nobody/none"))
    assert not (tmp_path / "o").exists()


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(
    tmp_path: Path, tiny_bert: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cache.lock import CacheLock

    corpus = write_corpus(tmp_path / "c.txt", 100)
    out = tmp_path / "out"
    with CacheLock(out), pytest.raises(CacheError, match=r"being written by another run \(pid "):
        run(corpus, out, tiny_bert)
    # A killed run leaves its lock file, but no lock: the next run takes it over.
    out.mkdir(exist_ok=True)
    (out / "embed.lock").write_text('{"pid": 999999999, "host": "h", "started": "then"}\n')
    run(corpus, out, tiny_bert)
    assert "taking over the lock of a run that is gone (pid 999999999" in capsys.readouterr().err
    assert not (out / "embed.lock").exists() and open_cache(out).num_rows == 100


def test_unwritable_out_says_to_choose_a_writable_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import cache.lock

    def read_only(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(cache.lock.Path, "mkdir", read_only)
    corpus = write_corpus(tmp_path / "c.txt", 20)
    with pytest.raises(CacheError, match="choose a writable folder for --out"):
        embed(EmbedConfig(corpus=str(corpus), out=tmp_path / "ro" / "out", progress=False))


def test_progress_counts_every_teacher_batch(tmp_path: Path, tiny_bert: Path) -> None:
    from cache import sentence_schema
    from pipeline.reader import Window, tokenize
    from pipeline.teacher import Teacher

    teacher = Teacher(str(tiny_bert), ["mean"], 128, "fp32", "cpu")
    texts = write_corpus(tmp_path / "c.txt", 200).read_text().splitlines()
    ids, truncated = tokenize(teacher.backend, texts)
    window = Window(0, 0, texts, texts, ids, truncated)
    calls: list[tuple[int, int]] = []
    table = encode_window(
        window,
        teacher,
        512,
        False,
        sentence_schema(["mean"], 32),
        lambda n, t: calls.append((n, t)),
    )
    assert len(calls) > 5  # many batches in one window, each counted as it finishes
    assert sum(n for n, _ in calls) == 200 == table.num_rows
    assert sum(t for _, t in calls) == sum(map(len, ids))
