"""Capacity model on constructed cases: GPU roofline, scenarios, units, strategy matrix, recommendation, replay, knee."""

from __future__ import annotations

import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tasks.capacity import plan as cap
from tasks.capacity.forecasting import Forecast
from tasks.policy import default_policy
from tasks.records import names
from tasks.records.store import ensure_experiment

POLICY = default_policy().capacity


def test_onnx_cost_counts_gemm_flops_and_bytes(tiny_onnx: Path) -> None:
    cost = cap.onnx_cost(tiny_onnx)
    assert cost.flops == 2 * 64 * 32 + 2 * 32 * 8
    assert cost.weight_bytes == 4 * (64 * 32 + 32 + 32 * 8 + 8)
    assert cost.activation_bytes >= 4 * (64 + 32 + 8) and cost.unresolved == []


def test_gpu_options_are_roofline_estimates(tiny_onnx: Path) -> None:
    cost = cap.onnx_cost(tiny_onnx)
    options = {o.name: o for o in cap.gpu_options(cost, POLICY)}
    assert set(options) == set(POLICY.gpu_catalog)
    for name, spec in POLICY.gpu_catalog.items():
        compute = spec.fp16_tflops * 1e12 / cost.flops
        memory = spec.memory_bandwidth_gbs * 1e9 / cost.bytes
        assert options[name].unit_rps == pytest.approx(min(compute, memory) * POLICY.gpu_efficiency)
        assert options[name].label == "estimated"
    reading = cap.KneeReading("tiny", 123.0, "mlflow run r1", reason="stress knee on NVIDIA A100")
    measured = cap.gpu_options(cost, POLICY, measured={"A100": reading})
    assert [(o.label, o.unit_rps) for o in measured if o.name == "A100"] == [("measured", 123.0)]


def _forecast(yhat: float, half: dict[float, float]) -> Forecast:
    idx = pd.date_range("2024-01-01", periods=10, freq="600s")
    base = np.full(10, yhat)
    return Forecast(
        idx, base, {lv: base - h for lv, h in half.items()}, {lv: base + h for lv, h in half.items()}, "t"
    )


def test_scenarios_follow_forecast_and_burstiness() -> None:
    f = _forecast(100.0, {0.8: 10.0, 0.9: 20.0, 0.95: 30.0})
    scenarios = {(s.name, s.level): s.demand_rps for s in cap.build_scenarios(f, 1.5, POLICY)}
    assert len(scenarios) == len(POLICY.scenarios) * len(POLICY.confidence_levels)
    assert scenarios[("normal_load", 0.9)] == 100.0
    assert scenarios[("peak_load", 0.95)] == 130.0
    assert scenarios[("burst_load", 0.8)] == pytest.approx(110.0 * 1.5)


def test_units_and_costs_use_target_utilisation() -> None:
    assert cap.units_needed(100.0, 10.0, 0.5) == 20
    assert cap.units_needed(100.0, 10.0, 0.7) == math.ceil(100 / 7)
    option = cap.CapacityOption("X", 10.0, 2.0, "measured", "test")
    rows = cap.expansion_plans([cap.Scenario("peak_load", 0.9, 100.0, "t")], [option], POLICY)
    assert rows[0].units == math.ceil(100 / (10 * POLICY.target_utilisation))
    assert rows[0].monthly_cost == rows[0].units * 2.0 * cap.HOURS_PER_MONTH


@pytest.mark.parametrize(
    ("growth", "vol", "strategy"),
    [
        (0.8, 0.05, "preventive"),
        (0.3, 0.25, "hybrid"),
        (0.05, 0.5, "elastic"),
        (-0.1, 0.1, "shrink"),
        (0.8, 0.5, "hybrid"),
    ],
)
def test_strategy_matrix(growth: float, vol: float, strategy: str) -> None:
    decision = cap.choose_strategy(growth, vol, POLICY)
    assert decision.strategy == strategy
    assert decision.expansion == POLICY.strategies[strategy].expansion  # type: ignore[index]
    assert f"{growth:+.1%}" in decision.reason


