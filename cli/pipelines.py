"""`inferops optimize | gate | rollback | demo`: the flows from the command line."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import typer

API_KEY = typer.Option(None, "--api-key", envvar="INFEROPS_API_KEY", help="endpoint API key (admin routes need it)")


def _quiet_env() -> None:
    """No telemetry calls (there may be no network) and no Hub lookups for the bundled model."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def optimize(
    model: str = typer.Option("minilm", help="model zoo name"),
    url: str | None = typer.Option(None, help="live endpoint to switch to the new champion"),
    request_log: str | None = typer.Option(
        None, help="requests to time candidates on (JSON Lines of {'text': ...}, or .npy); judges the response cache"
    ),
    candidate: list[str] = typer.Option(None, "--candidate", "-c", help="only these variants (repeatable)"),
    repeats: int | None = typer.Option(None, help="measurements per candidate (policy default)"),
    gate: bool = typer.Option(False, help="run the phase gate on the challenger before promoting it"),
    api_key: str | None = API_KEY,
) -> None:
    """Run one optimization cycle and print its summary."""
    _quiet_env()
    from flows.optimization_cycle import optimization_cycle

    out = optimization_cycle(model=model, url=url, candidates=candidate or None, repeats=repeats, gate=gate, api_key=api_key,
                             request_log=request_log)
    print_cycle(out)


def gate(
    model: str = typer.Option("minilm"),
    url: str | None = typer.Option(None, help="endpoint serving the candidate (default: serve it locally)"),
    alias: str = typer.Option("challenger", help="registry alias of the candidate"),
    stability_s: float | None = typer.Option(None, help="stability run length (policy: 72 h)"),
    approval: bool | None = typer.Option(None, "--approval/--no-approval", help="pause for a human decision"),
    api_key: str | None = API_KEY,
) -> None:
    """Run the phased rollout gate on a candidate."""
    _quiet_env()
    from flows.phase_gate import phase_gate

    out = phase_gate(model=model, url=url, candidate_alias=alias, stability_duration_s=stability_s,
                     require_approval=approval, api_key=api_key)  # fmt: skip
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
    import httpx
    from rich.console import Console

    from tasks.records import registry

    console = Console()
    try:
        record = registry.rollback(model, reason)
    except registry.RegistryError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    console.print(f"{model}: champion v{record.from_version} -> v{record.to_version} ({reason})", highlight=False)
    if url:
        from tasks.measure.loadgen import auth_headers

        headers = auth_headers(api_key)
        response = httpx.post(f"{url.rstrip('/')}/admin/models/{model}/switch",
                              json={"uri": f"models:/{model}@champion"}, headers=headers, timeout=300)  # fmt: skip
        console.print(f"endpoint {url}: HTTP {response.status_code} {response.text[:300]}", highlight=False)
        if response.status_code != 200:
            raise typer.Exit(1)
        # The serving config returns with the model: the restored version's measured knobs (or the defaults).
        from tasks.policy import default_policy
        from tasks.release.endpoint_config import EndpointConfigError, apply_knobs

        knobs = registry.serving_knobs(model, record.to_version, default_policy().serving.default_knobs())
        restored = registry.alias_version(model, registry.CHAMPION)
        try:
            applied = apply_knobs(url, model, api_key, knobs, expect_sha256=restored.sha256 if restored else None)
        except EndpointConfigError as exc:
            console.print(f"[red]serving knobs not restored:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None
        console.print(f"endpoint {url}: serving knobs {knobs} on {len(applied['replicas'])} replica(s)", highlight=False)


def print_cycle(out: dict[str, Any]) -> None:
    from rich.console import Console

    from cli.variants import render_table

    console = Console(width=200)
    # The stage is in the candidate's name (+threads=, +replicas=, +cache=): the type column would only repeat it.
    rows = [{k: "" if v is None else str(v) for k, v in r.items() if k != "type"} for r in out["results"]]
    title = f"optimization cycle: {out['model']} (baseline {out['baseline']['variant']})"
    console.print(render_table(title, rows, wrap=frozenset({"reason", "candidate"})))
    console.print(json.dumps({"champion": out["champion"], "final": out["final"], "roi": out["roi"],
                              "bottleneck": out["bottleneck"], "wall_s": out["wall_s"]}, indent=2, default=str))  # fmt: skip


def print_gate(out: dict[str, Any]) -> None:
    from rich.console import Console

    from cli.variants import render_table

    console = Console(width=200)
    rows = [{k: str(v) for k, v in r.items()} for r in out["rows"]]
    title = f"phase gate: {out['model']} {'PASS' if out['passed'] else 'FAIL'} (weighted {out['weighted_score']:.2%})"
    console.print(render_table(title, rows, wrap=frozenset({"reason"})))
    console.print(f"decision: {out['decision']}; promotion: {out['promotion']}; risk actions: {out['risk_actions']}",
                  highlight=False)  # fmt: skip


def demo(
    model: str = typer.Option("minilm", help="the model the demo optimizes and serves"),
    port: int = typer.Option(8000, help="loopback port for the Ray Serve endpoint"),
) -> None:
    """The main job end to end on embedded defaults: variants, serve, optimize+gate, stress, capacity plan."""
    _quiet_env()
    from cli.demo import run_demo

    started = time.monotonic()
    run_demo(model, port)
    typer.echo(f"\ndemo finished in {time.monotonic() - started:.0f} s")
