"""The cycle's cost and ROI figures (seed 7.3.4 formulas)."""

from __future__ import annotations

import pytest

from tasks.optimize.improvement import roi_figures
from tasks.policy import load_policy

OPT = load_policy().optimization


def test_roi_figures() -> None:
    roi = roi_figures(100, 400, OPT, target_qps=20)
    assert roi["performance_improvement"] == pytest.approx(3.0)
    assert roi["cost_saving_rate"] == pytest.approx(0.75)
    assert roi["cost_per_million_after"] < roi["cost_per_million_before"]


def test_two_replicas_cost_twice_one() -> None:
    """Hardware is not free: at the same throughput, 2 replicas double the cost per million requests, and the
    decision matrix charges their extra hardware as implementation cost."""
    from tasks.optimize.decision_matrix import CandidateEvidence, score_candidate
    from tasks.optimize.improvement import hardware_cost_ratio, hourly_cost

    assert (
        hourly_cost(2, OPT)
        == pytest.approx(2 * hourly_cost(1, OPT))
        == pytest.approx(2 * OPT.hardware_cost_per_hour)
    )
    same = roi_figures(100, 100, OPT, target_qps=20, replicas_before=1, replicas_after=2)
    assert same["cost_per_million_after"] == pytest.approx(2 * same["cost_per_million_before"])
    assert same["cost_saving_rate"] == pytest.approx(-1.0) and same["yearly_benefit_usd"] < 0
    # twice the throughput on twice the hardware saves nothing
    doubled = roi_figures(100, 200, OPT, target_qps=20, replicas_before=1, replicas_after=2)
    assert doubled["cost_saving_rate"] == pytest.approx(0.0)
    # the matrix's cost factor: extra hardware cost per request at the measured throughput
    assert hardware_cost_ratio(2, 1, 100, 100) == pytest.approx(1.0)
    assert hardware_cost_ratio(2, 1, 200, 100) == pytest.approx(0.0)
    assert hardware_cost_ratio(1, 1, 150, 100) == pytest.approx(-1 / 3)
    one, two = (
        score_candidate(CandidateEvidence("c", "parallelization", 0.5, 1.0, 1.0, 0.0, ratio), OPT)
        for ratio in (hardware_cost_ratio(1, 1, 150, 100), hardware_cost_ratio(2, 1, 150, 100))
    )
    cost_one, cost_two = (next(f for f in m.factors if f.factor == "implementation_cost") for m in (one, two))
    assert cost_two.score - cost_one.score == pytest.approx(OPT.scoring.hardware_cost_weight / 3, abs=0.01)
    assert "hardware cost +33%" in cost_two.evidence
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        hourly_cost(0, OPT)
