"""`inferops optimize | gate | rollback | demo`: the flows from the command line."""

from __future__ import annotations

import os

import typer

# No envvar of its own: the client reads INFEROPS_API_KEYS / INFEROPS_ADMIN_KEYS (or the data dir's key files),
# the same variables the server reads, and calls admin routes with the admin key.
API_KEY = typer.Option(
    None, "--api-key", help="endpoint inference key (default: the first of INFEROPS_API_KEYS)"
)
JSON = typer.Option(False, "--json", help="print the result as JSON (for scripts) instead of tables")


def quiet_env() -> None:
    """No telemetry calls (there may be no network) and no Hub lookups for the bundled model."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def optimize(
    model: str = typer.Option("minilm", help="model zoo name"),
    url: str | None = typer.Option(None, help="live endpoint to switch to the new champion"),
    request_log: str | None = typer.Option(
        None,
        help="requests to time candidates on (JSON Lines of {'text': ...}, or .npy); judges the response cache",
    ),
    candidate: list[str] = typer.Option(
        None,
        "--candidate",
        "-c",
        help="only these variants (repeatable); the variant serving now is measured again as an A/A control, never promoted",
    ),
    repeats: int | None = typer.Option(None, help="measurements per candidate (policy default)"),
    gate: bool = typer.Option(False, help="run the phase gate on the challenger before promoting it"),
    serving_trials: int | None = typer.Option(
        None,
        help="serving configurations to measure on the endpoint by their knee (policy default; 0: serve the "
        "in-process knobs); needs --url",
    ),
    plan_order: str = typer.Option(
        "auto",
        help="which level goes first: auto (where requests' time goes on the endpoint decides), serving, model",
    ),
    api_key: str | None = API_KEY,
    as_json: bool = JSON,
) -> None:
    """Run one optimization cycle and print its summary."""
    quiet_env()
    from flows.optimization_cycle import optimization_cycle

    out = optimization_cycle(
        model=model,
        url=url,
        candidates=candidate or None,
        repeats=repeats,
        gate=gate,
        api_key=api_key,
        request_log=request_log,
        serving_trials=serving_trials,
        plan_order=plan_order,
    )
    from cli.render import print_cycle, print_json

    if as_json:
        print_json(out)
    else:
        print_cycle(out)


def gate(
    model: str = typer.Option("minilm"),
    url: str | None = typer.Option(None, help="endpoint serving the candidate (default: serve it locally)"),
    alias: str = typer.Option("challenger", help="registry alias of the candidate"),
    production_url: str | None = typer.Option(
        None,
        help="production endpoint to release a promoted candidate to (rolled back there on the risk triggers)",
    ),
    stability_s: float | None = typer.Option(None, help="stability run length (policy: 72 h)"),
    approval: bool | None = typer.Option(
        None,
        "--approval/--no-approval",
        help="pause for a person's decision in the Prefect UI (policy default: yes; needs a Prefect server)",
    ),
    api_key: str | None = API_KEY,
    as_json: bool = JSON,
) -> None:
    """Run the phased rollout gate on a candidate; on a pass (and an approval, where the policy asks for one)
    promote it and, with --production-url, release it there (roll out, risk window, benchmark)."""
    quiet_env()
    from tasks.policy import default_policy
    from tasks.release.approval import ApprovalUnavailable, require_pausable

    if approval is None:
        approval = default_policy().rollout_gate.require_approval
    if approval:
        try:
            require_pausable(model)  # before the flow starts: nobody could answer the pause
        except ApprovalUnavailable as exc:
            from rich.console import Console

            Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
    from flows.phase_gate import phase_gate

    out = phase_gate(
        model=model,
        url=url,
        candidate_alias=alias,
        production_url=production_url,
        stability_duration_s=stability_s,
        require_approval=approval,
        api_key=api_key,
    )
    from cli.render import print_gate, print_json

    if as_json:
        print_json(out)
    else:
        print_gate(out)
    if not out["passed"]:
        raise typer.Exit(1)


def rollback(
    model: str = typer.Option("minilm"),
    url: str | None = typer.Option(None, help="live endpoint to switch back as well"),
    reason: str = typer.Option("manual rollback", help="recorded in the rollback record"),
    api_key: str | None = API_KEY,
) -> None:
    """Move `champion` back to `previous-champion`; the endpoint follows when --url is given."""
    from rich.console import Console

    from cli.render import knobs_text
    from serving.client import InferopsClient
    from tasks.policy import default_policy
    from tasks.records import registry
    from tasks.release.rollout import RolloutRefused, rollout

    console = Console()
    try:
        record = registry.rollback(model, reason)
    except registry.RegistryError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    console.print(
        f"{model}: champion v{record.from_version} -> v{record.to_version} ({reason})", highlight=False
    )
    if url:
        restored = registry.alias_version(model, registry.CHAMPION)
        assert restored is not None  # the rollback above just set it
        # The serving config returns with the model: the restored version's measured knobs (or the defaults).
        knobs = registry.version_knobs(model, record.to_version, default_policy().serving.default_knobs())
        try:
            with InferopsClient(url, api_key) as client:
                done = rollout(client, model, restored, knobs)
        except RolloutRefused as exc:
            console.print(f"[red]endpoint did not switch:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        console.print(
            f"endpoint {url}: serving {model} v{done.version} ({done.sha256[:12]}…)", highlight=False
        )
        if done.knobs_error:
            console.print(f"[red]serving knobs not restored:[/red] {done.knobs_error}", highlight=False)
            raise typer.Exit(1)
        replicas = len((done.knobs_applied or {}).get("replicas", {}))
        console.print(f"endpoint {url}: {knobs_text(knobs)} on {replicas} replica(s)", highlight=False)
