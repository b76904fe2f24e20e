"""Shared fixtures: a tiny random BERT teacher built in code, and the shared data folder."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PIPELINE_SHARED_DATA", REPO.parent / "shared" / "data"))
WIKI_DUMP = SHARED_DATA / "wiki" / "enwiki_2015_wikiextractor_AA-AB.txt.gz"

WORDS = (
    "the a an of and to in is was for on that with as by it at from his her this be are were "
    "which or have had not but one first new two their its after who also has been city "
    "world year war state music film people time may all more other such some only into over "
    "most sentence cat dog sat mat ran fast slow red blue green house tree river water small "
    "large"
).split()


def build_tiny_tokenizer(path: Path) -> None:
    """A real WordPiece tokenizer with a ~300-entry vocabulary: no download needed."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = specials + chars + [f"##{c}" for c in string.ascii_lowercase + string.digits] + WORDS
    vocab = list(dict.fromkeys(vocab))
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab.index("[CLS]")), ("[SEP]", vocab.index("[SEP]"))],
    )
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=512)
    fast.save_pretrained(path)


def build_tiny_bert(path: Path, seed: int = 0, pooler: bool = True) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    build_tiny_tokenizer(path)
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(path))
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    model = BertModel(config, add_pooling_layer=pooler)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bert_no_pooler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert-np"), pooler=False)


@pytest.fixture()
def wiki_dump() -> Path:
    if not WIKI_DUMP.exists():
        pytest.skip(f"shared Wikipedia dump not found at {WIKI_DUMP} (set PIPELINE_SHARED_DATA)")
    return WIKI_DUMP


def write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    """A text file of n distinct, deterministic sentences of varying length."""
    import random

    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 40))]
            f.write(" ".join(words).capitalize() + f" number {i}.\n")
    return path


