"""Pure decision logic: improvement formulas, decision matrix, risk matrix, rollout risk and gate verdicts."""

from __future__ import annotations

import pytest

from tasks.optimize import improvement
from tasks.optimize.decision_matrix import CandidateEvidence, score_candidate
from tasks.policy import RiskEntry, load_policy
from tasks.release.gate import ItemResult, decide, render_markdown, share_passed
from tasks.release.rollout_risk import Observation, evaluate
from tasks.risk.assessment import assess

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


def test_seed_risk_example_reproduced_exactly() -> None:
    result = assess(POLICY.risk)
    got = {r.name: (r.weighted_score, r.level) for r in result.risks}
    assert got == {
        "GPU hardware failure": (3.6, "medium"),
        "inference network outage": (0.8, "low"),
        "inference performance decline": (3.96, "medium"),
        "model accuracy drift": (0.72, "low"),
    }
    assert result.composite == pytest.approx(9.08)
    assert result.overall_level == "medium"


def test_risk_bands_edges() -> None:
    high = RiskEntry(name="x", probability=5, impact=3, weight=1.0, gpu_factor=1.0)
    low = RiskEntry(name="y", probability=2, impact=3, weight=1.0, gpu_factor=1.0)
    assert assess(POLICY.risk, [high]).risks[0].level == "high"  # 15 is high
    assert assess(POLICY.risk, [low]).risks[0].level == "low"  # 6 is low
    with pytest.raises(ValueError, match="gpu_factor 1.5 outside"):
        assess(POLICY.risk, [RiskEntry(name="z", probability=1, impact=1, weight=1, gpu_factor=1.5)])


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


def test_rollout_risk_actions() -> None:
    base = Observation(p99_ms=40, throughput_rps=100, error_rate=0.0, utilisation=0.5)
    assert evaluate(base, base, POLICY.rollout_risk) == []
    slow = Observation(p99_ms=60, throughput_rps=100, error_rate=0.0, utilisation=0.5)
    assert [a.action for a in evaluate(base, slow, POLICY.rollout_risk)] == ["rollback"]
    almost = Observation(p99_ms=59.9, throughput_rps=100, error_rate=0.0, utilisation=0.5)
    assert evaluate(base, almost, POLICY.rollout_risk) == []
    bad = Observation(p99_ms=40, throughput_rps=45, error_rate=0.02, utilisation=0.95)
    assert [a.action for a in evaluate(base, bad, POLICY.rollout_risk)] == ["rollback", "alert_and_freeze", "scale_out"]


def test_gate_verdict() -> None:
    gate = POLICY.rollout_gate
    ok = [ItemResult(n, 1.0) for n in gate.items]
    verdict = decide(ok, gate)
    assert verdict.passed and verdict.weighted_score == pytest.approx(1.0)
    checks = [{"check": "p99", "passed": True}, {"check": "rate", "passed": False, "reason": "p99 140 ms > 100 ms"}]
    assert share_passed(checks) == 0.5
    partial = [ItemResult(n, 1.0) for n in gate.items if n != "performance"] + [
        ItemResult("performance", share_passed(checks), checks)
    ]
    failed = decide(partial, gate)
    assert not failed.passed
    assert failed.weighted_score == pytest.approx(1 - 0.35 * 0.5)
    assert "p99 140 ms > 100 ms" in render_markdown(failed)
    with pytest.raises(ValueError, match="not measured: security"):
        decide([r for r in ok if r.item != "security"], gate)
