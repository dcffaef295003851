"""`inferops capacity plan`: forecast a history and print the capacity plan table."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Quarterly capacity planning from a request-rate history.")


@app.command("plan")
def plan(
    history: Path = typer.Option(..., "--history", help="CSV/Parquet of timestamps and request rates (or one row per request)."),
    knee_rps: float | None = typer.Option(None, "--knee-rps", help="Sustainable req/s per replica at the SLA; default: the champion's stress knee in MLflow."),
    model: str = typer.Option("minilm", "--model", help="Model whose stress knee and ONNX graph size the plan."),
    onnx_path: Path | None = typer.Option(None, "--onnx", help="ONNX graph for the per-GPU estimates (default: the model's onnx-fp32 variant)."),
    holdout_days: float | None = typer.Option(None, "--holdout-days", help="Tail held out of the fit and replayed against the plan (default: policy capacity.replay_holdout_days)."),
) -> None:
    """Validate the history, forecast it, and print units and monthly cost per scenario and option."""
    from rich.console import Console
    from rich.table import Table

    from tasks.capacity import data_quality as dq
    from tasks.capacity import forecasting as fc
    from tasks.capacity import plan as cap
    from tasks.capacity.history import HistoryError, load_file
    from tasks.policy import default_policy

    # Piped output gets a wide console so the plan table is not truncated.
    console = Console(width=None if sys.stdout.isatty() else 160)
    policy = default_policy()
    holdout_days = holdout_days if holdout_days is not None else policy.capacity.replay_holdout_days
    try:
        raw = load_file(history)
    except HistoryError as exc:
        report = dq.failed_load_report(str(history), exc)
        console.print(f"[red]error:[/red] {exc}\nvalidation report: {report.report_path}")
        raise typer.Exit(2) from None
    report = dq.validate_history(raw)
    try:
        series = dq.prepare_series(raw, report)
        knee = cap.KneeReading(model, knee_rps, "--knee-rps") if knee_rps is not None else cap.champion_knee(model)
    except (dq.DataQualityError, cap.KneeNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    n_hold = int(round(holdout_days * 86400 / (series.index[1] - series.index[0]).total_seconds()))
    fit, holdout = (series.iloc[:-n_hold], series.iloc[-n_hold:]) if n_hold else (series, series.iloc[:0])
    planning = fc.planning_forecast(fit, fc.future_index(fit, holdout_days + policy.capacity.horizon_days))
    trends = fc.analyse_trends(fit, planning.forecast)
    options = [cap.replica_option(knee)]
    path: str | None = str(onnx_path) if onnx_path else None
    if path is None:
        try:
            from serving.variants import ensure_variant

            path = str(ensure_variant(model, "onnx-fp32").path)
        except Exception as exc:  # GPU estimates are optional
            console.print(f"[yellow]no GPU estimates:[/yellow] {exc}")
    if path:
        options += cap.gpu_options(cap.onnx_cost(path))
    plans = cap.expansion_plans(cap.build_scenarios(planning.forecast, trends.burstiness), options)
    strategy = cap.choose_strategy(trends.observed_growth, trends.volatility)
    rec = cap.recommend(plans, options, strategy, cap.current_units(fit, options))

    table = Table(title=f"capacity plan: {history.name} (validation {report.verdict})")
    for col in ("scenario", "confidence", "demand req/s", "option", "label", "req/s per unit", "units", "$/month"):
        table.add_column(col)
    for r in plans:
        table.add_row(r.scenario, f"{r.level:g}", f"{r.demand_rps:,.1f}", r.option, r.label, f"{r.unit_rps:,.1f}", str(r.units), f"{r.monthly_cost:,.0f}")
    console.print(table)
    console.print(f"forecaster: {planning.backtest.reason}")
    console.print(f"strategy: {strategy.reason}")
    console.print(f"recommendation: {rec.reason}")
    console.print(f"ray serve autoscaling: {cap.autoscaling_config(rec, planning.forecast, policy.rollout_gate.sla_p99_ms).ray_config()}")
    if holdout.notna().any():
        price = next(o.price_per_hour for o in options if o.name == rec.option)
        console.print(f"replay: {cap.replay_check(holdout, rec, price).reason}")
