"""`inferops alerts`: the Alertmanager config that notifies inferops, and the receiver that acts on it (AIOps L5)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    no_args_is_help=True, help="Alertmanager's config and the alert receiver (automatic remediation)."
)

TOKEN_HELP = (
    "the bearer token Alertmanager sends (default: the data dir's keys/alert-receiver-token, made if absent)"
)


@app.command("config")
def config(
    webhook_url: str = typer.Option(
        ..., help="the receiver's URL as Alertmanager reaches it, e.g. http://host:9095/alerts"
    ),
    token_file: Path | None = typer.Option(None, help=TOKEN_HELP),
    smtp_smarthost: str | None = typer.Option(None, help="host:port of an SMTP server: email receivers too"),
    smtp_from: str | None = typer.Option(None),
    email_to: str | None = typer.Option(None),
    credentials_path: str | None = typer.Option(
        None,
        help="the token file's path where Alertmanager runs, if not the local one (a container's secret)",
    ),
    out: Path | None = typer.Option(
        None, help="write here instead of the data dir (e.g. infra/alertmanager/)"
    ),
) -> None:
    """Write the Alertmanager config (routes per level, inhibition, the webhook to the receiver), checked by amtool."""
    from rich.console import Console

    from tasks.monitoring.alertmanager import render_alertmanager, write_alertmanager
    from tasks.monitoring.remediation import token_file as ensure_token
    from tasks.monitoring.rules import RefusedFile
    from tasks.policy import default_policy

    console = Console()
    policy = default_policy()
    path, made = (Path(credentials_path), False) if credentials_path else ensure_token(token_file)
    try:
        rendered = render_alertmanager(
            policy,
            webhook_url=webhook_url,
            bearer_token_file=path if credentials_path else path.resolve(),
            smtp_smarthost=smtp_smarthost,
            smtp_from=smtp_from,
            email_to=email_to,
        )
        written = write_alertmanager(rendered, policy, out)
    except (ValueError, RefusedFile) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if made:
        console.print(f"made the receiver's token in {path} (mode 0600)", highlight=False)
    console.print(f"wrote {written}: point Alertmanager at it (--config.file)", highlight=False)


@app.command("receive")
def receive(
    host: str = typer.Option(
        "127.0.0.1", help="address to listen on (0.0.0.0 for Alertmanager on another host)"
    ),
    port: int = typer.Option(9095),
    token_file: Path | None = typer.Option(None, help=TOKEN_HELP),
    deployment: str = typer.Option(
        "remediation/remediation-on-alert",
        help="the Prefect deployment each actionable alert starts a run of",
    ),
) -> None:
    """Serve the webhook Alertmanager notifies: each firing alert whose rule names an action (rollback, freeze,
    scale_out) starts one run of the remediation deployment on the Prefect server (PREFECT_API_URL)."""

    import logging

    import uvicorn
    from rich.console import Console

    from tasks.monitoring.receiver import ALERTS_PATH, create_receiver, deployment_starter
    from tasks.monitoring.remediation import read_tokens
    from tasks.monitoring.remediation import token_file as ensure_token
    from tasks.policy import default_policy
    from tasks.risk.incidents import IncidentStore

    console = Console()
    path, made = ensure_token(token_file)
    try:
        tokens = read_tokens(path)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if made:
        console.print(
            f"made the receiver's token in {path} (mode 0600): give Alertmanager the same file",
            highlight=False,
        )
    console.print(
        f"alert receiver on http://{host}:{port}{ALERTS_PATH} -> runs of {deployment} (token: {path})",
        highlight=False,
    )
    # each run started and each refusal, on the receiver's own stream (the root logger is not ours to configure)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    said = logging.getLogger("tasks.monitoring.receiver")
    said.addHandler(handler)
    said.setLevel(logging.INFO)
    said.propagate = False
    uvicorn.run(
        create_receiver(
            tokens,
            deployment_starter(deployment),
            incidents=IncidentStore(),
            alert_levels=default_policy().risk.alert_levels,
        ),
        host=host,
        port=port,
        log_level="info",
    )


@app.command("prometheus")
def prometheus(
    target: list[str] = typer.Option(
        ..., help="a Ray node's metrics address host:port (repeat for each node)"
    ),
    alertmanager: list[str] = typer.Option([], help="Alertmanager host:port the alerting tier notifies"),
    rules_glob: str | None = typer.Option(
        None, help="the rules files the alerting tier loads (default: the data dir's)"
    ),
) -> None:
    """Write one Prometheus config per retention tier (policy monitoring.layers) and print how to start each."""
    from rich.console import Console

    from serving.settings import get_settings
    from tasks.monitoring.prometheus_setup import write_setup
    from tasks.monitoring.rules import RefusedFile
    from tasks.policy import default_policy

    console = Console(soft_wrap=True)  # the command lines are pasted whole
    rules = rules_glob or str(get_settings().data_dir.resolve() / "monitoring" / "*.rules.yml")
    try:
        written = write_setup(default_policy(), target, rules_glob=rules, alertmanagers=alertmanager)
    except (ValueError, RefusedFile) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    for tier, path in written:
        console.print(
            f"{tier.name}: keeps {', '.join(tier.layers)} for {tier.retention_days} days, every {tier.scrape_interval}"
            f"{' (all series, evaluates the rules)' if tier.alerting else f' ({len(tier.keep or ())} metrics)'}\n"
            f"  prometheus --config.file={path} {' '.join(tier.flags(f'./prometheus-{tier.name}-data'))}",
            highlight=False,
        )
