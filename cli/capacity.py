"""`inferops capacity plan`: forecast a history and print the capacity plan table."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from tasks.policy import default_policy

app = typer.Typer(no_args_is_help=True, help="Quarterly capacity planning from a request-rate history.")


@app.command("plan")
def plan(
    history: Path = typer.Option(
        ..., "--history", help="CSV/Parquet of timestamps and request rates (or one row per request)."
    ),
    knee_rps: float | None = typer.Option(
        None,
        "--knee-rps",
        help="Sustainable req/s per replica at the SLA; default: the champion's stress knee in MLflow.",
    ),
    model: str = typer.Option(
        "minilm", "--model", help="Model whose stress knee and ONNX graph size the plan."
    ),
    onnx_path: Path | None = typer.Option(
        None, "--onnx", help="ONNX graph for the per-GPU estimates (default: the model's onnx-fp32 variant)."
    ),
    holdout_days: float | None = typer.Option(
        None,
        "--holdout-days",
        help="Tail held out of the fit and replayed against the plan (default: policy capacity.replay_holdout_days).",
    ),
    time_column: str | None = typer.Option(
        None, "--time-column", help="The file's time column (default: timestamp, ts, time, ds, ... by name)."
    ),
    value_column: str | None = typer.Option(
        None,
        "--value-column",
        help="The file's request-rate column (default: rate_rps, rps, qps, value, ... by name; none: one row "
        "per request, counted per window).",
    ),
    time_unit: str = typer.Option(
        "auto",
        "--time-unit",
        help="auto | offset-s (seconds from the start) | s | ms | us | ns (epoch) | iso (date text).",
    ),
    filters: list[str] = typer.Option(
        [], "--filter", help="COL=VALUE: keep only these rows (repeat for several columns)."
    ),
    combine: str = typer.Option(
        "sum",
        "--combine",
        help="sum | mean | max: rows sharing a timestamp (per-container traces) become one.",
    ),
    apply: bool = typer.Option(
        False, "--apply", help="Apply the plan's Ray Serve autoscaling to the live deployment at --url."
    ),
    url: str | None = typer.Option(None, "--url", help="The endpoint whose deployment --apply changes."),
    admin_key: str | None = typer.Option(
        None, "--admin-key", help="Admin key for --apply (default: the first of INFEROPS_ADMIN_KEYS)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="print the plan as JSON (for scripts) instead of tables"
    ),
) -> None:
    """Validate the history, forecast it, and print units and monthly cost per scenario and option."""
    # Lazy: the capacity model pulls in pandas and MLflow, which `inferops --help` should not wait for.
    from cli.render import console as make_console
    from cli.render import print_json, print_plan
    from serving.auth import client_admin_key
    from serving.client import EndpointError
    from tasks.capacity import autoscaling as autoscale
    from tasks.capacity import data_quality as dq
    from tasks.capacity import forecasting as fc
    from tasks.capacity import plan as cap
    from tasks.capacity.history import ColumnMapping, HistoryError, load_file

    started = time.perf_counter()
    console = make_console()
    policy = default_policy()
    if apply and not url:
        console.print("[red]error:[/red] --apply needs --url (the endpoint whose deployment is autoscaled)")
        raise typer.Exit(2)
    try:
        mapping = ColumnMapping.from_dict(
            {
                "time_column": time_column,
                "value_column": value_column,
                "time_unit": time_unit,
                "filters": ColumnMapping.parse_filters(filters),
                "combine": combine,
            }
        )
        raw = load_file(history, mapping)
    except HistoryError as exc:
        report = dq.failed_load_report(str(history), exc, policy.capacity)
        console.print(f"[red]error:[/red] {exc}\nvalidation report: {report.report_path}")
        raise typer.Exit(2) from None
    report = dq.validate_history(raw, policy.capacity)
    try:
        series = dq.prepare_series(raw, report, policy.capacity)
        knee, options, note = cap.capacity_options(
            model,
            knee_rps,
            str(onnx_path) if onnx_path else None,
            policy.optimization.hardware_cost_per_hour,
            policy.capacity,
            knee_source="--knee-rps",
            max_batch=policy.serving.max_batch_size,
        )
    except (dq.DataQualityError, cap.KneeNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if note:
        console.print(note)
    analysis = fc.analyse_history(series, policy.capacity, holdout_days)
    scenarios = cap.build_scenarios(analysis.planning.forecast, analysis.trends.burstiness, policy.capacity)
    plans = cap.expansion_plans(scenarios, options, policy.capacity)
    decision = cap.decide(analysis, options, plans, policy.capacity, policy.rollout_gate.sla_p99_ms)

    result = cap.plan_output(report, analysis, decision, "", cap.plan_table(plans), started)
    try:
        published = autoscale.publish_autoscaling(
            model, decision.autoscaling, url if apply else None, client_admin_key(admin_key)
        )
    except EndpointError as exc:
        console.print(f"[red]error:[/red] the autoscaling was not applied: {exc}")
        raise typer.Exit(2) from None
    result |= autoscale.output(published)
    if as_json:
        print_json(result)
    else:
        print_plan(result, console)
        console.print(published.sentence())
