"""The seed's decision matrix (7.3.5) and improvement formulas (7.3.4) on known inputs."""

from __future__ import annotations

import pytest

from tasks.optimize import improvement
from tasks.optimize.decision_matrix import CandidateEvidence, score_candidate
from tasks.policy import load_policy

POLICY = load_policy()


def test_improvement_formulas() -> None:
    assert improvement.performance_improvement(100, 250) == pytest.approx(1.5)
    assert improvement.efficiency_gain(2, 5) == pytest.approx(2.5)
    assert improvement.cost_saving_rate(10, 4) == pytest.approx(0.6)
    assert improvement.roi(300, 100) == pytest.approx(2.0)
    assert improvement.gpu_utilisation_improvement(0.4, 0.6) == pytest.approx(0.5)
    assert improvement.accuracy_retention(0.98, 0.97) == pytest.approx(0.97 / 0.98)
    with pytest.raises(ValueError, match="before must be > 0"):
        improvement.performance_improvement(0, 1)


def test_decision_matrix_go_and_no_go() -> None:
    opt = POLICY.optimization
    good = score_candidate(CandidateEvidence("int8-pc", "quantization", 1.2, 0.995, 0.99, 0.05), opt)
    assert good.go, good.reason
    lossy = score_candidate(CandidateEvidence("int8-plain", "quantization", 1.5, 0.96, 0.80, 0.05), opt)
    assert not lossy.go
    assert "accuracy_impact" in lossy.reason
    slow = score_candidate(CandidateEvidence("graph", "graph_optimization", 0.1, 1.0), opt)
    assert not slow.go and "performance_gain" in slow.reason
    assert {row["factor"] for row in good.rows} == set(opt.decision_matrix)
    with pytest.raises(ValueError, match="optimization type 'magic'"):
        score_candidate(CandidateEvidence("m", "magic", 1, 1), opt)
