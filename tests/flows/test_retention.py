"""The history-retention flow on a small store of its own: a dry run publishes the plan and deletes nothing; the
applied run deletes the expired runs, publishes what it did, and records itself as an implementation log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.records import names
from tests.tasks.records.test_retention import DAYS, NOW, populate
from tests.tasks.records.test_retention import store as store  # noqa: F401 - the fixture, reused


@pytest.fixture
def small_store(store: str) -> Iterator[tuple[MlflowClient, dict[str, str], set[str]]]:  # noqa: F811
    client = MlflowClient(store)
    s = populate(client)
    yield client, s.ids, {s.ids[n] for n in s.expired}


def test_dry_run_then_apply(prefect_harness: None, small_store: tuple, tmp_path: Path) -> None:
    from prefect.artifacts import Artifact

    from flows.retention import REPORT_KEY, history_retention

    client, ids, expired = small_store
    dry = history_retention(dry_run=True, now=NOW)
    assert dry["dry_run"] and dry["mlflow_run_id"] is None
    assert {e["run_id"] for c in dry["plan"]["classes"] for e in c["delete"]} == expired
    assert all(client.get_run(i).info.lifecycle_stage == "active" for i in ids.values())
    artifact = Artifact.get(REPORT_KEY)
    assert artifact is not None and "would be deleted" in str(artifact.data)

    applied = history_retention(dry_run=False, now=NOW)
    assert {e["run_id"] for e in applied["result"]["deleted"]} == expired and not applied["result"]["failed"]
    left = {r.info.run_id for r in client.search_runs([e.experiment_id for e in client.search_experiments()])}
    assert not expired & left and set(ids.values()) - expired <= left
    artifact = Artifact.get(REPORT_KEY)
    assert artifact is not None and "4 of 4 expired runs deleted" in str(artifact.data)
    # the purge's own record: an implementation log, so it is purged in its turn a year later
    record = client.get_run(applied["mlflow_run_id"])
    assert record.data.tags[names.TAG_RETENTION_CLASS] == names.IMPLEMENTATION_LOGS
    assert client.get_experiment(record.info.experiment_id).name == names.RETENTION_EXPERIMENT
    # NOW is years after the record was written: the next purge deletes it, as it will a year after a real purge
    assert DAYS[names.IMPLEMENTATION_LOGS] is not None
    again = history_retention(dry_run=False, now=NOW)
    assert [e["run_id"] for e in again["result"]["deleted"]] == [applied["mlflow_run_id"]]
