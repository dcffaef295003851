"""Risk assessment (seed 7.6): the seed's worked example to the digit, and the matrix bands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tasks.policy import PolicyError, RiskEntry, load_policy
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


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        (
            {"category": "technical/quantum"},
            "risk 'GPU hardware failure': category 'technical/quantum' is not one of",
        ),
        ({"probability": 6}, "risk.risk_register.0.probability"),
        ({"impact": 0}, "risk.risk_register.0.impact"),
        ({"gpu_factor": 1.3}, "risk 'GPU hardware failure': gpu_factor 1.3 outside [0.8, 1.2]"),
    ],
)
def test_a_bad_register_entry_is_refused_naming_the_risk_or_field(
    tmp_path: Path, entry: dict, named: str
) -> None:
    base = {"name": "GPU hardware failure", "probability": 2, "impact": 5, "weight": 0.3, "gpu_factor": 1.2}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"risk": {"risk_register": [{**base, **entry}]}}))
    with pytest.raises(PolicyError, match=re.escape(named)):
        load_policy(path)


def test_weights_that_sum_to_nothing_and_unknown_alert_levels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    zero = {"name": "x", "probability": 1, "impact": 1, "weight": 0.0, "gpu_factor": 1.0}
    path.write_text(yaml.safe_dump({"risk": {"risk_register": [zero]}}))
    with pytest.raises(PolicyError, match="weights sum to 0"):
        load_policy(path)
    path.write_text(yaml.safe_dump({"risk": {"alert_levels": {"critical": "L7"}}}))
    with pytest.raises(PolicyError, match="alert_levels maps critical to 'L7', not a response level"):
        load_policy(path)
