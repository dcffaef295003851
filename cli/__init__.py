"""The `inferops` command line. Each command group lives in its own module and imports heavy libraries lazily."""

from __future__ import annotations

import typer

from cli import alerts, bench, capacity, demo, incident, pipelines, records, risk, serve, status, variants

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="inferops: measure, optimize, gate and plan inference services.",
)
app.add_typer(bench.app, name="bench")
app.add_typer(capacity.app, name="capacity")
app.add_typer(records.app, name="records")
app.add_typer(alerts.app, name="alerts")
app.add_typer(incident.app, name="incident")
app.add_typer(risk.app, name="risk")
app.command("variants")(variants.variants)
app.command("serve")(serve.serve)
app.command("optimize")(pipelines.optimize)
app.command("gate")(pipelines.gate)
app.command("rollback")(pipelines.rollback)
app.command("demo")(demo.demo)
app.command("status")(status.status)


def main() -> None:
    app()
