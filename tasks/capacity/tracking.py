"""What a capacity plan records in MLflow: one run with the plan's tags, inputs, metrics, tables, report and plots,
built as a plain record (written by `tasks.records.runs.log_run`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.capacity.data_quality import ValidationReport
from tasks.capacity.forecasting import BacktestResult, HoldoutCheck, TrendAnalysis
from tasks.capacity.history import Coverage
from tasks.capacity.plan import (
    KneeReading,
    PlanDecision,
    PlanRow,
    plot_capacity_vs_demand,
    plot_forecast,
)
from tasks.policy import Capacity
from tasks.records import names
from tasks.records.runs import RunRecord

RUN_NAME = "capacity-plan"


def backtest_metrics(backtest: BacktestResult) -> dict[str, float]:
    """Per cross-validated forecaster: sMAPE and MASE; for the chosen one, its conformal half-width per level
    (relative to the forecast, level in percent in the name)."""
    metrics = {}
    for c in backtest.candidates.values():
        prefix = "chosen" if c.name == backtest.winner else c.name.replace("-", "_")
        metrics[f"{prefix}_smape"] = c.smape
        metrics[f"{prefix}_mase"] = c.mase
    for level, width in backtest.half_widths.items():
        metrics[f"chosen_half_width_{int(level * 100)}"] = width
        folds = list(backtest.fold_coverage(level).values())
        if folds:  # leave one fold out: how the band covered each fold, calibrated on the others
            metrics[f"chosen_fold_coverage_{int(level * 100)}_mean"] = float(np.mean(folds))
            metrics[f"chosen_fold_coverage_{int(level * 100)}_min"] = min(folds)
    return metrics


def holdout_metrics(check: HoldoutCheck) -> dict[str, float]:
    """The forecast on the held-out tail: its sMAPE, the best seasonal naive's, and each band's coverage (level in
    percent in the name)."""
    metrics = {
        "holdout_smape": check.smape,
        "holdout_naive_smape": check.naive_smape,
        "holdout_gain": check.gain,
    }
    return metrics | {f"holdout_coverage_{int(round(lv * 100))}": c for lv, c in check.coverage.items()}


def coverage_params(coverage: Coverage | None) -> dict[str, Any]:
    """How much history the source held against what was asked for (none for a file, which says nothing)."""
    if coverage is None:
        return {}
    return {
        "history_coverage": coverage.sentence(),
        "history_retention": coverage.retention or "unknown",
        "history_first": coverage.first.isoformat(),
        "history_last": coverage.last.isoformat(),
    }


def plan_record(
    report: ValidationReport,
    analysis: TrendAnalysis,
    knee: KneeReading,
    decision: PlanDecision,
    markdown: str,
    table: list[dict[str, Any]],
    policy: Capacity,
    coverage: Coverage | None = None,
    rows: list[PlanRow] | None = None,
) -> RunRecord:
    """The plan's MLflow run: what it was planned on and decided, the backtest, the report and two plots."""
    planning, trends, rec = analysis.planning, analysis.trends, decision.recommendation
    metrics: dict[str, float | None] = {
        "recommended_units": rec.units,
        "demand_rps": rec.demand_rps,  # the chosen scenario's forecast at the plan's confidence
        "current_units": rec.current_units,
        "monthly_cost": rec.monthly_cost,
        "growth_observed": trends.observed_growth,
        "growth_forecast": trends.forecast_growth,
        "volatility": trends.volatility,
        "burstiness": trends.burstiness,
        "backtest_margin": planning.backtest.margin,
        "zero_windows": report.zero_windows,
        "missing_windows": report.missing_windows,
        **backtest_metrics(planning.backtest),
    }
    if analysis.check is not None:
        metrics |= holdout_metrics(analysis.check)
    if decision.replay is not None:
        metrics["replay_exceed_share"] = decision.replay.exceed_share
        metrics["replay_idle_cost"] = decision.replay.idle_cost
    return RunRecord(
        RUN_NAME,
        names.CAPACITY_EXPERIMENT,
        tags={
            names.TAG_MODEL: knee.model,
            names.TAG_FORECASTER: planning.forecaster,
            names.TAG_STRATEGY: decision.strategy.strategy,
            names.TAG_RECOMMENDATION: f"{rec.units}x{rec.option}",
            names.TAG_VALIDATION: report.verdict,
            names.TAG_HISTORY: report.source,
        },
        params={
            "knee_rps": knee.knee_rps,
            "scenario": rec.scenario,
            "confidence": rec.level,
            "target_utilisation": policy.target_utilisation,
            **coverage_params(coverage),
        },
        metrics=metrics,
        texts={"capacity_plan.md": markdown},
        dicts={
            "validation_report.json": report.to_dict(),
            "ray_serve_autoscaling.json": decision.autoscaling.ray_config(),
        },
        tables={
            "plan_table.json": pd.DataFrame(table),
            "backtest.json": pd.DataFrame(planning.backtest.table()),
        },
        figures={
            "forecast.png": plot_forecast(analysis.fit, planning.forecast, analysis.holdout),
            "capacity_vs_demand.png": plot_capacity_vs_demand(
                analysis.fit, planning.forecast, rec, policy.target_utilisation, rows
            ),
        },
    )
