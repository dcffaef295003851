"""The plan's decision and what its MLflow run holds, built without MLflow on a constructed three-day history."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from tasks.capacity import forecasting as fc
from tasks.capacity import plan as cap
from tasks.capacity import tracking
from tasks.capacity.data_quality import ValidationReport
from tasks.policy import default_policy

POLICY = default_policy().capacity


@pytest.fixture(scope="module")
def planned() -> tuple[
    ValidationReport, fc.TrendAnalysis, cap.KneeReading, list[cap.PlanRow], cap.PlanDecision
]:
    idx = pd.date_range("2024-01-01", periods=6 * 24 * 3, freq="600s")
    series = pd.Series(50.0 + 10.0 * np.sin(np.arange(len(idx)) * 2 * np.pi / 144), index=idx)
    fit, holdout = fc.split_holdout(series, 1.0)
    name = "seasonal-naive-daily"
    index = fc.future_index(fit, 2.0)
    members = fc.forecast_members(fit, [name], index)
    half_widths = {0.8: 0.1, 0.9: 0.15, 0.95: 0.2}
    forecast = fc.banded(index, members[name].to_numpy(), half_widths, name)
    score = fc.CandidateScore(name, 0.1, 0.5, 1)
    backtest = fc.BacktestResult({name: score}, name, None, 0.0, 1.0, 1, "the only candidate", half_widths)
    planning = fc.PlanningForecast(backtest, forecast, members, name)
    check = fc.check_holdout(fit, holdout, forecast, POLICY.coverage_tolerance)
    analysis = fc.TrendAnalysis(fit, holdout, planning, fc.analyse_trends(fit, forecast, POLICY), check)
    knee = cap.KneeReading("m", 20.0, "test")
    options = [cap.replica_option(knee, 1.0)]
    plans = cap.expansion_plans(
        cap.build_scenarios(forecast, analysis.trends.burstiness, POLICY), options, POLICY
    )
    decision = cap.decide(analysis, options, plans, POLICY, 100.0)
    report = ValidationReport(
        "file:/data/h.csv", len(series), 600, 3.0, 2.0, ["daily"], "mask", reason="every check passed"
    )
    return report, analysis, knee, plans, decision


def test_decision_covers_the_policy_scenario_and_replays_the_holdout(planned) -> None:
    _, analysis, _, plans, decision = planned
    rec = decision.recommendation
    assert (rec.scenario, rec.level) == (POLICY.plan_scenario, POLICY.plan_confidence)
    assert rec.units >= rec.covering_units >= 1 and decision.autoscaling.max_replicas == rec.units
    assert decision.replay is not None and decision.replay.windows == len(analysis.holdout)


def test_plan_record_holds_the_plan(planned) -> None:
    report, analysis, knee, plans, decision = planned
    rec = decision.recommendation
    markdown = cap.render_plan_markdown(report, knee, analysis, decision, [cap.replica_option(knee, 1.0)])
    assert markdown.startswith("# Capacity plan") and "replay check" in markdown
    # the sine repeats exactly: yesterday is the forecast, every held-out window inside every band
    assert "- forecast check: on the 144 held-out windows the forecast's sMAPE is 0.000" in markdown
    record = tracking.plan_record(report, analysis, knee, decision, markdown, cap.plan_table(plans), POLICY)
    try:
        assert (record.name, record.experiment) == ("capacity-plan", "inferops-capacity")
        assert record.tags == {
            "inferops.model": "m",
            "inferops.forecaster": "seasonal-naive-daily",
            "inferops.strategy": decision.strategy.strategy,
            "inferops.recommendation": f"{rec.units}xcurrent-replica",
            "inferops.validation": "pass",
            "inferops.history": "file:/data/h.csv",
        }
        assert record.params == {
            "knee_rps": 20.0,
            "scenario": rec.scenario,
            "confidence": rec.level,
            "target_utilisation": POLICY.target_utilisation,
        }
        assert (
            record.metrics["recommended_units"] == rec.units
            and record.metrics["monthly_cost"] == rec.monthly_cost
        )
        assert record.metrics["chosen_smape"] == 0.1 and record.metrics["chosen_half_width_95"] == 0.2
        assert record.metrics["replay_exceed_share"] == decision.replay.exceed_share
        assert record.metrics["holdout_smape"] == pytest.approx(0.0, abs=1e-9)
        assert record.metrics["holdout_naive_smape"] == pytest.approx(0.0, abs=1e-9)
        assert [record.metrics[f"holdout_coverage_{p}"] for p in (80, 90, 95)] == [1.0, 1.0, 1.0]
        assert record.texts == {"capacity_plan.md": markdown}
        assert record.dicts["ray_serve_autoscaling.json"] == decision.autoscaling.ray_config()
        assert set(record.tables) == {"plan_table.json", "backtest.json"}
        assert len(record.tables["plan_table.json"]) == len(plans)
        assert set(record.figures) == {"forecast.png", "capacity_vs_demand.png"}
    finally:
        for figure in record.figures.values():
            plt.close(figure)
