"""The gate's arithmetic: item minimums, weighted score, the reasons of a failed item."""

from __future__ import annotations

import pytest

from tasks.decision import Decision, share_passed
from tasks.policy import load_policy
from tasks.release.gate import ItemResult, decide, render_markdown

POLICY = load_policy()


def test_gate_verdict() -> None:
    gate = POLICY.rollout_gate
    ok = [ItemResult(n, 1.0) for n in gate.items]
    verdict = decide(ok, gate)
    assert verdict.passed and verdict.weighted_score == pytest.approx(1.0)
    checks = [
        Decision("p99", 100.0, 90.0, True, "p99 90 ms < 100 ms"),
        Decision("rate", 100.0, 140.0, False, "p99 140 ms > 100 ms"),
    ]
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
