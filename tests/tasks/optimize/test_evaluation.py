"""Evaluation: timings per batch size, retention decisions that explain themselves, STS-B, the CLI table."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tasks.optimize.evaluation import compare_variants, measure_batches, retention_decision, table_rows
from tasks.policy import default_policy
from tests.shared_data import shared_file


def test_retention_decision_explains_itself() -> None:
    ok = retention_decision("fidelity_mean_cosine", 0.993, 1.0, 0.99)
    bad = retention_decision("fidelity_mean_cosine", 0.965, 1.0, 0.99)
    assert (ok.verdict, bad.verdict) == ("pass", "fail")
    assert bad.threshold == 0.99 and bad.observed == pytest.approx(0.965)
    assert "0.9650 < threshold 0.9900" in bad.reason


def test_measure_batches_counts_calls() -> None:
    seen: list[int] = []
    timing = measure_batches(lambda chunk: seen.append(len(chunk)), list(range(10)), batch=4, min_calls=5)
    assert timing.calls == 5 and timing.items_per_s > 0 and timing.p99_ms >= timing.p50_ms
    assert seen[-5:] == [4, 4, 4, 4, 4]


def test_compare_digits_variants_quick() -> None:
    messages: list[str] = []
    reports = compare_variants(
        "digits-cnn",
        ["onnx-int8-dynamic", "trt-fp16"],
        batch_sizes=(1, 8),
        quick=True,
        progress=messages.append,
        retention_threshold=default_policy().optimization.accuracy_retention_threshold,
    )
    by_name = {r.variant: r for r in reports}
    assert list(by_name) == ["torch-fp32", "onnx-int8-dynamic", "trt-fp16"]  # the FP32 reference comes first
    int8 = by_name["onnx-int8-dynamic"]
    assert set(int8.timings) == {1, 8} and int8.decision is not None and int8.retention is not None
    assert (
        int8.decision.observed == int8.retention
        and int8.decision.threshold == default_policy().optimization.accuracy_retention_threshold
    )
    assert any("[2/3]" in m for m in messages)
    rows = table_rows(reports, (1, 8))
    assert rows[1]["provider"] == "CPU" and rows[1]["items/s @1/8"].count("/") == 1
    if by_name["trt-fp16"].skipped:
        assert rows[2]["accuracy"].startswith("skipped: ")


def test_cli_prints_table_and_refuses_unknown_model() -> None:
    from cli import app

    runner = CliRunner()
    result = runner.invoke(
        app, ["variants", "--model", "digits-cnn", "--quick", "-v", "onnx-fp32", "--batch-sizes", "1,8"]
    )
    assert result.exit_code == 0, result.output
    assert "[1/2] digits-cnn / torch-fp32" in result.output and "heldout_accuracy" in result.output
    bad = runner.invoke(app, ["variants", "--model", "nope"])
    assert bad.exit_code == 2 and "unknown model 'nope'" in bad.output


def test_stsb_spearman_fp32_matches_sentence_transformers_figure() -> None:
    path = shared_file("stsb", "sts-dev.csv")
    from serving.engines import load_engine
    from serving.variants import ensure_variant
    from serving.zoo import stsb_spearman

    engine = load_engine(ensure_variant("minilm", "onnx-fp32").path)
    assert stsb_spearman(engine, path) == pytest.approx(86.72, abs=0.05)
