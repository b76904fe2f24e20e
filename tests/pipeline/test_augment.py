"""Transfer-set augmentation (Tang et al. 2019): determinism, shape, modes, through stage one."""

from __future__ import annotations

import numpy as np
import pytest

from cache import open_cache
from cache.errors import SraError
from cache.task_data import AUGMENTED, read_examples, read_logits, read_task
from cache.tasks import get_task
from pipeline.tasks.augment import AugmentConfig, Neighbours, augment_examples
from pipeline.tasks.glue import Example
from tests.conftest import embed_any

SST2, MRPC = get_task("sst2"), get_task("mrpc")


def neighbours() -> Neighbours:
    vocab = {w: i for i, w in enumerate(["[PAD]", "[MASK]", "good", "great", "bad", "cat", "dog"])}
    emb = np.array(
        [[0, 0], [0, 1], [1, 0.1], [1, 0.2], [0.9, -0.3], [-1, 0.1], [-1, 0.2]], np.float32
    )
    return Neighbours(vocab, emb, ["good", "Cat", "unknownword"], k=1, special=[0, 1])


def test_neighbours_are_nearest_whole_words_by_cosine():
    nb = neighbours()
    rng = np.random.default_rng(0)
    assert nb.pick("good", rng) == "great" and nb.pick("CAT", rng) == "dog"
    assert nb.pick("unknownword", rng) is None and nb.pick("great", rng) is None  # not in corpus


def test_deterministic_by_seed_and_shaped_as_asked():
    examples = [Example(i, f"good cat number {i} sat on the mat .", None, i % 2) for i in range(50)]
    cfg = AugmentConfig(copies=4, seed=3)
    a = augment_examples(examples, SST2, cfg, neighbours(), "[MASK]")
    b = augment_examples(examples, SST2, cfg, neighbours(), "[MASK]")
    c = augment_examples(examples, SST2, AugmentConfig(copies=4, seed=4), neighbours(), "[MASK]")
    assert a == b and a != c
    assert 120 < len(a) <= 200  # up to 4 each; identical variants are dropped
    assert all(e.label is None and e.text_b is None for e in a)
    texts = " ".join(e.text_a for e in a)
    assert "[MASK]" in texts and "great" in texts and "dog" in texts  # mask and replace happen
    originals = {e.text_a for e in examples}
    assert not originals & {e.text_a for e in a}
    # n-grams: some variants are a short piece of the sentence.
    assert any(len(e.text_a.split()) <= 5 for e in a)


def test_a_variant_differing_only_in_spaces_is_no_variant():
    examples = [Example(0, "good ", None, 1), Example(1, "  cat   sat ", None, 0)]
    cfg = AugmentConfig(copies=20, modes=("mask",), p_mask=0.0)
    assert augment_examples(examples, SST2, cfg, None, "[MASK]") == []


def test_variants_of_one_example_do_not_depend_on_the_others():
    examples = [Example(i, f"good cat number {i} sat on the mat .", None, 0) for i in range(5)]
    cfg = AugmentConfig(copies=3, seed=0)
    full = augment_examples(examples, SST2, cfg, neighbours(), "[MASK]")
    first = augment_examples(examples[:1], SST2, cfg, neighbours(), "[MASK]")
    assert [e.text_a for e in first] == [e.text_a for e in full if e.idx == 0]


def test_pairs_take_mask_and_replace_and_refuse_ngram():
    examples = [Example(i, "good cat sat here today", "the dog ran off fast", 1) for i in range(20)]
    out = augment_examples(examples, MRPC, AugmentConfig(copies=2), neighbours(), "[MASK]")
    assert out and all(e.text_b is not None for e in out)
    assert all(len(e.text_a.split()) == 5 and len(e.text_b.split()) == 5 for e in out)
    with pytest.raises(SraError, match="only suits single-sentence tasks.*mrpc"):
        AugmentConfig(copies=2, modes=("mask", "ngram")).check(MRPC)
    with pytest.raises(SraError, match="unknown augmentation mode"):
        AugmentConfig(copies=2, modes=("shuffle",)).check(SST2)


@pytest.mark.slow
def test_augmented_split_through_stage_one(tmp_path, tiny_teachers, tiny_glue):
    cfg = dict(
        corpus="glue:sst2",
        glue_dir=str(tiny_glue),
        out=tmp_path / "c",
        teacher=str(tiny_teachers["sst2"]),
        logits=True,
        augment=AugmentConfig(copies=2, seed=1),
        window=64,
        dtype="fp32",
        progress=False,
    )
    embed_any(**cfg)
    cache = open_cache(tmp_path / "c")
    info = read_task(cache)
    assert info.augmentation is not None and info.augmentation["copies"] == 2
    n = info.splits[AUGMENTED]
    assert 200 < n <= 320
    augmented = read_examples(cache, AUGMENTED)
    assert (augmented.column("label").to_numpy() == -1).all()  # the teacher labels them
    assert read_logits(cache, AUGMENTED).shape == (n, 2)
    # Original sentences keep their ids: the augmented texts come after them.
    train = read_examples(cache, "train").column("sentence1_id").to_numpy()
    assert augmented.column("sentence1_id").to_numpy().min() > train.max() - 1
    # Same seed, same cache: a rerun is a no-op; another seed is another cache.
    assert embed_any(**cfg).status == "complete"
    with pytest.raises(Exception, match="overwrite"):
        embed_any(**{**cfg, "augment": AugmentConfig(copies=2, seed=2)})


def test_pair_task_with_ngram_fails_before_the_teacher(tmp_path, tiny_glue, monkeypatch):
    monkeypatch.setattr("pipeline.teacher.Teacher", lambda *a, **k: pytest.fail("teacher loaded"))
    cfg = dict(
        corpus="glue:mrpc",
        glue_dir=str(tiny_glue),
        out=tmp_path / "c",
        augment=AugmentConfig(copies=2, modes=("ngram",)),
    )
    with pytest.raises(SraError, match="sentence-pair task"):
        embed_any(**cfg)
    assert not (tmp_path / "c").exists()
