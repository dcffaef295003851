"""`inferops records retention`: which MLflow runs outlived their retention (seed 7.3.7), and their purge."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from cli.pipelines import JSON

if TYPE_CHECKING:
    from rich.console import Console

    from tasks.records.retention import PurgeResult, RetentionPlan

app = typer.Typer(no_args_is_help=True, help="The MLflow records inferops keeps: history retention.")


def print_retention(plan: RetentionPlan, result: PurgeResult | None, to: Console | None = None) -> None:
    """The classes as a table, every run the plan names as another, and the sentence that sums them up."""
    from cli.render import console, render_table
    from tasks.records import retention

    view = to or console()
    title = "history retention: " + ("dry run" if result is None else "purge")
    view.print(render_table(f"{title} (policy history_retention_days)", retention.class_rows(plan, result)))
    rows = [
        {k: v for k, v in r.items() if k != "run"} | {"run": r["run"]}
        for r in retention.run_rows(plan, result)
    ]
    if rows:
        view.print(render_table("runs expired, kept back or unclassified", rows, wrap=frozenset({"reason"})))
    view.print(retention.summary(plan, result), highlight=False)
    if result is not None and result.store_note:
        view.print(f"note: {result.store_note}", highlight=False)
    if result is None and plan.delete:
        view.print("run again with --apply to delete them", highlight=False)


@app.command("retention")
def retention_command(
    apply: bool = typer.Option(
        False,
        "--apply/--dry-run",
        help="delete the expired runs for good (default: a dry run that lists them and deletes nothing)",
    ),
    now: datetime | None = typer.Option(
        None, "--now", help="measure ages from this moment, UTC (default: now), e.g. 2027-01-01T00:00:00"
    ),
    as_json: bool = JSON,
) -> None:
    """List the runs whose retention class has passed and, with --apply, delete their artifacts and the runs."""
    from datetime import UTC

    from cli.render import console, print_json
    from tasks.policy import default_policy
    from tasks.records import retention, runs

    view = console()
    plan = retention.build_plan(
        dict(default_policy().history_retention_days), now.replace(tzinfo=now.tzinfo or UTC) if now else None
    )
    result = retention.purge(plan, strict=False) if apply else None
    run_id = runs.log_run(retention.purge_record(plan, result)) if result and plan.delete else None
    out: dict[str, Any] = retention.outcome(plan, result, run_id)
    if as_json:
        print_json(out)
    else:
        print_retention(plan, result, view)
    if result is not None and result.failed:
        if not as_json:
            view.print(f"[red]error:[/red] {retention.PurgeError(result)}", highlight=False)
        raise typer.Exit(1)