def write_glue(root: Path, n_train: int = 240, n_dev: int = 60, seed: int = 0) -> Path:
    """A tiny GLUE folder in the original TSV format, with trivially learnable labels.

    SST-2: positive iff the sentence holds "red" (negatives hold "blue"). MRPC: equivalent
    iff both sentences share their colour. STS-B: the score is 5 when they share it, else 0
    (plus a little noise).
    """
    import random

    rng = random.Random(seed)
    nouns = ["cat", "dog", "city", "water", "tree", "river", "house", "world"]

    def sentence(mood: str) -> str:
        words = [rng.choice(nouns) for _ in range(rng.randint(3, 12))]
        words.insert(rng.randrange(len(words) + 1), mood)
        return " ".join(words) + " ."

    def split_rows(n: int) -> list[tuple[str, str, int]]:
        rows = []
        for _ in range(n):
            a, b = rng.choice(["red", "blue"]), rng.choice(["red", "blue"])
            rows.append((sentence(a), sentence(b), int(a == b)))
        return rows

    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = split_rows(n)
        sst = root / "SST-2"
        sst.mkdir(parents=True, exist_ok=True)
        lines = ["sentence\tlabel"] + [f"{a}\t{int('red' in a.split())}" for a, _, _ in rows]
        (sst / f"{split}.tsv").write_text("\n".join(lines) + "\n")
        mrpc = root / "MRPC"
        mrpc.mkdir(exist_ok=True)
        lines = ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"] + [
            f"{y}\t{i}\t{i + 1}\t{a}\t{b}" for i, (a, b, y) in enumerate(rows)
        ]
        (mrpc / f"{split}.tsv").write_text("\n".join(lines) + "\n")
        sts = root / "STS-B"
        sts.mkdir(exist_ok=True)
        header = "\t".join(
            "index genre filename year old_index source1 source2 sentence1 sentence2 score".split()
        )
        lines = [header] + [
            f"{i}\tg\tf\t2012\t{i}\ts\ts\t{a}\t{b}\t{abs(5 * y - rng.random() * 0.2):.3f}"
            for i, (a, b, y) in enumerate(rows)
        ]
        (sts / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_glue(tmp_path_factory.mktemp("glue"), n_train=160, n_dev=40)


@pytest.fixture(scope="session")
def tiny_teachers(
    tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, tiny_glue: Path
) -> dict[str, Path]:
    """The tiny random BERT fine-tuned for a few steps on the tiny SST-2, MRPC and STS-B."""
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for task in ("sst2", "mrpc", "stsb"):
        out[task] = root / task
        tiny_teacher_finetune(task, out[task], tiny_bert, tiny_glue)
    return out


def tiny_teacher_finetune(task: str, out: Path, teacher: Path, glue: Path, **kw):  # type: ignore[no-untyped-def]
    """`teacher-finetune` of the tiny BERT for a few steps; ``kw``: its options, by name."""
    from cache.options import configure
    from pipeline.tasks.teacher_finetune import TeacherFinetuneConfig, teacher_finetune

    base = dict(epochs=6, batch_size=16, lr=2e-3, bf16=False, progress=False)
    options = dict(task=task, out=out, teacher=str(teacher), glue_dir=str(glue)) | base | kw
    return teacher_finetune(configure(TeacherFinetuneConfig, **options))


def embed_any(**kw):  # type: ignore[no-untyped-def]
    """`pipeline embed` as the command line runs it: EmbedConfig's, TaskOptions' and
    TaskDataOptions' fields in one set of keywords; a task corpus goes through the task layer."""
    from dataclasses import fields

    from pipeline.embedding import EmbedConfig
    from pipeline.tasks import TaskOptions, embed_corpus
    from pipeline.tasks.own import TaskDataOptions

    data_keys = {f.name for f in fields(TaskDataOptions)}
    data = TaskDataOptions(**{k: kw.pop(k) for k in list(kw) if k in data_keys})
    task_keys = {f.name for f in fields(TaskOptions)} - {"data"}
    options = TaskOptions(**{k: kw.pop(k) for k in list(kw) if k in task_keys}, data=data)
    return embed_corpus(EmbedConfig(**kw), options)


def cosine(a, b):  # type: ignore[no-untyped-def]
    """Row-wise cosine of two [n, d] arrays."""
    import numpy as np

    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def assert_same_cache(a: Path, b: Path) -> None:
    """Two caches hold the same shards, rows, ids, texts and tokens; vectors equal to noise."""
    from cache import open_cache

    ca, cb = open_cache(a), open_cache(b)
    assert [s.rows for s in ca.shards] == [s.rows for s in cb.shards]
    assert [s.file for s in ca.shards] == [s.file for s in cb.shards]
    cols = ["id", "text", "source", "input_ids", "n_tokens", "truncated"]
    for sa, sb in zip(ca.shards, cb.shards, strict=True):
        assert ca.read_shard(sa, cols).equals(cb.read_shard(sb, cols))
        for pooling in ca.poolings:
            assert cosine(ca.vectors(pooling, sa), cb.vectors(pooling, sb)).min() >= 0.99999


def assert_same_rows(a: Path, b: Path) -> None:
    """Two caches hold the same rows by id (shard boundaries may differ: a grown cache)."""
    import numpy as np
    import pyarrow as pa

    from cache import open_cache

    def rows(path: Path) -> pa.Table:
        c = open_cache(path)
        cols = ["id", "text", "source", "input_ids", "n_tokens", "truncated", *c.poolings]
        return pa.concat_tables(c.read_shard(s, cols) for s in c.shards).sort_by("id")

    ta, tb = rows(a), rows(b)
    plain = ["id", "text", "source", "input_ids", "n_tokens", "truncated"]
    assert ta.select(plain).equals(tb.select(plain))
    for pooling in ta.column_names[len(plain) :]:
        va = np.array(ta.column(pooling).to_pylist())
        vb = np.array(tb.column(pooling).to_pylist())
        assert cosine(va, vb).min() >= 0.99999


def make_cache(
    root: Path,
    teacher: Path,
    n: int = 400,
    shard_rows: int = 150,
    lines: list[str] | None = None,
    **kw,
) -> Path:
    """A real stage-one cache of n sentences from the tiny random BERT (fp32, < 1 s); of
    ``lines`` instead of the shared random-word corpus when given."""
    from pipeline.embedding import EmbedConfig, embed

    root.mkdir(parents=True, exist_ok=True)
    if lines is None:
        corpus = write_corpus(root / "corpus.txt", n)
    else:
        corpus = root / "corpus.txt"
        corpus.write_text("\n".join(lines) + "\n")
    out = root / f"cache-{n}-{shard_rows}"
    kw = {"window": 64, "shard_rows": shard_rows, "progress": False, "dtype": "fp32"} | kw
    embed(EmbedConfig(corpus=str(corpus), out=out, teacher=str(teacher), **kw))
    return out


def make_task_cache(root: Path, teacher: Path, task: str, glue: Path) -> Path:
    """A task cache (`pipeline embed --corpus glue:TASK`) of a tiny GLUE folder."""
    out = root / f"{task}-cache"
    embed_any(
        corpus=f"glue:{task}",
        glue_dir=str(glue),
        out=out,
        teacher=str(teacher),
        window=64,
        progress=False,
        dtype="fp32",
    )
    return out


def distil_tiny_student(root: Path, teacher: Path, n: int = 300, steps: int = 20) -> Path:
    """A tiny distilled student from a tiny wiki-style cache of the same teacher."""
    from cache.options import configure
    from student import TrainConfig, train

    cache = make_cache(root, teacher, n=n)
    cfg = configure(
        TrainConfig,
        cache=cache,
        out=root / "run",
        hidden_size=16,
        embedding_dim=16,
        batch_size=32,
        max_steps=steps,
        eval_every=10,
        checkpoint_every=0,
        bf16=False,
        progress=False,
    )
    return train(cfg)


def make_task_run(folder: Path, encoder, task: str, pair: bool, kind: str, labels):  # type: ignore[no-untyped-def]
    """A fine-tuned run folder as `pipeline finetune` writes it (encoder/, head.safetensors,
    finetune.json's head entry), with a random head over ``encoder`` (a StudentEncoder)."""
    import json

    import safetensors.torch
    import torch

    from student.finetuning.head import TaskHead

    torch.manual_seed(1)
    outputs = len(labels) if labels else 1
    head = TaskHead(encoder.config.output_dim, pair, outputs, kind, 7, 0.1)
    folder.mkdir(parents=True)
    encoder.save_pretrained(folder / "encoder")
    state = {k: v.contiguous() for k, v in head.state_dict().items()}
    safetensors.torch.save_file(state, folder / "head.safetensors")
    run = {
        "task": task,
        "head": {"kind": kind, "hidden": 7, "pair": pair, "outputs": outputs, "labels": labels},
    }
    (folder / "finetune.json").write_text(json.dumps(run))
    return folder


def write_table(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One task file in the format its name says (gzip'd when it ends in .gz)."""
    name = path.name.removesuffix(".gz")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if name.endswith(".csv"):
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, columns)
        writer.writeheader()
        writer.writerows(rows)
        data = buffer.getvalue().encode()
    elif name.endswith(".tsv"):
        lines = ["\t".join(columns)] + [
            "\t".join(str(row.get(c, "")) for c in columns) for row in rows
        ]
        data = ("\n".join(lines) + "\n").encode()
    elif name.endswith(".jsonl"):
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows), sink)
        data = sink.getvalue().to_pybytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


