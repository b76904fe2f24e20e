"""TrainConfig: the public surface, one-line range errors, and fingerprints that never move."""

from __future__ import annotations

from pathlib import Path

import pytest

from cache.options import configure
from student import SraError, StudentConfig, StudentError, TrainConfig
from student.runs.folder import fingerprint


def test_the_public_surface_reads_as_the_readme_shows():
    import student
    from student import train

    assert callable(train) and student.train is train  # the function, not a module
    assert StudentError is SraError
    cfg = TrainConfig(cache="caches/wiki", out="runs/x")
    assert cfg.cache == Path("caches/wiki") and cfg.student.hidden_size == 300
    # The student's defaults are written once: StudentConfig takes them from StudentShape.
    assert StudentConfig(vocab_size=10).hidden_size == cfg.student.hidden_size


def test_configure_takes_the_command_lines_names():
    cfg = configure(
        TrainConfig, cache="c", out="o", layers=2, student_pooling="mean", pooling="cls",
        lm_weight=0.0, rf_weight=1.0, rf_level="token", lr=1e-3, workers=2, eval_every=7,
    )  # fmt: skip
    assert (cfg.student.num_layers, cfg.student.pooling, cfg.data.pooling) == (2, "mean", "cls")
    assert cfg.objectives.realfake.level == "token" and cfg.optim.lr == 1e-3
    assert cfg.data.workers == 2 and cfg.run.eval_every == 7
    with pytest.raises(TypeError, match="no option hiden_size"):
        configure(TrainConfig, cache="c", out="o", hiden_size=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(shuffle_buffer=0), "--shuffle-buffer must be >= 1, got 0"),
        (dict(val_max_rows=0), "--val-max-rows must be >= 1, got 0"),
        (dict(workers=-1), "--workers must be >= 0, got -1"),
        (dict(cos_weight=-1.0), "--cos-weight must be a number >= 0, got -1.0"),
        (dict(grad_clip=0.0), "--grad-clip must be > 0, got 0.0"),
        (dict(warmup=1.0), "--warmup must be in [0, 1), got 1.0"),
        (dict(layers=0), "--layers must be >= 1, got 0"),
        (dict(student_pooling="min"), "--student-pooling must be one of max, mean, max+mean"),
        (dict(decay="step"), "--decay must be cosine, linear or constant"),
        (dict(min_lr_ratio=2.0), "--min-lr-ratio must be in [0, 1], got 2.0"),
        (dict(device="tpu"), "--device must be auto, cpu or cuda"),
        (dict(log_every=0), "--log-every must be >= 1, got 0"),
        (dict(epochs=0), "--epochs must be >= 1, got 0"),
    ],
)
def test_a_range_error_names_the_one_option(options, message):
    with pytest.raises(SraError) as info:
        configure(TrainConfig, cache="c", out="o", **options)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_config_is_never_changed_by_training():
    cfg = TrainConfig(cache="c", out="o")
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]


# Fingerprints of `pipeline train` runs made before this layout, computed by that code: a run
# folder made then must be recognised as the same run now (finished or resumable).
PINNED = [
    ({}, "7fbbdae1689b43d6"),
    (
        dict(lm_weight=0.2, lm_samples=64, epochs=2, lr=1e-3, workers=2, seed=5),
        "0835c6fd00371e71",
    ),
    (
        dict(
            rf_weight=30.0,
            rf_level="token",
            cos_weight=1.0,
            normalize_targets=True,
            decay="linear",
            max_steps=100,
        ),
        "2a32a91e821a9a16",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("options", "expected"), PINNED)
def test_fingerprints_of_earlier_runs_do_not_change(options, expected):
    cfg = configure(TrainConfig, cache="c", out="o", **options)
    student = StudentConfig(
        vocab_size=30522,
        output_dim=384,
        teacher="sentence-transformers/all-MiniLM-L6-v2",
        teacher_pooling="mean",
        cache_fingerprint="0123456789abcdef",
    )
    cache = {"fingerprint": "0123456789abcdef", "rows": 1000}
    identity = cfg.identity(cache=cache, student=student, bf16=False, world=1)
    assert fingerprint(identity) == expected
