"""The `inferops` command: every command is listed, and a bad request is a clear error with a non-zero exit."""

from __future__ import annotations

from typer.testing import CliRunner


def test_cli_lists_every_command() -> None:
    from cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("variants", "serve", "optimize", "gate", "rollback", "demo", "bench", "capacity"):
        assert command in result.output


def test_rollback_without_history_is_a_clear_error() -> None:
    from cli import app

    result = CliRunner().invoke(app, ["rollback", "--model", "never-registered"])
    assert result.exit_code == 2
    assert "cannot roll back" in result.output


def test_a_release_approval_without_a_prefect_server_is_refused_before_the_gate_runs() -> None:
    """The policy asks a person to approve releases; with no Prefect server nobody could answer the pause, so
    `inferops gate` says so and how to fix it, before measuring or changing anything."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cli import app
    from tasks.records import registry

    with temporary_settings(updates={PREFECT_API_URL: None}):
        result = CliRunner().invoke(app, ["gate", "--model", "approval-cli-model"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "rollout_gate.require_approval" in text and "no Prefect server is configured" in text
    assert "prefect server start" in text and "--no-approval" in text
    assert registry.alias_version("approval-cli-model", registry.CHAMPION) is None  # nothing was changed


def test_capacity_plan_maps_a_per_container_trace_and_refuses_a_wrong_column(
    tmp_path, tiny_onnx, monkeypatch
) -> None:
    """`inferops capacity plan` on a trace as public ones come (several rows per timestamp, epoch seconds)."""
    import numpy as np
    import pandas as pd

    from cli import app
    from tasks.policy import default_policy

    quick = tmp_path / "policy.yaml"  # the mapping is under test, not the forecasters: the cheap ones do
    quick.write_text("capacity:\n  forecasters: [mstl-daily, seasonal-naive-daily]\n", encoding="utf-8")
    monkeypatch.setenv("INFEROPS_POLICY_FILE", str(quick))
    default_policy.cache_clear()

    stamps = pd.date_range("2025-03-03", periods=16 * 144, freq="600s")
    epoch = (stamps - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    daily = 20 + 10 * np.sin(np.arange(len(stamps)) * 2 * np.pi / 144)
    rows = [
        pd.DataFrame({"timestamp_anon": epoch, "value": daily * (k + 1), "container_ip": f"10.0.0.{k}"})
        for k in range(3)
    ]
    path = tmp_path / "containers.csv"
    pd.concat(rows).to_csv(path, index=False)
    base = ["capacity", "plan", "--history", str(path), "--knee-rps", "50", "--onnx", str(tiny_onnx)]
    refused = CliRunner().invoke(app, [*base, "--time-column", "stamp"])
    assert refused.exit_code == 2 and "time column 'stamp'" in " ".join(refused.output.split())
    mapped = ["--time-column", "timestamp_anon", "--value-column", "value", "--time-unit", "s"]
    result = CliRunner().invoke(app, [*base, *mapped, "--combine", "sum", "--json"])
    assert result.exit_code == 0, result.output
    import json

    plan = json.loads(result.output[result.output.index("{") :])
    peak = next(
        r for r in plan["plan_table"] if r["scenario"] == "normal_load" and r["option"] == "current-replica"
    )
    assert peak["demand_rps"] > 2 * 30  # the three containers' rates summed (each alone peaks at 30 x k)
    assert plan["applied"] is None and plan["serve_config"].endswith("serve-autoscaling-minilm.yaml")
    monkeypatch.delenv("INFEROPS_POLICY_FILE")
    default_policy.cache_clear()
