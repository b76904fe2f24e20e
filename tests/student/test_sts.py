"""STS evaluation: correlations by hand, TSV reading without quoting, student and cached teacher."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app as cli_app
from student import SraError, train
from student.sts import average_ranks, evaluate_sts, pearson, read_pairs, spearman
from tests.conftest import SHARED_DATA, make_cache
from tests.student.conftest import tiny_train as tiny

STSB_DEV = SHARED_DATA / "glue" / "STS-B" / "dev.tsv"
HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"


def test_average_ranks_share_ties():
    assert average_ranks(np.array([10, 20, 20, 30])).tolist() == [1, 2.5, 2.5, 4]
    assert average_ranks(np.array([3.0, 1.0, 3.0, 3.0])).tolist() == [3, 1, 3, 3]


def test_spearman_and_pearson_against_hand_computed_values():
    # y ranks with a tie: [1, 2, 3.5, 5, 3.5]; deviations from 3 give 8 / sqrt(10 * 9.5).
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    # x = [1, 2, 3], y = [2, 4, 7]: sum dx*dy = 5, sum dx^2 = 2, sum dy^2 = 114 / 9.
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))
    assert spearman([1, 2, 3], [2, 4, 70]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [9, 5, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_read_pairs_sts_b_format_keeps_raw_quotes(tmp_path):
    path = tmp_path / "dev.tsv"
    path.write_text(
        HEADER + "\n"
        '0\tmain\tx\t2012\t0001\tnone\tnone\tHe said "hi\tShe said "bye" twice.\t3.800\n'
        "1\tmain\tx\t2012\t0002\tnone\tnone\tA cat.\tA dog.\t1.000\n"
        "2\tmain\tx\t2012\t0003\tnone\tnone\ttoo short\n"
        "3\tmain\tx\t2012\t0004\tnone\tnone\tA\tB\tnot-a-number\n"
        "4\tmain\tx\t2012\t0005\tnone\tnone\tX y.\tX z.\t0\n"
    )
    pairs = read_pairs(path)
    assert pairs.first == ['He said "hi', "A cat.", "X y."]
    assert pairs.second == ['She said "bye" twice.', "A dog.", "X z."]
    assert pairs.scores.tolist() == [3.8, 1.0, 0.0] and pairs.skipped == 2

    plain = tmp_path / "plain.tsv"
    plain.write_text("score\tsentence2\tsentence1\n4\tb\ta\n2\td\tc\n")
    assert read_pairs(plain).first == ["a", "c"]


def test_read_pairs_refuses_without_the_columns(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("a\tb\tc\n1\t2\t3\n")
    with pytest.raises(SraError, match="no sentence1, sentence2, score column") as info:
        read_pairs(path)
    assert "\n" not in str(info.value)
    with pytest.raises(SraError, match="cannot read"):
        read_pairs(tmp_path / "missing.tsv")


def test_real_sts_b_dev_parses():
    if not STSB_DEV.exists():
        pytest.skip(f"STS-B dev not found at {STSB_DEV} (set PIPELINE_SHARED_DATA)")
    pairs = read_pairs(STSB_DEV)
    assert len(pairs) == 1500 and pairs.skipped == 0
    assert pairs.scores.min() >= 0 and pairs.scores.max() <= 5


def test_student_and_cached_teacher_scores(tmp_path, tiny_bert):
    from pipeline.sentences import FilterConfig

    words = "the cat dog sat ran on mat house tree river red blue green small large fast slow"
    rng = np.random.default_rng(0)
    vocab = words.split()
    pairs = []
    for _ in range(40):
        a = " ".join(rng.choice(vocab, 6))
        b = " ".join(rng.choice(vocab, 6))
        pairs.append((a.capitalize(), b.capitalize(), float(rng.integers(0, 6))))
    tsv = tmp_path / "pairs.tsv"
    lines = [HEADER] + [
        f"{i}\tg\tf\ty\t{i}\tn\tn\t{a}\t{b}\t{s}" for i, (a, b, s) in enumerate(pairs)
    ]
    tsv.write_text("\n".join(lines) + "\n")
    sentences = sorted({p[0] for p in pairs} | {p[1] for p in pairs})
    corpus = tmp_path / "sts.txt"
    # One sentence is left out of the teacher cache: its pairs cannot be scored for the teacher.
    corpus.write_text("\n".join(sentences[1:]) + "\n")
    from pipeline.embedding import EmbedConfig, embed

    teacher_cache = tmp_path / "teacher-cache"
    embed(
        EmbedConfig(
            corpus=str(corpus),
            out=teacher_cache,
            teacher=str(tiny_bert),
            filters=FilterConfig(min_words=1, dedup=False),
            progress=False,
            dtype="fp32",
        )
    )
    run = train(tiny(make_cache(tmp_path, tiny_bert), tmp_path / "run", max_steps=3))

    result = evaluate_sts(run, tsv, teacher_cache=teacher_cache)
    missing = sentences[0]
    expected = sum(missing not in (a, b) for a, b, _ in pairs)
    assert result["pairs"] == 40 and result["teacher_pairs_found"] == expected < 40
    names = [r["model"] for r in result["rows"]]
    assert names[0] == "student (run)" and names[1].startswith("teacher (")
    assert names[2] == "student, same pairs"
    assert [r["pairs"] for r in result["rows"]] == [40, expected, expected]
    for row in result["rows"]:
        assert -1 <= row["spearman"] <= 1 and -1 <= row["pearson"] <= 1

    # The command: a table on stdout, the same numbers in --json.
    app = cli_app
    args = ["eval-sts", "--student", str(run), "--data", str(tsv)]
    args += ["--teacher-cache", str(teacher_cache), "--json", str(tmp_path / "r.json")]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "spearman" in out.stdout and "student, same pairs" in out.stdout
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == result["rows"]

    # A student of several target columns is compared with the teacher's first one.
    shutil.copytree(run, tmp_path / "two")
    config = json.loads((tmp_path / "two" / "config.json").read_text())
    config["teacher_pooling"] = "mean,mean_layer1"
    (tmp_path / "two" / "config.json").write_text(json.dumps(config))
    two = evaluate_sts(tmp_path / "two", tsv, teacher_cache=teacher_cache)
    assert two["rows"][1]["model"].endswith(", mean)") and two["rows"][1] == result["rows"][1]


def test_eval_sts_bad_student_is_one_line(tmp_path: Path):
    app = cli_app
    tsv = tmp_path / "p.tsv"
    tsv.write_text("sentence1\tsentence2\tscore\na\tb\t1\nc\td\t2\n")
    out = CliRunner().invoke(
        app, ["eval-sts", "--student", str(tmp_path / "nope"), "--data", str(tsv)]
    )
    assert out.exit_code == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: student folder")


def test_constant_gold_scores_have_no_correlation_and_fail(tmp_path: Path):
    tsv = tmp_path / "p.tsv"
    tsv.write_text("sentence1\tsentence2\tscore\na\tb\t3\nc\td\t3\ne\tf\t3.0\n")
    out = CliRunner().invoke(
        cli_app, ["eval-sts", "--student", str(tmp_path / "nope"), "--data", str(tsv)]
    )
    assert out.exit_code == 1 and out.stderr.count("\n") == 1
    assert "correlation is undefined (constant scores)" in out.stderr
    assert "nan" not in out.output.lower()
