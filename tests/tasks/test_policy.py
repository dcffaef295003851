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
    serving = policy.serving
    assert (serving.max_batch_size, serving.batch_wait_timeout_s, serving.max_ongoing_requests) == (
        16,
        0.005,
        64,
    )
    assert (serving.intra_op_threads, serving.call_overhead_tokens) == (1, 64)
    cap = policy.capacity
    assert (cap.plan_scenario, cap.plan_confidence, cap.zero_outage_min_expected_requests) == (
        "peak_load",
        0.95,
        10.0,
    )
    assert (cap.backtest_folds, cap.backtest_horizon_days, cap.backtest_min_train_days) == (6, 2.0, 5.0)
    assert cap.backtest_step_days == 1.0
    assert (cap.ensemble_size, cap.burst_quantile, cap.replay_holdout_days) == (2, 0.99, 2.0)
    gate = policy.rollout_gate
    assert (gate.approval_timeout_s, gate.risk_window_s, gate.performance_warmup_s) == (86400, 60.0, 2.0)
    stress = policy.test_suite.stress
    assert (stress.max_steps, stress.time_budget_s, stress.bisect_steps) == (16, 600.0, 4)
    assert policy.test_suite.stability.leak_min_growth_mb == 16.0


def test_override_is_deep_merged(tmp_path: Path) -> None:
    override = tmp_path / "policy.yaml"
    override.write_text("rollout_gate:\n  sla_p99_ms: 50\n", encoding="utf-8")
    policy = load_policy(override)
    assert policy.rollout_gate.sla_p99_ms == 50
    assert policy.rollout_gate.items["security"].minimum == 1.0  # untouched keys keep their defaults


def test_the_edge_loads_the_policy_file_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """INFEROPS_POLICY_FILE set after import still applies: the edge loads the policy when it runs and passes it
    down, and the serving app gets the policy's serving values as its arguments."""
    import pandas as pd

    from serving.app import AppArgs
    from tasks.capacity import forecasting as fc
    from tasks.policy import default_policy

    override = tmp_path / "policy.yaml"
    override.write_text(
        "serving: {max_batch_size: 3, batch_wait_timeout_s: 0.02, max_ongoing_requests: 7, intra_op_threads: 2}\n"
        "capacity: {backtest_min_train_days: 1.0}\n",
        encoding="utf-8",
    )
    series = pd.Series(1.0, index=pd.date_range("2024-01-01", periods=10 * 24, freq="1h"))  # 10 days
    # six 2-day folds a day apart leave 10 - 2 - 5 = 3 < 5 days to fit on; four leave 5
    assert fc.fold_count(series, 6, 2.0, default_policy().capacity) == 4
    assert AppArgs.model_validate(default_policy().app_args()).max_batch_size == 16
    monkeypatch.setenv("INFEROPS_POLICY_FILE", str(override))
    default_policy.cache_clear()
    try:
        args = AppArgs.model_validate(default_policy().app_args(model="digits-cnn"))
        assert (args.max_batch_size, args.batch_wait_timeout_s, args.max_ongoing_requests) == (3, 0.02, 7)
        # untouched keys keep defaults
        assert args.intra_op_threads == 2 and args.bucket_overhead_tokens == 64
        # what every replica's user_config gets
        assert args.batching().max_batch_size == 3 and args.model == "digits-cnn"
        # explicit wins
        assert AppArgs.model_validate(default_policy().app_args(max_batch_size=5)).max_batch_size == 5
        assert fc.fold_count(series, 6, 2.0, default_policy().capacity) == 6  # 3 >= 1 day of training
        assert default_policy().capacity.backtest_min_train_days == 1.0
    finally:
        monkeypatch.delenv("INFEROPS_POLICY_FILE")
        default_policy.cache_clear()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("capacity:\n  plan_confidence: 0.85\n", "not in confidence_levels"),
        ("serving:\n  max_batch_size: 0\n", "serving.max_batch_size"),
        ("test_suite:\n  stress: {cadence: monthly, max_steps: 0}\n", "test_suite.stress.max_steps"),
        ("optimization:\n  accuracy_retention_threshold: 0.9\n", "looser than the floor"),
        ("optimization:\n  accuracy_retention_floor: 0.5\n", "seed's constant 0.95, not a policy key"),
        ("rollout_gate:\n  sla_p99_ms: -5\n", "rollout_gate.sla_p99_ms"),
        ("rollout_risk:\n  confirm_windows: -1\n", "rollout_risk.confirm_windows"),
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
