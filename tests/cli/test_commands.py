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