def test_recommendation_is_cheapest_covering_option_with_strategy_floor() -> None:
    cheap_slow = cap.CapacityOption("cpu", 10.0, 0.5, "measured", "t")
    dear_fast = cap.CapacityOption("gpu", 1000.0, 4.0, "estimated", "t")
    scenarios = [cap.Scenario("peak_load", 0.95, 70.0, "t")]
    plans = cap.expansion_plans(scenarios, [cheap_slow, dear_fast], POLICY)
    strategy = cap.choose_strategy(0.3, 0.25, POLICY)  # hybrid: +50%..+100%
    rec = cap.recommend(
        plans,
        [cheap_slow, dear_fast],
        strategy,
        {"cpu": 10, "gpu": 1},
        POLICY,
        scenario="peak_load",
        level=0.95,
    )
    # cpu: covering 10, floor ceil(10*1.5)=15 -> 15*0.5; gpu: max(1, ceil(1.5)=2) -> 2*4.0: cpu is cheaper
    assert (rec.option, rec.units, rec.covering_units, rec.verdict) == ("cpu", 15, 10, "strategy_floor")
    auto = cap.autoscaling_config(rec, _forecast(35.0, {0.95: 1.0}), 100.0, POLICY)
    assert auto.max_replicas == 15 and auto.min_replicas == cap.units_needed(
        35.0, 10.0, POLICY.target_utilisation
    )
    assert auto.target_ongoing_requests == max(1, round(10.0 * POLICY.target_utilisation * 0.1))
    with pytest.raises(cap.CapacityError, match="no plan for scenario"):
        cap.recommend(plans, [cheap_slow], strategy, {}, POLICY, scenario="burst_load", level=0.95)


def test_replay_check_counts_exceedances_and_idle_cost() -> None:
    rec = cap.Recommendation("peak_load", 0.95, 0, "cpu", "measured", 10.0, 2, 2, 2, 0.0, 0.0, "t", "t")
    idx = pd.date_range("2024-01-01", periods=4, freq="3600s")
    check = cap.replay_check(pd.Series([10.0, 20.0, 25.0, np.nan], index=idx), rec, 1.0, POLICY)
    assert check.windows == 3 and check.exceed_share == pytest.approx(1 / 3)
    assert check.idle_cost == pytest.approx((0.5 + 0.0 + 0.0) * 2 * 1.0 * 1.0)
    assert check.verdict == "fail"


def test_knee_from_mlflow_and_missing_knee_error() -> None:
    with pytest.raises(cap.KneeNotFoundError, match="'nosuchmodel'.*inferops bench stress"):
        cap.champion_knee("nosuchmodel")
    ensure_experiment(names.BENCH_EXPERIMENT)
    with mlflow.start_run():
        mlflow.set_tags(
            {
                "inferops.suite": "stress",
                "inferops.model": "capmodel",
                "inferops.variant": "onnx-fp32",
                "inferops.sha256": "ab" * 32,
            }
        )
        mlflow.log_metric("knee_rps", 42.5)
    knee = cap.champion_knee("capmodel")
    assert knee.knee_rps == 42.5 and knee.variant == "onnx-fp32"


def test_capacity_options_from_given_knee_and_onnx_graph(tiny_onnx: Path) -> None:
    knee, options, note = cap.capacity_options("tiny", 20, str(tiny_onnx), 1.5, POLICY)
    assert (knee.model, knee.knee_rps, knee.source) == ("tiny", 20.0, "explicit knee_rps parameter")
    assert [o.name for o in options] == ["current-replica", *POLICY.gpu_catalog]
    replica = options[0]
    assert (replica.unit_rps, replica.price_per_hour, replica.label) == (20.0, 1.5, "measured")
    cost = cap.onnx_cost(tiny_onnx)
    assert note.startswith(
        f"GPU rates of V100, A100, H100 estimated from tiny.onnx: {cost.flops / 1e9:.3g} GFLOP, {cost.bytes / 1e6:.3g} MB per request"
        "; memory: V100: "
    )
    assert "fits in 32 GiB" in note and "does not fit" not in note
    # No graph given and none buildable: the plan still stands on the measured knee, and the note says why.
    knee, options, note = cap.capacity_options(
        "nosuchmodel", 5.0, None, 1.5, POLICY, knee_source="--knee-rps"
    )
    assert knee.source == "--knee-rps" and [o.name for o in options] == ["current-replica"]
    assert (
        note.startswith("no GPU estimates: ONNX graph for 'nosuchmodel' unavailable")
        and "pass onnx_path" in note
    )


