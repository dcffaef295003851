"""Capacity planning (seed 7.5): history -> validation -> trends (quarterly) -> capacity model (half-yearly) ->
scenarios -> plans -> recommendation -> autoscaling (yearly). Orchestration only: the logic lives in tasks/capacity."""

from __future__ import annotations

import time
from typing import Any, Literal

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from serving.auth import client_admin_key
from serving.network import checked_url
from tasks.capacity import autoscaling as autoscale
from tasks.capacity import data_quality as dq
from tasks.capacity import forecasting as fc
from tasks.capacity import plan as cap
from tasks.capacity import tracking
from tasks.capacity.history import (
    ColumnMapping,
    Coverage,
    HistoryError,
    RawHistory,
    load_file,
    load_prometheus,
    render_coverage_markdown,
)
from tasks.policy import Capacity, Policy, default_policy
from tasks.records import names, runs


def _publish_validation(report: dq.ValidationReport) -> None:
    create_markdown_artifact(
        key=names.artifact_key("capacity-validation"),
        markdown=dq.render_validation_markdown(report),
        description=f"validation: {report.verdict}",
    )


@task(name="collect-history")
def collect_history(
    history: str | None,
    prometheus: dict[str, Any] | None,
    mapping: dict[str, Any] | None,
    policy: Capacity,
) -> RawHistory:
    """Read the history (a file with its column mapping, or Prometheus); an unreadable source still gets a report."""
    source = str(prometheus or history)
    try:
        if not history and not prometheus:
            raise HistoryError(
                "no history to plan on: pass history= (a CSV/Parquet file) or prometheus= (url, query, start, "
                "end, step_s); the demo passes its synthetic history explicitly"
            )
        raw = (
            load_prometheus(**prometheus)
            if prometheus
            else load_file(str(history), ColumnMapping.from_dict(mapping))
        )
    except HistoryError as exc:
        _publish_validation(dq.failed_load_report(source, exc, policy))
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
        model,
        knee_rps,
        onnx_path,
        policy.optimization.hardware_cost_per_hour,
        policy.capacity,
        max_batch=policy.serving.max_batch_size,
    )


@task(name="publish-trends")
def publish_trends(
    analysis: fc.TrendAnalysis, report: dq.ValidationReport, synthetic: bool
) -> dict[str, Any]:
    """The quarterly trend report: the forecasters' cross-validation and the trends, as an artifact."""
    markdown = cap.render_trends_markdown(report, analysis, synthetic)
    create_markdown_artifact(
        key=names.artifact_key("capacity-trends"), markdown=markdown, description="capacity trends"
    )
    create_table_artifact(
        key=names.artifact_key("capacity-backtest"),
        table=analysis.planning.backtest.table(),
        description="forecaster cross-validation",
    )
    return cap.trends_output(report, analysis)


@task(name="publish-capacity-model")
def publish_capacity_model(
    knee: cap.KneeReading, options: list[cap.CapacityOption], note: str
) -> dict[str, Any]:
    """The half-yearly capacity model: the champion's knee, each option's rate and label, the memory checks."""
    create_table_artifact(
        key=names.artifact_key("capacity-model"),
        table=[cap.option_row(o) for o in options],
        description=f"capacity per unit; {note}"[:2000],
    )
    return cap.capacity_model_output(knee, options, note)


@task(name="apply-autoscaling")
def apply_autoscaling(
    model: str, decision: cap.PlanDecision, url: str | None, admin_key: str | None
) -> autoscale.PublishedAutoscaling:
    """Write the plan's autoscaling as a Serve config file; with `url`, apply it to the live deployment and read
    it back from Serve."""
    published = autoscale.publish_autoscaling(model, decision.autoscaling, url, admin_key)
    print(published.sentence())
    return published


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
    synthetic: bool = False,
) -> tuple[str, list[dict[str, Any]]]:
    """Markdown and table artifacts with stable keys, and one MLflow run with plots, plan table and metrics."""
    markdown = cap.render_plan_markdown(report, knee, analysis, decision, options, synthetic)
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
    record = tracking.plan_record(report, analysis, knee, decision, markdown, table, policy, coverage, plans)
    create_markdown_artifact(
        key=names.artifact_key("capacity-plots"),
        markdown="\n".join(
            cap.figure_markdown(name.removesuffix(".png"), fig) for name, fig in record.figures.items()
        ),
        description="history + forecast with its bands; demand vs each option's capacity",
    )
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
    history_mapping: dict[str, Any] | None = None,
    stage: Literal["trends", "capacity-model", "plan"] = "plan",
    apply: bool = False,
    url: str | None = None,
    admin_key: str | None = None,
    synthetic: bool = False,
) -> dict[str, Any]:
    """Seed 7.5: trends (quarterly), the capacity model (half-yearly), the plan (yearly) for the forecast demand.

    `history` (with `history_mapping`: time_column, value_column, time_unit, filters, combine) or `prometheus`
    is required; `synthetic` says the history is made up (the demo) and the plan's title says so. `apply` sets the
    plan's autoscaling on the live deployment at `url` through its admin API (`admin_key`, default the first of
    INFEROPS_ADMIN_KEYS). `scenario`, `confidence` and `holdout_days` default to
    policy capacity.plan_scenario, capacity.plan_confidence and capacity.replay_holdout_days.
    """
    started = time.perf_counter()
    policy = default_policy()
    url, admin_key = checked_url(url, "url"), client_admin_key(admin_key)
    if apply and not url:
        raise ValueError(
            "apply=True needs url= (the endpoint whose deployment the autoscaling is applied to)"
        )
    raw = collect_history(history, prometheus, history_mapping, policy.capacity)
    series, report = validate_history(raw, suite_file, policy.capacity)
    analysis = analyse_trends(series, holdout_days, policy.capacity)
    if stage == "trends":
        return publish_trends(analysis, report, synthetic)
    knee, options, note = model_capacity(model, knee_rps, onnx_path, policy)
    if note:
        print(note)
    if stage == "capacity-model":
        return publish_capacity_model(knee, options, note)
    scenarios = build_scenarios(analysis, policy.capacity)
    plans = gpu_expansion_plans(scenarios, options, policy.capacity)
    decision = recommend(analysis, options, plans, scenario, confidence, policy)
    published = apply_autoscaling(model, decision, url if apply else None, admin_key)
    run_id, table = publish_plan(
        report, analysis, knee, options, plans, decision, raw.coverage, policy.capacity, synthetic
    )
    print(decision.recommendation.reason)
    out = cap.plan_output(report, analysis, decision, run_id, table, started)
    return out | autoscale.output(published) | {"synthetic": synthetic}


if __name__ == "__main__":
    from tasks.capacity.synthetic import write_synthetic_history

    result = capacity_planning(history=str(write_synthetic_history()), synthetic=True, knee_rps=50.0)
    print(result["recommendation"])
