"""The seed's test suite (7.3.6) as one flow: benchmark, load, stress or stability against a live endpoint."""

from __future__ import annotations

import json
from typing import Any, Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.keys import slug
from tasks.measure.loadgen import auth_headers, embeddings_body_factory, endpoint_url, preflight
from tasks.measure.suites import (
    SuiteResult,
    TargetSpec,
    render_markdown,
    run_benchmark,
    run_load,
    run_stability,
    run_stress,
)
from tasks.measure.system_metrics import replica_pids
from tasks.records.suite_runs import log_suite_run

Suite = Literal["benchmark", "load", "stress", "stability"]


@task(name="preflight", retries=2, retry_delay_seconds=5)
def check_endpoint(url: str, model: str, api_key: str | None, use_cache: bool = False) -> TargetSpec:
    """One request before any load: an unreachable endpoint or unknown model fails here, clearly."""
    full = endpoint_url(url)
    body = embeddings_body_factory(model)
    headers = auth_headers(api_key)
    if not use_cache:
        # The load cycles through a few hundred sentences: a response cache would answer nearly all of them and
        # the suite would measure the cache, not the model. Ask for fresh answers unless told otherwise.
        headers["Cache-Control"] = "no-cache"
    preflight(full, body(0), headers=headers)
    return TargetSpec(full, body, headers=headers, pids=replica_pids())


@task(name="run-suite")
def run_suite(
    spec: TargetSpec, suite: Suite, rate: float | None, duration_s: float | None, stress_budget_s: float | None
) -> SuiteResult:
    if suite == "benchmark":
        return run_benchmark(spec, rate=rate, duration_s=duration_s)
    if suite == "load":
        return run_load(spec, rate=rate, duration_s=duration_s)
    if suite == "stress":
        return run_stress(spec) if stress_budget_s is None else run_stress(spec, time_budget_s=stress_budget_s)
    return run_stability(spec, rate=rate, duration_s=duration_s)


@task(name="record-suite")
def record(result: SuiteResult, model: str, variant: str, sha256: str, baseline: str | None) -> str:
    return log_suite_run(result, model=model, variant=variant, sha256=sha256, baseline=baseline)


@flow(name="measurement-suite", log_prints=True)
def measurement_suite(
    suite: Suite = "benchmark",
    model: str = "minilm",
    url: str = "http://127.0.0.1:8000",
    api_key: str | None = None,
    rate: float | None = None,
    duration_s: float | None = None,
    variant: str = "unknown",
    sha256: str = "unknown",
    baseline: str | None = None,
    stress_budget_s: float | None = None,
    use_cache: bool = False,
) -> dict[str, Any]:
    """Run one suite, publish its verdicts and record it in MLflow (stress runs record the knee).

    `use_cache=False` (default) sends `Cache-Control: no-cache`, so figures are the model's, not the cache's."""
    spec = check_endpoint(url, model, api_key, use_cache)
    result = run_suite(spec, suite, rate, duration_s, stress_budget_s)
    run_id = record(result, model, variant, sha256, baseline)
    create_markdown_artifact(render_markdown(result), key=f"{suite}-{slug(model)}", description=f"{suite} suite")
    return {"suite": suite, "passed": result.passed, "mlflow_run_id": run_id, **result.metrics()}


if __name__ == "__main__":
    print(json.dumps(measurement_suite(), indent=2, default=str))