def test_gpu_knees_measured_on_a_gpu_replace_its_estimate(tiny_onnx: Path) -> None:
    """A stress run whose replica computed on an A100 makes the A100 option measured at that knee; the latest run
    per GPU counts, CPU runs and GPUs outside the catalogue do not, the others stay estimated."""
    model = "gpu-knees"
    ensure_experiment(names.BENCH_EXPERIMENT)
    for accelerator, knee in (
        ("NVIDIA A100-SXM4-80GB", 310.0),
        ("NVIDIA A100-SXM4-80GB", 350.0),  # the later A100 run
        ("cpu", 40.0),
        ("NVIDIA L4", 120.0),  # not in the catalogue
    ):
        with mlflow.start_run():
            mlflow.set_tags(
                {
                    names.TAG_SUITE: "stress",
                    names.TAG_MODEL: model,
                    names.TAG_VARIANT: "onnx-fp16",
                    names.TAG_ACCELERATOR: accelerator,
                }
            )
            mlflow.log_metric("knee_rps", knee)
    measured = cap.measured_gpu_knees(model, POLICY.gpu_catalog)
    assert list(measured) == ["A100"] and measured["A100"].knee_rps == 350.0
    knee, options, note = cap.capacity_options(model, 40.0, str(tiny_onnx), 1.5, POLICY)
    by_name = {o.name: o for o in options}
    assert (by_name["A100"].label, by_name["A100"].unit_rps) == ("measured", 350.0)
    assert "NVIDIA A100-SXM4-80GB" in by_name["A100"].basis and "onnx-fp16" in by_name["A100"].basis
    assert by_name["V100"].label == by_name["H100"].label == "estimated"
    assert note.startswith("GPU knees measured on A100; GPU rates of V100, H100 estimated from tiny.onnx")
    assert cap.gpu_type("Tesla V100-SXM2-32GB", POLICY.gpu_catalog) == "V100"
    assert cap.gpu_type("NVIDIA H100 80GB HBM3", POLICY.gpu_catalog) == "H100"
    assert cap.gpu_type("NVIDIA H200", POLICY.gpu_catalog) is None


def test_memory_check_refuses_a_gpu_the_model_cannot_fit(tmp_path: Path) -> None:
    """Weights + activations at the largest call must fit; a GPU that cannot hold them is no option."""
    import torch

    path = tmp_path / "batched.onnx"
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 64),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        dynamo=False,
    )
    small = cap.onnx_cost(path, batch=16, seq_len=cap.MEMORY_SEQ_LEN)
    one = cap.onnx_cost(path)
    assert small.weight_bytes == one.weight_bytes and small.activation_bytes == 16 * one.activation_bytes
    fits = cap.memory_checks(small, POLICY, 16, cap.MEMORY_SEQ_LEN)
    assert all(c.fits and c.headroom > 0.99 for c in fits)
    # 40 GiB of weights: more than a V100's 32 GiB, less than an 80 GiB A100 or H100
    large = cap.ModelCost(flops=1e12, weight_bytes=40 * 2**30, activation_bytes=2**30, nodes_counted=1)
    checks = {c.gpu: c for c in cap.memory_checks(large, POLICY, 16, cap.MEMORY_SEQ_LEN)}
    assert not checks["V100"].fits and checks["A100"].fits and checks["H100"].fits
    assert (
        checks["V100"]
        .sentence()
        .startswith("V100: 41.00 GiB at batch 16 x 512 tokens does not fit in 32 GiB")
    )
    assert "refused" in checks["V100"].sentence()
    assert checks["A100"].headroom == pytest.approx(1 - 41 / 80)
    options = [o.name for o in cap.gpu_options(large, POLICY, memory=list(checks.values()))]
    assert options == ["A100", "H100"]


def test_champion_knee_is_the_registered_champions_not_the_latest_run(tiny_onnx: Path) -> None:
    from tasks.records import registry

    model = "knee-champion"
    champion = registry.register(model, tiny_onnx, {"variant": "onnx-fp32"})
    registry.promote(model)
    ensure_experiment(names.BENCH_EXPERIMENT)
    for sha, knee in ((champion.sha256, 42.5), ("cd" * 32, 99.0)):  # another version's run comes last
        with mlflow.start_run():
            mlflow.set_tags({"inferops.suite": "stress", "inferops.model": model, "inferops.sha256": sha})
            mlflow.log_metric("knee_rps", knee)
    reading = cap.champion_knee(model)
    assert reading.knee_rps == 42.5 and reading.sha256 == champion.sha256
    assert reading.reason == f"champion {model} v{champion.version} (sha256 {champion.sha256[:12]})"
