"""MLflow records: a suite run holds tags, params, metrics and artifacts; named baselines come back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import mlflow
import pytest

from tasks.measure.loadgen import embeddings_body_factory
from tasks.measure.suites import StressResult, SuiteResult, TargetSpec, find_knee, run_benchmark
from tasks.policy import load_policy
from tasks.records.suite_runs import EXPERIMENT, BaselineNotFound, get_baseline, log_suite_run, save_baseline
from tests.servers import RunningServer, serve  # tests/servers.py

BODY = embeddings_body_factory("minilm", ["A short sentence for the test server."])


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve("capacity", service_ms=10.0) as running:
        yield running


@pytest.fixture(scope="module")
def benchmark_result(server: RunningServer) -> SuiteResult:
    return run_benchmark(
        TargetSpec(server.endpoint, BODY, pids=[server.pid]), policy=load_policy(), rate=20.0, duration_s=1.5
    )


@pytest.fixture(scope="module")
def stress_result(server: RunningServer) -> StressResult:
    return find_knee(
        server.endpoint,
        BODY,
        100.0,
        policy=load_policy(),
        start_rps=40.0,
        step_factor=2.0,
        step_duration_s=1.5,
        bisect_steps=1,
    )


def _artifacts(run_id: str) -> set[str]:
    return {f.path for f in mlflow.MlflowClient().list_artifacts(run_id)}


def test_benchmark_run_holds_tags_params_metrics_and_artifacts(benchmark_result: SuiteResult) -> None:
    run_id = log_suite_run(
        benchmark_result,
        model="minilm",
        variant="onnx-int8-dynamic",
        sha256="ab" * 32,
        batching="max8/5ms",
        replicas=1,
        accelerator="cpu",
    )
    run = mlflow.MlflowClient().get_run(run_id)
    assert mlflow.MlflowClient().get_experiment(run.info.experiment_id).name == EXPERIMENT
    tags = run.data.tags
    assert tags["inferops.suite"] == "benchmark" and tags["inferops.model"] == "minilm"
    assert tags["inferops.variant"] == "onnx-int8-dynamic" and tags["inferops.sha256"] == "ab" * 32
    assert tags["inferops.accelerator"] == "cpu"
    params = run.data.params
    for key in (
        "model",
        "variant",
        "sha256",
        "batching",
        "replicas",
        "hardware_cpu_model",
        "hardware_cpu_cores_logical",
        "hardware_gpu",
    ):
        assert key in params, key
    assert params["batching"] == "max8/5ms" and params["replicas"] == "1"
    metrics = run.data.metrics
    load = benchmark_result.load
    assert load is not None
    assert metrics["p99_ms"] == pytest.approx(load.percentiles["p99"])
    for key in (
        "throughput_rps",
        "p50_ms",
        "p90_ms",
        "p99_9_ms",
        "error_rate",
        "host_cpu_percent_mean",
        "target_cpu_percent_mean",
    ):
        assert key in metrics, key
    assert metrics["requests"] == load.scheduled
    files = _artifacts(run_id)
    assert {
        "latency_histogram.png",
        "latency_percentiles.json",
        "latency_percentiles.md",
        "latency.hdr",
    } <= files
    assert {"verdicts.json", "report.md"} <= files
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="latency_percentiles.json")
    table = json.loads(open(local).read())
    assert table["columns"][:2] == ["percentile", "latency_ms"]


def test_stress_run_logs_knee_and_latency_vs_throughput(stress_result: StressResult) -> None:
    run_id = log_suite_run(stress_result, model="minilm", variant="torch-fp32")
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.data.tags["inferops.suite"] == "stress"
    assert run.data.metrics["knee_rps"] == pytest.approx(stress_result.knee_rps)
    assert {"latency_vs_throughput.png", "stress_steps.json"} <= _artifacts(run_id)


def test_named_baseline_round_trip(benchmark_result: SuiteResult) -> None:
    first = save_baseline("minilm-release-1", benchmark_result, model="minilm", variant="onnx-fp32")
    second = save_baseline("minilm-release-1", benchmark_result, model="minilm", variant="onnx-fp32")
    baseline = get_baseline("minilm-release-1")
    assert baseline.run_id == second != first  # the most recent one
    assert baseline.suite == "benchmark" and baseline.tags["inferops.baseline"] == "minilm-release-1"
    assert baseline.metrics["p99_ms"] == pytest.approx(benchmark_result.load.percentiles["p99"])  # type: ignore[union-attr]
    with pytest.raises(BaselineNotFound, match="known baselines: .*minilm-release-1"):
        get_baseline("never-recorded")
    with pytest.raises(ValueError, match="non-empty name"):
        save_baseline(" ", benchmark_result, model="minilm")
