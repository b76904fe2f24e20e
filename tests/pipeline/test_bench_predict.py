"""`pipeline bench predict` at toy sizes: every number it reports is there and sane."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipeline.cli import app


@pytest.mark.slow
def test_bench_predict_reports_memory_and_throughput(own_task_models, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "predict",
            "--model",
            str(own_task_models["pairs"][2]),
            "--rows",
            "600",
            "--small-rows",
            "50",
            "--memory-rows",
            "200",
            "--chunk-rows",
            "64",
            "--workdir",
            str(tmp_path),
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["task"] == {"name": "pairs", "problem": "classification", "pair": True}
    small, large = report["predict"]["small"], report["predict"]["large"]
    assert (small["rows"], large["rows"]) == (50, 600)
    assert small["ru_maxrss_mb"] > 50 and large["rows_per_s"] > 0
    assert report["in_memory"]["rows_per_s"] > 0 and report["throughput_ratio"] > 0
    assert set(report["targets"]) == {"memory_flat", "throughput_within_10pct"}
    assert "pipeline predict (large)" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # scratch files removed
