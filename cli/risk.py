"""`inferops risk`: assess the register's risks on live evidence (the risk-assessment flow), or show the latest."""

from __future__ import annotations

import typer

app = typer.Typer(
    no_args_is_help=True, help="Risk assessment: live probabilities, the seed's matrix, incidents."
)


@app.command("assess")
def assess(
    model: str = typer.Option("minilm", help="the model whose risks are assessed"),
    url: str | None = typer.Option(None, help="the live endpoint to probe (error rate, P99)"),
    api_key: str | None = typer.Option(None, help="its inference key (default: the first the server reads)"),
    prometheus: str | None = typer.Option(None, help="Prometheus: alert history, served traffic, fidelity"),
    alertmanager: str | None = typer.Option(None, help="Alertmanager: where a risk at high is notified"),
    json_out: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Run the risk-assessment flow once: a risk at high opens an incident (see `inferops incident list`)."""
    from cli.render import print_json, print_risk
    from flows.risk_assessment import risk_assessment

    try:
        out = risk_assessment(
            model=model, url=url, api_key=api_key, prometheus=prometheus, alertmanager=alertmanager
        )
    except ValueError as exc:
        from cli.render import console

        console().print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if json_out:
        print_json(out)
    else:
        print_risk(out)


@app.command("show")
def show(model: str = typer.Option("minilm")) -> None:
    """The latest recorded assessment of a model, as its table."""
    from cli.render import console, render_table
    from tasks.risk.tracking import latest_assessment

    latest = latest_assessment(model)
    if latest is None:
        console().print(f"no risk assessment of {model} yet: run `inferops risk assess --model {model}`")
        raise typer.Exit(1)
    rows = [
        {k: r[k] for k in ("name", "probability", "impact", "weight", "gpu_factor", "matrix_score", "level")}
        | {"probability from": r["probability_source"]}
        for r in latest.assessment.get("risks", [])
    ]
    console().print(
        render_table(
            f"{model}: risk assessment {latest.run_id[:8]}, {latest.age_days():.1f} d old, overall "
            f"{latest.overall_level}",
            rows,
            wrap=frozenset({"probability from"}),
        )
    )
