"""`train()`: learning, save/load, exact resume after SIGKILL, the run-folder rule, refusals,
non-finite loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cache import CacheError, open_cache
from student import SraError, StudentEncoder, train
from student.training.config import DataConfig
from student.training.validation import compute_split, validation_batches
from tests.conftest import REPO, make_cache
from tests.student.conftest import assert_same_weights, metrics
from tests.student.conftest import tiny_train as tiny


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    return make_cache(tmp_path_factory.mktemp("train"), tiny_bert)


def test_train_learns_saves_and_encodes(tmp_path, cache_dir):
    run = train(tiny(cache_dir, tmp_path / "run", epochs=3))
    trained, val = metrics(run)
    steps = [x["step"] for x in trained]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 30
    first = np.mean([x["loss"] for x in trained[:5]])
    last = np.mean([x["loss"] for x in trained[-5:]])
    assert last < 0.5 * first, (first, last)
    assert val[-1]["val_cos"] > val[0]["val_cos"] and val[-1]["step"] == steps[-1]
    assert all(x["sentences_per_s"] > 0 and x["lr"] > 0 for x in trained)

    # The student folder: provenance, the cache's tokenizer, no checkpoint left behind.
    cache = open_cache(cache_dir)
    enc = StudentEncoder.from_pretrained(run)
    assert enc.config.teacher == cache.manifest.config["teacher"]["name"]
    assert enc.config.teacher_pooling == "mean"
    assert enc.config.cache_fingerprint == cache.manifest.fingerprint
    assert enc.config.output_dim == 32 and enc.config.hidden_size == 16
    assert (
        enc.tokenizer.to_str() == type(enc.tokenizer).from_file(str(cache.tokenizer_path)).to_str()
    )
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["summary"]["steps"] == steps[-1]
    assert not (run / "checkpoint").exists()
    vecs = enc.encode(["The cat sat on the mat.", "A river ran fast."])
    assert vecs.shape == (2, 32) and np.isfinite(vecs).all()

    # Save/load equality: the saved student reproduces the last validation numbers exactly.
    data_cfg = DataConfig(val_fraction=0.05, token_budget=800, batch_size=32)
    batches = validation_batches(cache, data_cfg, compute_split(cache, data_cfg))
    cos = []
    with torch.no_grad():
        for b in batches:
            pred = enc.model(b.input_ids, b.lengths)
            cos += torch.nn.functional.cosine_similarity(pred, b.targets).tolist()
    assert np.mean(cos) == pytest.approx(val[-1]["val_cos"], abs=1e-6)
    enc.save_pretrained(tmp_path / "copy")
    again = StudentEncoder.from_pretrained(tmp_path / "copy")
    for name, tensor in enc.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name

    # Same config again: already finished, nothing to do (with or without --resume).
    before = (run / "model.safetensors").stat().st_mtime_ns
    assert train(tiny(cache_dir, run, epochs=3)) == run
    train(tiny(cache_dir, run, epochs=3, resume=True))
    assert (run / "model.safetensors").stat().st_mtime_ns == before


def test_teacher_init_and_options_reach_the_student(tmp_path, cache_dir):
    run = train(
        tiny(
            cache_dir,
            tmp_path / "run",
            max_steps=3,
            init_embeddings="random",
            student_pooling="max+mean",
            layers=2,
            cos_weight=0.5,
            normalize_targets=True,
            decay="linear",
        )
    )
    cfg = StudentEncoder.from_pretrained(run).config
    assert (cfg.pooling, cfg.num_layers) == ("max+mean", 2)
    assert metrics(run)[0][-1]["step"] == 3


KILLER = """
import os, signal, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {repo!r})
from student.runs.checkpoint import Checkpoints
from student import train
from tests.student.conftest import tiny_train
calls = 0
commit = Checkpoints.commit
def commit_then_die(self, tmp, name):
    global calls
    calls += 1
    if calls == 3:  # the third checkpoint is fully written but not yet committed
        os.killpg(os.getpgid(0), signal.SIGKILL)  # the trainer and its DataLoader workers
    return commit(self, tmp, name)
