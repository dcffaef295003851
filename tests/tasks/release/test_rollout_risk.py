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


def test_an_action_waits_for_its_breach_to_hold_through_the_next_window() -> None:
    """One noisy window is not a regression: the trigger needs `confirm_windows` more that breach it too."""
    from tasks.release.rollout_risk import confirmed, needs_another_window

    risk = POLICY.rollout_risk
    assert risk.confirm_windows == 1
    base = Observation(p99_ms=4, throughput_rps=20, error_rate=0.0, utilisation=0.3)
    noisy = Observation(p99_ms=9, throughput_rps=20, error_rate=0.0, utilisation=0.3)
    slow = Observation(p99_ms=40, throughput_rps=20, error_rate=0.0, utilisation=0.3)
    assert not needs_another_window(base, [base], risk)  # a clean first window ends the watch
    assert needs_another_window(base, [noisy], risk)  # a breach asks for one more window ...
    assert confirmed(base, [noisy, base], risk) == []  # ... which clears it
    held = confirmed(base, [noisy, slow], risk)  # ... or confirms it, reported with the latest figures
    assert [a.action for a in held] == ["rollback"] and held[0].observed == 9.0
    assert not needs_another_window(base, [noisy, slow], risk)  # one confirmation is all the policy asks
    # a different trigger in each window is no confirmation of either
    erring = Observation(p99_ms=4, throughput_rps=20, error_rate=0.05, utilisation=0.3)
    assert confirmed(base, [noisy, erring], risk) == []
    eager = risk.model_copy(update={"confirm_windows": 0})
    assert not needs_another_window(base, [noisy], eager)
    assert [a.action for a in confirmed(base, [noisy], eager)] == ["rollback"]
