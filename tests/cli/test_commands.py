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