Checkpoints.commit = commit_then_die
train(tiny_train({cache!r}, {out!r}, epochs=2, checkpoint_every=7, dropout=0.3, workers={workers}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_sigkill_gives_the_same_weights(tmp_path, cache_dir, workers):
    opts = dict(epochs=2, checkpoint_every=7, dropout=0.3, workers=workers)
    reference = train(tiny(cache_dir, tmp_path / "ref", **opts))
    ref_steps = metrics(reference)[0][-1]["step"]
    assert ref_steps > 21  # the kill below lands mid-run, in the second epoch

    out = tmp_path / "killed"
    script = KILLER.format(repo=str(REPO), cache=str(cache_dir), out=str(out), workers=workers)
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # its own process group, which it SIGKILLs
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    latest = json.loads((out / "checkpoint" / "latest.json").read_text())
    assert latest == {"dir": "step-000000014"}
    assert any(p.name.startswith(".step-000000021") for p in (out / "checkpoint").iterdir())
    assert not (out / "model.safetensors").exists()

    # The same command again resumes from the last complete checkpoint (--resume optional).
    train(tiny(cache_dir, out, **opts))

    assert_same_weights(reference, out)
    # Metrics were trimmed back to the checkpoint, so each step appears once.
    steps = [x["step"] for x in metrics(out)[0]]
    assert steps == list(range(1, ref_steps + 1))


def test_refuses_other_runs_and_folders(tmp_path, cache_dir):
    run = tmp_path / "run"
    train(tiny(cache_dir, run, max_steps=2))
    with pytest.raises(SraError, match=r"different training run \(differs in: optim\.lr\)"):
        train(tiny(cache_dir, run, max_steps=2, lr=0.5))
    with pytest.raises(SraError, match="differs in: data.batch_size"):
        train(tiny(cache_dir, run, max_steps=2, batch_size=16, resume=True))
    train(tiny(cache_dir, run, max_steps=2, lr=0.5, overwrite=True))
    assert json.loads((run / "run.json").read_text())["config"]["optim"]["lr"] == 0.5

    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(SraError, match="not a training run"):
            train(tiny(cache_dir, other, max_steps=2, overwrite=overwrite))
    assert (other / "notes.txt").read_text() == "mine"


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, cache_dir):
    run = tmp_path / "run"
    with pytest.raises(SraError, match=r"non-finite loss .* at step 2\b") as info:
        train(tiny(cache_dir, run, max_steps=5, lr=1e30, warmup=0.0, checkpoint_every=1))
    message = str(info.value)
    assert "\n" not in message and "checkpoint (step 1) is kept" in message
    assert json.loads((run / "checkpoint" / "latest.json").read_text()) == {"dir": "step-000000001"}
    assert not (run / "model.safetensors").exists()


def test_two_target_columns_side_by_side(tmp_path, tiny_bert):
    cache_dir = make_cache(tmp_path, tiny_bert, n=200, poolings=("mean", "mean_layer1"))
    run = train(tiny(cache_dir, tmp_path / "run", max_steps=5, pooling="mean,mean_layer1"))
    enc = StudentEncoder.from_pretrained(run)
    assert enc.config.output_dim == 64 and enc.config.teacher_pooling == "mean,mean_layer1"
    assert enc.encode(["The cat sat."]).shape == (1, 64)
    # Each target row is the two cached vectors of its sentence, in the order named.
    cache = open_cache(cache_dir)
    cfg = DataConfig(pooling="mean,mean_layer1", val_fraction=0.05)
    batch = validation_batches(cache, cfg, compute_split(cache, cfg))[0]
    by_tokens = {}
    for shard in range(len(cache.shards)):
        rows = cache.read_shard(shard, ["input_ids"]).column(0).to_pylist()
        both = np.hstack([cache.vectors("mean", shard), cache.vectors("mean_layer1", shard)])
        by_tokens |= {tuple(r): v for r, v in zip(rows, both, strict=True)}
    for ids, n, target in zip(batch.input_ids, batch.lengths, batch.targets, strict=True):
        np.testing.assert_array_equal(target.numpy(), by_tokens[tuple(ids[:n].tolist())])
    with pytest.raises(CacheError, match="has no 'cls' vectors"):
        train(tiny(cache_dir, tmp_path / "cls", max_steps=5, pooling="mean,cls"))
    with pytest.raises(CacheError, match="names a column twice"):
        train(tiny(cache_dir, tmp_path / "twice", max_steps=5, pooling="mean,mean"))
