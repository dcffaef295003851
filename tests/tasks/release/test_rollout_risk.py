"""Risk control during rollout (SPEC §2): which actions each window demands."""

from __future__ import annotations

from tasks.policy import load_policy
from tasks.release.rollout_risk import Observation, evaluate

POLICY = load_policy()


def test_rollout_risk_actions() -> None:
    base = Observation(p99_ms=40, throughput_rps=100, error_rate=0.0, utilisation=0.5)
    assert evaluate(base, base, POLICY.rollout_risk) == []
    slow = Observation(p99_ms=60, throughput_rps=100, error_rate=0.0, utilisation=0.5)
    assert [a.action for a in evaluate(base, slow, POLICY.rollout_risk)] == ["rollback"]
    almost = Observation(p99_ms=59.9, throughput_rps=100, error_rate=0.0, utilisation=0.5)
    assert evaluate(base, almost, POLICY.rollout_risk) == []
    bad = Observation(p99_ms=40, throughput_rps=45, error_rate=0.02, utilisation=0.95)
    assert [a.action for a in evaluate(base, bad, POLICY.rollout_risk)] == [
        "rollback",
        "alert_and_freeze",
        "scale_out",
    ]
