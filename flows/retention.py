"""History retention (seed 7.3.7) as one flow: plan which MLflow runs outlived their class's retention, purge them
(unless a dry run), publish the plan as a markdown artifact, and record what a purge deleted."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from tasks.policy import default_policy
from tasks.records import names, retention, runs

REPORT_KEY = names.artifact_key("history-retention")


@task(name="plan-retention")
def plan_retention(days: dict[str, int | None], now: datetime | None) -> retention.RetentionPlan:
    """Every run of every experiment, sorted into expired (deleted or kept, with why), within retention, unclassified."""
    return retention.build_plan(days, now)


@task(name="purge-expired-runs")
def purge_runs(plan: retention.RetentionPlan) -> retention.PurgeResult:
    """Delete each expired run's artifacts, then the run; failures are reported, the others go on."""
    return retention.purge(plan, strict=False)


@task(name="publish-retention-report")
def publish_report(plan: retention.RetentionPlan, result: retention.PurgeResult | None) -> None:
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown=retention.render_markdown(plan, result),
        description=retention.summary(plan, result),
    )


@task(name="record-purge")
def record_purge(plan: retention.RetentionPlan, result: retention.PurgeResult) -> str:
    """The purge's own MLflow run (an implementation log, kept a year): the audit trail of what was deleted."""
    return runs.log_run(retention.purge_record(plan, result))


@flow(name="history-retention", log_prints=True)
def history_retention(dry_run: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Purge the runs whose retention class (policy history_retention_days) has passed; `dry_run` only lists them.

    Never deleted: runs behind an existing model version (champion, previous-champion, challenger), runs still
    running, runs without a class. `now` (default: the clock) is the moment ages are measured from. A run that
    cannot be deleted fails the flow run at the end, after the others are purged and the report is published."""
    plan = plan_retention(dict(default_policy().history_retention_days), now)
    result = None if dry_run else purge_runs(plan)
    publish_report(plan, result)
    # Only a purge that deleted (or tried to) is recorded: an empty week leaves no run behind.
    run_id = record_purge(plan, result) if result is not None and result.plan.delete else None
    print(retention.summary(plan, result))
    if result is not None:
        retention.check(result)
    return retention.outcome(plan, result, run_id)


if __name__ == "__main__":
    print(json.dumps(history_retention(dry_run=True), indent=2, default=str))
