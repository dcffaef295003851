"""The policy file: defaults equal SPEC.md, overrides merge, bad files fail with file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.policy import PolicyError, load_policy


def test_defaults_match_spec() -> None:
    policy = load_policy()
    gate = policy.rollout_gate.items
    assert {k: (v.weight, v.minimum) for k, v in gate.items()} == {
        "functional": (0.35, 1.0),
        "performance": (0.35, 0.95),
        "stability": (0.20, 0.995),
        "security": (0.10, 1.0),
    }
    assert policy.rollout_gate.sla_p99_ms == 100.0
    assert policy.rollout_risk.perf_deviation_rollback == 0.5
    assert policy.rollout_risk.error_rate_alert == 0.01
    assert policy.rollout_risk.utilisation_scale_out == 0.9
    matrix = policy.optimization.decision_matrix
    assert matrix["performance_gain"].weight == 0.35 and matrix["performance_gain"].threshold == 7
    assert matrix["technical_risk"].direction == "below" and matrix["technical_risk"].threshold == 6
    assert policy.optimization.accuracy_retention_threshold == 0.99
    assert policy.capacity.confidence_levels == [0.8, 0.9, 0.95]
    assert set(policy.capacity.gpu_catalog) == {"V100", "A100", "H100"}
    assert policy.endpoint.max_body_bytes == 8 * 1024 * 1024 and policy.endpoint.max_items == 2048


def test_override_is_deep_merged(tmp_path: Path) -> None:
    override = tmp_path / "policy.yaml"
    override.write_text("rollout_gate:\n  sla_p99_ms: 50\n", encoding="utf-8")
    policy = load_policy(override)
    assert policy.rollout_gate.sla_p99_ms == 50
    assert policy.rollout_gate.items["security"].minimum == 1.0  # untouched keys keep their defaults


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optimization:\n  accuracy_retention_threshold: 0.9\n", "looser than the floor"),
        ("rollout_gate:\n  sla_p99_ms: -5\n", "rollout_gate.sla_p99_ms"),
        ("rollout_gate:\n  items:\n    functional: {weight: 0.9, minimum: 1.0}\n", "sum to 1.0"),
        ("endpoint:\n  max_itemz: 3\n", "endpoint.max_itemz"),
        ("rollout_gate: [1, 2\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping at the top level"),
    ],
)
def test_bad_policy_names_file_key_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    bad = tmp_path / "bad-policy.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(bad)
    assert "bad-policy.yaml" in str(info.value)
    assert expected in str(info.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")