# -- own tasks, end to end: task folders in each format, their caches, fine-tuned models ----

OWN_TASKS = {
    # name: (problem, pair, train file format)
    "reviews": ("classification", False, "csv"),
    "pairs": ("classification", True, "tsv"),
    "tickets": ("multilabel", False, "jsonl"),
    "scores": ("regression", True, "parquet"),
}
_COLOURS = {"red": ("good", "bug"), "blue": ("bad", "ui"), "green": ("meh", "docs")}


def own_task_rows(name: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n learnable rows of one of OWN_TASKS: the label follows the colour words in the text.

    reviews: one colour, three classes (CSV texts with commas and quotes); pairs: "same" or
    "different" colour; tickets: any of the colours, one label each (none is fine); scores:
    5 when both sides share a colour, else 1, plus noise.
    """
    import random

    rng = random.Random(seed)
    nouns = ["cat", "dog", "house", "tree", "river", "water", "city"]

    def text(*colours: str) -> str:
        words = [rng.choice(nouns) for _ in range(rng.randint(2, 8))]
        for colour in colours:
            words.insert(rng.randrange(len(words) + 1), colour)
        return " ".join(words)

    rows: list[dict[str, Any]] = []
    for i in range(n):
        a, b = rng.choice(list(_COLOURS)), rng.choice(list(_COLOURS))
        if name == "reviews":
            body = text(a)
            body = f'{body}, "{a}" one' if i % 5 == 0 else body  # commas and quotes for CSV
            rows.append({"id": i, "text": body, "label": _COLOURS[a][0]})
        elif name == "pairs":
            rows.append(
                {"text": text(a), "text_pair": text(b), "label": "same" if a == b else "different"}
            )
        elif name == "tickets":
            colours = rng.sample(list(_COLOURS), rng.randint(0, 2))
            rows.append({"text": text(*colours), "label": sorted(_COLOURS[c][1] for c in colours)})
        else:
            score = (5.0 if a == b else 1.0) + rng.random() * 0.3
            rows.append({"text": text(a), "text_pair": text(b), "label": round(score, 3)})
    return rows


def write_own_task(root: Path, name: str, n_train: int = 160, n_dev: int = 40) -> Path:
    """A task folder of OWN_TASKS[name] in its format: train and dev files."""
    fmt = OWN_TASKS[name][2]
    folder = root / name
    write_table(folder / f"train.{fmt}", own_task_rows(name, n_train, seed=0))
    write_table(folder / f"dev.{fmt}", own_task_rows(name, n_dev, seed=1))
    return folder


def finetune_own_task(root: Path, teacher: Path, name: str, **kw):  # type: ignore[no-untyped-def]
    """Task folder -> task cache (the tiny BERT) -> a small fresh student fine-tuned on it.
    Returns (task folder, cache, run folder); ``kw``: more finetune options, by name."""
    import torch
    from tokenizers import Tokenizer

    from cache import open_cache
    from cache.options import configure
    from student.config import StudentConfig
    from student.encoder import StudentEncoder
    from student.finetuning.config import FinetuneConfig
    from student.finetuning.loop import finetune

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, on a busy machine by far
    try:
        data = write_own_task(root / "data", name)
        cache = root / f"{name}-cache"
        embed_any(
            corpus=f"task:{data}",
            out=cache,
            teacher=str(teacher),
            window=64,
            progress=False,
            dtype="fp32",
        )
        opened = open_cache(cache)
        tokenizer = str(opened.tokenizer_path)
        vocab = Tokenizer.from_file(tokenizer).get_vocab_size(with_added_tokens=True)
        config = StudentConfig(vocab, embedding_dim=32, hidden_size=32, output_dim=opened.dim)
        torch.manual_seed(0)
        student = root / f"{name}-student"
        StudentEncoder(config, tokenizer=tokenizer).save_pretrained(student)
        run = root / f"{name}-run"
        options = dict(epochs=8, batch_size=16, lr=3e-3, bf16=False, progress=False, patience=0)
        cfg = configure(
            FinetuneConfig, student=str(student), cache=cache, out=run, **(options | kw)
        )
        finetune(cfg)
    finally:
        torch.set_num_threads(threads)
    return data, cache, run


@pytest.fixture(scope="session")
def own_task_models(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> dict[str, Any]:
    """Every OWN_TASKS task fine-tuned once: {name: (task folder, cache, task model folder)}."""
    root = tmp_path_factory.mktemp("own-tasks")
    # The pair regression learns the score from [u; v; |u - v|; u * v] faster at a higher rate.
    options = {"scores": {"lr": 1e-2}}
    return {
        name: finetune_own_task(root / name, tiny_bert, name, **options.get(name, {}))
        for name in OWN_TASKS
    }


# -- the `pipeline` command as a user runs it (a subprocess) ----------------------------

# One torch thread: tiny teachers run fastest so, and far faster when other jobs share the cores.
ENV = {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def cli(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = os.environ | ENV | kw.pop("env", {})
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-3000:]}")
    return proc


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Bad input ends as exactly one `error:` line and exit status 1, never a traceback."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]
