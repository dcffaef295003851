"""`inferops records retention`: a dry run by default (a person typing it), --apply deletes, failures exit non-zero."""

from __future__ import annotations

import json
from datetime import timedelta

from mlflow import MlflowClient
from typer.testing import CliRunner

from tasks.records import names
from tests.console_text import raw_lines
from tests.tasks.records.test_retention import NOW, populate
from tests.tasks.records.test_retention import store as store  # noqa: F401 - the fixture, reused

AT = ["--now", NOW.strftime("%Y-%m-%dT%H:%M:%S")]


def test_retention_is_a_dry_run_unless_applied(store: str) -> None:  # noqa: F811
    from cli import app

    client = MlflowClient(store)
    s = populate(client)
    expired = {s.ids[n] for n in s.expired}

    shown = CliRunner().invoke(app, ["records", "retention", *AT])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "Dry run at 2030-01-01 00:00 UTC: 4 runs outlived their retention and would be deleted" in text
    assert "run again with --apply" in text and "backs model version retention-model v2" in text
    assert "3 expired runs kept: 2 behind a registered model version, 1 still running" in text
    assert "optimization_plans are kept permanently" in text
    assert not raw_lines(shown.output), raw_lines(shown.output)
    assert all(client.get_run(i).info.lifecycle_stage == "active" for i in s.ids.values())

    applied = CliRunner().invoke(app, ["records", "retention", "--apply", "--json", *AT])
    assert applied.exit_code == 0, applied.output
    out = json.loads(applied.output)
    assert {e["run_id"] for e in out["result"]["deleted"]} == expired
    left = {r.info.run_id for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}
    assert not expired & left


def test_a_run_that_cannot_be_deleted_exits_non_zero_naming_it(store: str) -> None:  # noqa: F811
    from cli import app

    client = MlflowClient(store)
    broken = client.create_experiment("retention-cli-broken", artifact_location="nowhere://bucket/y")
    start = int((NOW - timedelta(days=400)).timestamp() * 1000)
    bad = client.create_run(
        broken, start_time=start, tags={names.TAG_RETENTION_CLASS: names.IMPLEMENTATION_LOGS}, run_name="bad"
    ).info.run_id
    client.set_terminated(bad, "FINISHED", end_time=start + 1)
    result = CliRunner().invoke(app, ["records", "retention", "--apply", *AT])
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert bad in text and "could not be deleted" in text and "run the purge again" in text
