"""`inferops capacity plan`: forecast a history and print the capacity plan table."""

from __future__ import annotations

import sys
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
) -> None:
    """Validate the history, forecast it, and print units and monthly cost per scenario and option."""
    # Lazy: the capacity model pulls in pandas and MLflow, which `inferops --help` should not wait for.
    from rich.console import Console
    from rich.table import Table

    from tasks.capacity import data_quality as dq
    from tasks.capacity import forecasting as fc
    from tasks.capacity import plan as cap
    from tasks.capacity.history import HistoryError, load_file

    # Piped output gets a wide console so the plan table is not truncated.
    console = Console(width=None if sys.stdout.isatty() else 160)
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

    table = Table(title=f"capacity plan: {history.name} (validation {report.verdict})")
    for col in (
        "scenario",
        "confidence",
        "demand req/s",
        "option",
        "label",
        "req/s per unit",
        "units",
        "$/month",
    ):
        table.add_column(col)
    for r in plans:
        table.add_row(
            r.scenario,
            f"{r.level:g}",
            f"{r.demand_rps:,.1f}",
            r.option,
            r.label,
            f"{r.unit_rps:,.1f}",
            str(r.units),
            f"{r.monthly_cost:,.0f}",
        )
    console.print(table)
    console.print(f"forecaster: {analysis.planning.backtest.reason}")
    console.print(f"strategy: {decision.strategy.reason}")
    console.print(f"recommendation: {decision.recommendation.reason}")
    console.print(f"ray serve autoscaling: {decision.autoscaling.ray_config()}")
    if decision.replay is not None:
        console.print(f"replay: {decision.replay.reason}")
