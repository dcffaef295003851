"""Risk assessment (seed 7.6): the seed's worked example to the digit, and the matrix bands."""

from __future__ import annotations

import pytest

from tasks.policy import RiskEntry, load_policy
from tasks.risk.assessment import assess

POLICY = load_policy()


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
