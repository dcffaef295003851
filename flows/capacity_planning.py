"""Quarterly capacity planning: history -> validation -> trends -> capacity model -> scenarios -> plans ->
recommendation. Orchestration only: the logic lives in tasks/capacity."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks.capacity import data_quality as dq
from tasks.capacity import forecasting as fc
from tasks.capacity import plan as cap
from tasks.capacity import tracking
from tasks.capacity.history import (
    Coverage,
    HistoryError,
    RawHistory,
    load_file,
    load_prometheus,
    render_coverage_markdown,
)
from tasks.capacity.synthetic import write_synthetic_history
from tasks.policy import Capacity, Policy, default_policy
from tasks.records import names, runs


def _publish_validation(report: dq.ValidationReport) -> None:
    create_markdown_artifact(
        key=names.artifact_key("capacity-validation"),
        markdown=dq.render_validation_markdown(report),
        description=f"validation: {report.verdict}",
    )


@task(name="collect-history")
def collect_history(history: str | None, prometheus: dict[str, Any] | None, policy: Capacity) -> RawHistory:
    """Read the history (file, Prometheus, or the bundled synthetic one); an unreadable source still gets a report."""
    source = history or str(write_synthetic_history())
    try:
        raw = load_prometheus(**prometheus) if prometheus else load_file(source)
    except HistoryError as exc:
        _publish_validation(dq.failed_load_report(str(prometheus or source), exc, policy))
        raise
    if raw.coverage:
        # Before validation: a server that keeps too little history says so even when the plan stops there.
        print(raw.coverage.sentence())
        create_markdown_artifact(
            key=names.artifact_key("capacity-history-coverage"),
            markdown=render_coverage_markdown(raw.coverage),
            description="history asked for vs held by the server",
        )
    return raw


@task(name="validate-history")
def validate_history(
    raw: RawHistory, suite_file: str | None, policy: Capacity
) -> tuple[pd.Series, dq.ValidationReport]:
    """Run the GX suite, publish the report, then stop on fatal problems (or gaps under gap_policy=stop)."""
    report = dq.validate_history(raw, policy, suite_file=suite_file)
    _publish_validation(report)
    return dq.prepare_series(raw, report, policy), report


@task(name="analyse-trends")
def analyse_trends(series: pd.Series, holdout_days: float | None, policy: Capacity) -> fc.TrendAnalysis:
    """Hold out the tail, backtest the forecasters, forecast the horizon with the winner, measure trends."""
    return fc.analyse_history(series, policy, holdout_days)


@task(name="model-capacity")
def model_capacity(
    model: str, knee_rps: float | None, onnx_path: str | None, policy: Policy
) -> tuple[cap.KneeReading, list[cap.CapacityOption], str]:
    """The measured knee per replica (MLflow or given) and per-GPU estimates from the ONNX graph."""
    return cap.capacity_options(
        model, knee_rps, onnx_path, policy.optimization.hardware_cost_per_hour, policy.capacity
    )


@task(name="build-scenarios")
def build_scenarios(analysis: fc.TrendAnalysis, policy: Capacity) -> list[cap.Scenario]:
    """normal / peak / burst demand at each confidence level over the horizon."""
    return cap.build_scenarios(analysis.planning.forecast, analysis.trends.burstiness, policy)


@task(name="gpu-expansion-plans")
def gpu_expansion_plans(
    scenarios: list[cap.Scenario], options: list[cap.CapacityOption], policy: Capacity
) -> list[cap.PlanRow]:
    """Units and monthly cost per scenario and option."""
    return cap.expansion_plans(scenarios, options, policy)


@task(name="recommend")
def recommend(
    analysis: fc.TrendAnalysis,
    options: list[cap.CapacityOption],
    plans: list[cap.PlanRow],
    scenario: str | None,
    confidence: float | None,
    policy: Policy,
) -> cap.PlanDecision:
    """Strategy, the cheapest covering option, Ray Serve autoscaling, and the replay check."""
    return cap.decide(
        analysis,
        options,
        plans,
        policy.capacity,
        policy.rollout_gate.sla_p99_ms,
        scenario=scenario,
        level=confidence,
    )


@task(name="publish-plan")
def publish_plan(
    report: dq.ValidationReport,
    analysis: fc.TrendAnalysis,
    knee: cap.KneeReading,
    options: list[cap.CapacityOption],
    plans: list[cap.PlanRow],
    decision: cap.PlanDecision,
    coverage: Coverage | None,
    policy: Capacity,
) -> tuple[str, list[dict[str, Any]]]:
    """Markdown and table artifacts with stable keys, and one MLflow run with plots, plan table and metrics."""
    markdown = cap.render_plan_markdown(report, knee, analysis, decision, options)
    markdown += render_coverage_markdown(coverage)  # "" for a file: only a server tells what it keeps
    table = cap.plan_table(plans)
    create_markdown_artifact(
        key=names.artifact_key("capacity-plan"), markdown=markdown, description="quarterly capacity plan"
    )
    create_table_artifact(
        key=names.artifact_key("capacity-plan-table"),
        table=table,
        description="units and monthly cost per scenario x option",
    )
    create_table_artifact(
        key=names.artifact_key("capacity-backtest"),
        table=analysis.planning.backtest.table(),
        description="forecaster backtest",
    )
    record = tracking.plan_record(report, analysis, knee, decision, markdown, table, policy, coverage)
    return runs.log_run(record), table


@flow(name="capacity-planning", log_prints=True)
def capacity_planning(
    history: str | None = None,
    knee_rps: float | None = None,
    model: str = "minilm",
    onnx_path: str | None = None,
    scenario: str | None = None,
    confidence: float | None = None,
    holdout_days: float | None = None,
    suite_file: str | None = None,
    prometheus: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Seed 7.5, quarterly: plan GPUs/replicas for the forecast demand of the next horizon.

    `scenario`, `confidence` and `holdout_days` (the tail held out of the fit and replayed against the plan)
    default to policy capacity.plan_scenario, capacity.plan_confidence and capacity.replay_holdout_days.
    """
    started = time.perf_counter()
    policy = default_policy()
    raw = collect_history(history, prometheus, policy.capacity)
    series, report = validate_history(raw, suite_file, policy.capacity)
    analysis = analyse_trends(series, holdout_days, policy.capacity)
    knee, options, note = model_capacity(model, knee_rps, onnx_path, policy)
    if note:
        print(note)
    scenarios = build_scenarios(analysis, policy.capacity)
    plans = gpu_expansion_plans(scenarios, options, policy.capacity)
    decision = recommend(analysis, options, plans, scenario, confidence, policy)
    run_id, table = publish_plan(
        report, analysis, knee, options, plans, decision, raw.coverage, policy.capacity
    )
    print(decision.recommendation.reason)
    return cap.plan_output(report, analysis, decision, run_id, table, started)


if __name__ == "__main__":
    result = capacity_planning(knee_rps=50.0)
    print(result["recommendation"])
