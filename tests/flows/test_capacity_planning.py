"""A real Prefect flow run on the synthetic history: artifacts with stable keys and an MLflow run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from cli.render import print_plan
from serving.settings import get_settings
from tasks.capacity.data_quality import DataQualityError
from tasks.capacity.history import HistoryError
from tasks.capacity.plan import KneeNotFoundError
from tasks.records import names
from tasks.records.store import configure
from tests.console_text import raw_lines, render
from tests.prometheus_server import ServeTraffic

# The demo's synthetic history cut to 18 days: past the policy's 14-day minimum and its outage at day 17.4.
SHORT_HISTORY_DAYS = 18


@pytest.fixture(scope="module", autouse=True)
def quick_forecasters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """These tests check the flow's wiring, run after run: the cheap half of the policy's forecasters is enough
    (tests/tasks/capacity/test_forecasting.py cross-validates the whole set on the real traces)."""
    from tasks.policy import default_policy

    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(
        "capacity:\n  forecasters: [mstl-daily, autotheta, seasonal-naive-daily, seasonal-naive-weekly]\n",
        encoding="utf-8",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INFEROPS_POLICY_FILE", str(policy))
        default_policy.cache_clear()
        yield
    default_policy.cache_clear()


def test_flow_on_synthetic_history(prefect_harness: None, tiny_onnx: Path) -> None:
    # Prefect (and the flow module that imports it) is imported inside the tests, as the harness fixture does,
    # so collecting the suite does not load Prefect's settings before the temporary API exists.
    from prefect.artifacts import Artifact

    from flows.capacity_planning import capacity_planning
    from tasks.capacity.synthetic import write_synthetic_history

    history = str(write_synthetic_history(days=SHORT_HISTORY_DAYS))
    result = capacity_planning(
        history=history, synthetic=True, knee_rps=20.0, model="tiny", onnx_path=str(tiny_onnx)
    )
    print(
        f"flow wall time on the synthetic history: {result['wall_s']:.1f} s; forecaster {result['forecaster']}"
    )
    assert result["validation"]["verdict"] == "masked" and result["validation"]["zero_windows"] == 5
    shown = render(print_plan, result)  # what `make run` prints for the plan: a table and sentences
    assert not raw_lines(shown), raw_lines(shown)
    assert "recommendation:" in shown and "ray serve autoscaling: min_replicas=" in shown
    assert "capacity plan on synthetic history (a demo)" in shown and " *" in shown  # the cheapest, marked
    assert result["forecaster"].startswith("ensemble(") and result["applied"] is None
    assert Path(result["serve_config"]).read_text().count("autoscaling_config") == 1
    assert Path(result["validation"]["report_path"]).exists()
    rec = result["recommendation"]
    assert rec["units"] >= rec["covering_units"] >= 1
    assert result["autoscaling"]["max_replicas"] == rec["units"]
    assert result["replay"] is not None and 0.0 <= result["replay"]["exceed_share"] <= 1.0
    check = result[
        "forecast_check"
    ]  # the forecast on the held-out tail, beside the best seasonal naive there
    assert set(check["coverage"]) == {"80", "90", "95"} and check["naive"].startswith("seasonal-naive-")
    assert f"forecast check: on the {check['windows']} held-out windows" in shown
    assert {row["option"] for row in result["plan_table"]} == {"current-replica", "V100", "A100", "H100"}
    for key in ("capacity-validation", "capacity-plan", "capacity-plan-table", "capacity-backtest"):
        assert Artifact.get(key) is not None, key
    plots = Artifact.get("capacity-plots").data
    assert plots.count("](data:image/png;base64,") == 2 and "### forecast" in plots
    plan_md = Artifact.get("capacity-plan").data
    assert plan_md.startswith("# Capacity plan — on synthetic history (a demo, not your traffic)")

    # the seed's cadence: trends (quarterly) and the capacity model (half-yearly) stop where their stage ends
    trends = capacity_planning(history=history, stage="trends")
    assert trends["stage"] == "trends" and trends["forecaster"] == result["forecaster"]
    assert {"volatility", "burstiness", "observed_growth"} <= set(trends["trends"])
    model = capacity_planning(
        history=history, stage="capacity-model", knee_rps=20.0, model="tiny", onnx_path=str(tiny_onnx)
    )
    assert (
        model["stage"] == "capacity-model" and [o["option"] for o in model["options"]][0] == "current-replica"
    )
    assert "fits in" in model["note"] and Artifact.get("capacity-model") is not None

    client = mlflow.MlflowClient(configure())
    run = client.get_run(result["mlflow_run_id"])
    assert client.get_experiment(run.info.experiment_id).name == names.CAPACITY_EXPERIMENT
    assert run.data.metrics["recommended_units"] == rec["units"]
    assert run.data.metrics["holdout_coverage_95"] == pytest.approx(check["coverage"]["95"])
    assert run.data.metrics["holdout_smape"] == pytest.approx(check["smape"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "forecast.png",
        "capacity_vs_demand.png",
        "plan_table.json",
        "backtest.json",
        "capacity_plan.md",
        "validation_report.json",
        "ray_serve_autoscaling.json",
    } <= artifacts


def test_flow_fails_clearly_on_missing_knee_and_empty_file(prefect_harness: None, tmp_path: Path) -> None:
    from flows.capacity_planning import capacity_planning

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    before = set((get_settings().data_dir / "capacity" / "validation").glob("empty-csv-*.json"))
    with pytest.raises(HistoryError, match="is empty"):
        capacity_planning(history=str(empty), knee_rps=10.0)
    after = set((get_settings().data_dir / "capacity" / "validation").glob("empty-csv-*.json"))
    assert after - before, "the validation report must be written even for an unreadable file"
    with pytest.raises(HistoryError, match="no history to plan on: pass history="):
        capacity_planning(knee_rps=10.0)  # never a silent synthetic history
    from tasks.capacity.synthetic import write_synthetic_history

    with pytest.raises(KneeNotFoundError, match="'ghost'.*inferops bench stress"):
        capacity_planning(
            history=str(write_synthetic_history(days=SHORT_HISTORY_DAYS)), model="ghost", onnx_path=None
        )
    with pytest.raises(ValueError, match="apply=True needs url="):
        capacity_planning(
            history=str(write_synthetic_history(days=SHORT_HISTORY_DAYS)), knee_rps=10.0, apply=True
        )


def test_flow_reads_a_quarter_from_a_real_prometheus_and_says_how_little_it_keeps(
    prefect_harness: None, serve_traffic_in_prometheus: ServeTraffic
) -> None:
    from prefect.artifacts import Artifact

    from flows.capacity_planning import capacity_planning

    traffic = serve_traffic_in_prometheus
    query = traffic.rate_query("10m")
    prometheus = {"url": traffic.prometheus_url, "query": query, "start": "-90d", "end": "now", "step_s": 600}
    # What a quarterly deployment asks for. The real samples span the minutes since this session started
    # Prometheus, and a plan needs days (daily seasonality 2, weekly the policy's 14): validation stops the
    # flow, and the coverage, published before validation, says why. Nothing is backfilled into Prometheus.
    with pytest.raises(DataQualityError, match="enough_history") as stopped:
        capacity_planning(prometheus=prometheus, knee_rps=20.0)
    report = stopped.value.report
    assert report.source == f"prometheus:{query}" and report.rows >= 1 and report.history_days < 1
    artifact = Artifact.get("capacity-history-coverage")
    assert artifact is not None and isinstance(artifact.data, str)
    assert "asked for 90 days from Prometheus; it keeps 15d; data starts " in artifact.data
    assert "| asked for |" in artifact.data and "| returned |" in artifact.data
