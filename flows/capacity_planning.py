"""Quarterly capacity planning: history -> validation -> trends -> capacity model -> scenarios -> plans -> recommendation."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from serving.settings import get_settings
from tasks.capacity import data_quality as dq
from tasks.capacity import forecasting as fc
from tasks.capacity import plan as cap
from tasks.capacity.history import HistoryError, RawHistory, load_file, load_prometheus
from tasks.capacity.synthetic import write_synthetic_history
from tasks.policy import default_policy

EXPERIMENT = "inferops-capacity"


@task(name="collect-history")
def collect_history(history: str | None, prometheus: dict[str, Any] | None = None) -> RawHistory:
    """Read the history (file, Prometheus, or the bundled synthetic one); an unreadable source still gets a report."""
    source = history or str(write_synthetic_history(get_settings().data_dir / "capacity" / "synthetic_history.csv"))
    try:
        if prometheus:
            return load_prometheus(**prometheus)
        return load_file(source)
    except HistoryError as exc:
        report = dq.failed_load_report(str(prometheus or source), exc)
        _publish_validation(report)
        raise


def _publish_validation(report: dq.ValidationReport) -> None:
    create_markdown_artifact(
        key="capacity-validation", markdown=dq.render_validation_markdown(report), description=f"validation: {report.verdict}"
    )


@task(name="validate-history")
def validate_history(raw: RawHistory, suite_file: str | None = None) -> tuple[pd.Series, dq.ValidationReport]:
    """Run the GX suite, publish the report, then stop on fatal problems (or gaps under gap_policy=stop)."""
    report = dq.validate_history(raw, suite_file=suite_file)
    _publish_validation(report)
    return dq.prepare_series(raw, report), report


@task(name="analyse-trends")
def analyse_trends(series: pd.Series, holdout_days: float) -> dict[str, Any]:
    """Hold out the tail, backtest the forecasters, forecast the horizon with the winner, measure trends."""
    policy = default_policy().capacity
    n_hold = int(round(holdout_days * 86400 / (series.index[1] - series.index[0]).total_seconds()))
    fit, holdout = (series.iloc[:-n_hold], series.iloc[-n_hold:]) if n_hold else (series, series.iloc[:0])
    horizon = fc.future_index(fit, holdout_days + policy.horizon_days)
    planning = fc.planning_forecast(fit, horizon)
    trends = fc.analyse_trends(fit, planning.forecast, policy)
    return {"fit": fit, "holdout": holdout, "planning": planning, "trends": trends}


@task(name="model-capacity")
def model_capacity(model: str, knee_rps: float | None, onnx_path: str | None) -> tuple[cap.KneeReading, list[cap.CapacityOption], str]:
    """The measured knee per replica (MLflow or given) and per-GPU estimates from the ONNX graph."""
    knee = (
        cap.KneeReading(model, float(knee_rps), "explicit knee_rps parameter")
        if knee_rps is not None
        else cap.champion_knee(model)
    )
    options = [cap.replica_option(knee)]
    path, note = onnx_path, ""
    if path is None:
        try:
            from serving.variants import ensure_variant

            path = str(ensure_variant(model, "onnx-fp32").path)
        except Exception as exc:  # the GPU estimate is optional: the plan still stands on the measured knee
            note = f"no GPU estimates: ONNX graph for {model!r} unavailable ({exc}); pass onnx_path"
    if path is not None:
        cost = cap.onnx_cost(path)
        options += cap.gpu_options(cost)
        note = f"GPU rates estimated from {Path(path).name}: {cost.flops / 1e9:.3g} GFLOP, {cost.bytes / 1e6:.3g} MB per request"
    return knee, options, note


@task(name="build-scenarios")
def build_scenarios(planning: fc.PlanningForecast, trends: fc.Trends) -> list[cap.Scenario]:
    """normal / peak / burst demand at each confidence level over the horizon."""
    return cap.build_scenarios(planning.forecast, trends.burstiness)


@task(name="gpu-expansion-plans")
def gpu_expansion_plans(scenarios: list[cap.Scenario], options: list[cap.CapacityOption]) -> list[cap.PlanRow]:
    """Units and monthly cost per scenario and option."""
    return cap.expansion_plans(scenarios, options)


@task(name="recommend")
def recommend(
    analysis: dict[str, Any], options: list[cap.CapacityOption], plans: list[cap.PlanRow], scenario: str, confidence: float
) -> dict[str, Any]:
    """Strategy, the cheapest covering option, Ray Serve autoscaling, and the replay check."""
    policy = default_policy()
    trends: fc.Trends = analysis["trends"]
    strategy = cap.choose_strategy(trends.observed_growth, trends.volatility, policy.capacity)
    current = cap.current_units(analysis["fit"], options, policy.capacity)
    rec = cap.recommend(plans, options, strategy, current, scenario=scenario, level=confidence)
    autoscaling = cap.autoscaling_config(rec, analysis["planning"].forecast, policy.rollout_gate.sla_p99_ms, policy.capacity)
    price = next(o.price_per_hour for o in options if o.name == rec.option)
    holdout: pd.Series = analysis["holdout"]
    replay = cap.replay_check(holdout, rec, price, policy.capacity) if holdout.notna().any() else None
    return {"strategy": strategy, "recommendation": rec, "autoscaling": autoscaling, "replay": replay}


@task(name="publish-plan")
def publish_plan(
    raw: RawHistory,
    report: dq.ValidationReport,
    analysis: dict[str, Any],
    knee: cap.KneeReading,
    options: list[cap.CapacityOption],
    plans: list[cap.PlanRow],
    decision: dict[str, Any],
) -> dict[str, Any]:
    """Markdown and table artifacts with stable keys, and one MLflow run with plots, plan table and metrics."""
    import matplotlib.pyplot as plt
    import mlflow

    from tasks.records.store import ensure_experiment

    planning: fc.PlanningForecast = analysis["planning"]
    trends: fc.Trends = analysis["trends"]
    rec: cap.Recommendation = decision["recommendation"]
    backtest_rows = planning.backtest.table()
    markdown = cap.render_plan_markdown(
        source=raw.source,
        knee=knee,
        backtest_reason=planning.backtest.reason,
        backtest_rows=backtest_rows,
        trends={k: v for k, v in asdict(trends).items() if isinstance(v, float)},
        strategy=decision["strategy"],
        rec=rec,
        autoscaling=decision["autoscaling"],
        replay=decision["replay"],
        options=options,
        validation_verdict=f"{report.verdict}: {report.reason}",
    )
    table = cap.plan_table(plans)
    create_markdown_artifact(key="capacity-plan", markdown=markdown, description="quarterly capacity plan")
    create_table_artifact(key="capacity-plan-table", table=table, description="units and monthly cost per scenario x option")
    create_table_artifact(key="capacity-backtest", table=backtest_rows, description="forecaster backtest")

    ensure_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="capacity-plan") as run:
        mlflow.set_tags({
            "inferops.model": knee.model,
            "inferops.forecaster": planning.forecaster,
            "inferops.strategy": decision["strategy"].strategy,
            "inferops.recommendation": f"{rec.units}x{rec.option}",
            "inferops.validation": report.verdict,
            "inferops.history": raw.source,
        })
        mlflow.log_params({"knee_rps": knee.knee_rps, "scenario": rec.scenario, "confidence": rec.level,
                           "target_utilisation": default_policy().capacity.target_utilisation})
        metrics = {
            "recommended_units": rec.units,
            "monthly_cost": rec.monthly_cost,
            "growth_observed": trends.observed_growth,
            "growth_forecast": trends.forecast_growth,
            "volatility": trends.volatility,
            "burstiness": trends.burstiness,
            "backtest_margin": planning.backtest.margin,
            "zero_windows": report.zero_windows,
            "missing_windows": report.missing_windows,
        }
        for c in planning.backtest.candidates.values():
            prefix = c.name.replace("-", "_")
            metrics[f"{prefix}_smape"] = c.smape
            metrics[f"{prefix}_mase"] = c.mase
            for level in c.coverage:
                metrics[f"{prefix}_coverage_{int(level * 100)}"] = c.coverage[level]
                metrics[f"{prefix}_calibrated_coverage_{int(level * 100)}"] = c.calibrated_coverage[level]
        if decision["replay"] is not None:
            metrics["replay_exceed_share"] = decision["replay"].exceed_share
            metrics["replay_idle_cost"] = decision["replay"].idle_cost
        mlflow.log_metrics(metrics)
        mlflow.log_table(pd.DataFrame(table), "plan_table.json")
        mlflow.log_table(pd.DataFrame(backtest_rows), "backtest.json")
        mlflow.log_text(markdown, "capacity_plan.md")
        mlflow.log_dict(report.to_dict(), "validation_report.json")
        mlflow.log_dict(decision["autoscaling"].ray_config(), "ray_serve_autoscaling.json")
        for name, fig in (
            ("forecast.png", cap.plot_forecast(analysis["fit"], planning.forecast, analysis["holdout"])),
            ("capacity_vs_demand.png", cap.plot_capacity_vs_demand(analysis["fit"], planning.forecast, rec, default_policy().capacity.target_utilisation)),
        ):
            mlflow.log_figure(fig, name)
            plt.close(fig)
        run_id = run.info.run_id
    return {"run_id": run_id, "markdown": markdown, "table": table}


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
    policy = default_policy().capacity
    scenario = scenario if scenario is not None else policy.plan_scenario
    confidence = confidence if confidence is not None else policy.plan_confidence
    holdout_days = holdout_days if holdout_days is not None else policy.replay_holdout_days
    raw = collect_history(history, prometheus)
    series, report = validate_history(raw, suite_file)
    analysis = analyse_trends(series, holdout_days)
    knee, options, note = model_capacity(model, knee_rps, onnx_path)
    if note:
        print(note)
    scenarios = build_scenarios(analysis["planning"], analysis["trends"])
    plans = gpu_expansion_plans(scenarios, options)
    decision = recommend(analysis, options, plans, scenario, confidence)
    published = publish_plan(raw, report, analysis, knee, options, plans, decision)
    rec: cap.Recommendation = decision["recommendation"]
    print(rec.reason)
    return {
        "recommendation": asdict(rec),
        "strategy": asdict(decision["strategy"]),
        "autoscaling": decision["autoscaling"].ray_config(),
        "replay": asdict(decision["replay"]) if decision["replay"] else None,
        "forecaster": analysis["planning"].forecaster,
        "validation": {"verdict": report.verdict, "report_path": report.report_path, "zero_windows": report.zero_windows},
        "mlflow_run_id": published["run_id"],
        "plan_table": published["table"],
        "wall_s": time.perf_counter() - started,
    }


if __name__ == "__main__":
    result = capacity_planning(knee_rps=50.0)
    print(result["recommendation"])
