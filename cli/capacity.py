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
    as_json: bool = typer.Option(
        False, "--json", help="print the plan as JSON (for scripts) instead of tables"
    ),
) -> None:
    """Validate the history, forecast it, and print units and monthly cost per scenario and option."""
    # Lazy: the capacity model pulls in pandas and MLflow, which `inferops --help` should not wait for.
    from cli.render import console as make_console
    from cli.render import print_json, print_plan
    from tasks.capacity import data_quality as dq
    from tasks.capacity import forecasting as fc
    from tasks.capacity import plan as cap
    from tasks.capacity.history import HistoryError, load_file

    started = time.perf_counter()
    console = make_console()
    policy = default_policy()
    try:
        raw = load_file(history)
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
    if as_json:
        print_json(result)
    else:
        print_plan(result, console)
