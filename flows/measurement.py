"""The seed's test suite (7.3.6) as one flow: benchmark, load, stress or stability against a live endpoint."""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from serving.auth import client_key
from serving.client import InferopsClient
from serving.network import checked_url, is_loopback, required_url
from tasks.measure.loadgen import preflight
from tasks.measure.suites import (
    SuiteName,
    SuiteResult,
    TargetSpec,
    model_target,
    render_markdown,
    run_suite,
)
from tasks.measure.system_metrics import replica_pids
from tasks.policy import Policy, default_policy
from tasks.records.names import artifact_key
from tasks.records.suite_runs import log_suite_run


@task(name="preflight", retries=2, retry_delay_seconds=5)
def check_endpoint(
    url: str, model: str, api_key: str | None, use_cache: bool = False, metrics_url: str | None = None
) -> tuple[TargetSpec, dict[str, str]]:
    """One request before any load: an unreachable endpoint or unknown model fails here, clearly. Returns the load
    target and what the endpoint says it serves (variant, sha256). Replica memory comes from the replicas'
    processes when they run on this host, else from `metrics_url`."""
    pids = replica_pids() if is_loopback(url) else []
    with InferopsClient(url, api_key) as client:
        meta = client.check_serves(model)
    spec = model_target(
        url, model, api_key, meta, use_cache=use_cache, pids=pids, replica_metrics_url=metrics_url
    )
    preflight(spec.url, spec.body_factory(0), headers=spec.headers)
    return spec, {
        "variant": str(meta.get("variant", "unknown")),
        "sha256": str(meta.get("sha256", "unknown")),
        "accelerator": str(meta.get("accelerator", "unknown")),
    }


@task(name="run-suite", task_run_name="{suite}-suite")
def run(
    spec: TargetSpec,
    suite: SuiteName,
    policy: Policy,
    rate: float | None,
    duration_s: float | None,
    stress_budget_s: float | None,
) -> SuiteResult:
    say = get_run_logger().info
    return run_suite(
        spec, suite, policy, rate=rate, duration_s=duration_s, stress_budget_s=stress_budget_s, say=say
    )


@task(name="record-suite")
def record(
    result: SuiteResult, model: str, variant: str, sha256: str, baseline: str | None, accelerator: str | None
) -> str:
    """The run in MLflow (and as a named baseline when `baseline` is given), its verdicts as a Prefect artifact."""
    create_markdown_artifact(
        render_markdown(result), key=artifact_key(result.suite, model), description=f"{result.suite} suite"
    )
    return log_suite_run(
        result, model=model, variant=variant, sha256=sha256, baseline=baseline, accelerator=accelerator
    )


@flow(name="measurement-suite", log_prints=True)
def measurement_suite(
    suite: SuiteName = "benchmark",
    model: str = "minilm",
    url: str = "http://127.0.0.1:8000",
    api_key: str | None = None,
    rate: float | None = None,
    duration_s: float | None = None,
    variant: str | None = None,
    sha256: str | None = None,
    baseline: str | None = None,
    stress_budget_s: float | None = None,
    use_cache: bool = False,
    metrics_url: str | None = None,
) -> dict[str, Any]:
    """Run one suite, publish its verdicts and record it in MLflow (stress runs record the knee; for them `rate` is
    the ramp's first rate and `duration_s` each step's length, policy test_suite.stress's when not given).

    `use_cache=False` (default) sends `Cache-Control: no-cache`, so figures are the model's, not the cache's.
    `metrics_url` (a Ray node's /metrics, or a Prometheus scraping the nodes) gives replica memory for the
    stability suite when the replicas run on other hosts. `variant` and `sha256` are recorded as given, else as the
    endpoint reports what it serves (so the capacity plan finds the champion's knee by its sha256)."""
    url, api_key = required_url(url, "url"), client_key(api_key)
    metrics_url = checked_url(metrics_url, "metrics_url")
    spec, served = check_endpoint(url, model, api_key, use_cache, metrics_url)
    result = run(spec, suite, default_policy(), rate, duration_s, stress_budget_s)
    run_id = record(
        result,
        model,
        variant or served["variant"],
        sha256 or served["sha256"],
        baseline,
        served["accelerator"],
    )
    return {"suite": suite, "passed": result.passed, "mlflow_run_id": run_id, **result.metrics()}


if __name__ == "__main__":
    print(json.dumps(measurement_suite(), indent=2, default=str))
