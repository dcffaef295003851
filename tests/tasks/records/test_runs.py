"""MLflow runs written from plain records: what a cancelled or crashed flow run left RUNNING is ended."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from prefect import flow

from tasks.records.names import OPTIMIZATION_EXPERIMENT
from tasks.records.runs import RunRecord, end_open_runs, log_run


@flow
def _writes_two_runs(name: str) -> tuple[str, str, str]:
    """A flow run that opens a parent run (left RUNNING, as a cycle's is until its report) and finishes a child."""
    from prefect.runtime import flow_run

    parent = log_run(RunRecord(name, OPTIMIZATION_EXPERIMENT), finish=False)
    child = log_run(RunRecord(f"{name}-child", OPTIMIZATION_EXPERIMENT), parent_run_id=parent)
    return str(flow_run.id), parent, child


@pytest.mark.usefixtures("prefect_harness")
def test_a_cancelled_flow_runs_open_runs_end_killed_and_nothing_else_changes() -> None:
    cancelled, parent, child = _writes_two_runs("cancelled-cycle")
    _, other_parent, _ = _writes_two_runs("another-cycle")  # another flow run's open run is not this one's
    assert end_open_runs(cancelled) == [parent]
    client = MlflowClient()
    assert client.get_run(parent).info.status == "KILLED"
    assert client.get_run(child).info.status == "FINISHED"
    assert client.get_run(other_parent).info.status == "RUNNING"
    assert end_open_runs(cancelled) == []  # nothing left open: a second call ends nothing
    assert end_open_runs("no-such-flow-run") == []
