"""How the commands show results to a person: rich tables and short sentences, built from the flows' outputs by
pure functions (tests render them and check that no line is a raw dict or JSON). `--json` prints the outputs
themselves for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

WIDE = 200  # piped output (make run, CI logs) gets a wide console so tables are not truncated


def console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=WIDE)


def print_json(payload: Any) -> None:
    """The machine-readable form, for `--json`."""
    print(json.dumps(payload, indent=2, default=str))


def render_table(
    title: str, rows: Sequence[dict[str, Any]], wrap: frozenset[str] = frozenset({"accuracy"})
) -> Table:
    """A rich Table from flat rows (columns in first-seen order); None shows as an empty cell."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    table = Table(title=title, show_lines=False)
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=col not in wrap, ratio=1 if col in wrap else None)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    return table


def facts_table(title: str, facts: Iterable[tuple[str, Any]]) -> Table:
    """Two columns, what and value: the outcome of a run at a glance."""
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in facts:
        table.add_row(key, "" if value is None else str(value))
    return table


def knobs_text(knobs: dict[str, Any] | None) -> str:
    """`2 replicas x 1 thread, batch <= 4, cache 4096 entries` from serving knobs."""
    if not knobs:
        return "-"
    cache = knobs.get("cache_entries") or 0
    return (
        f"{knobs.get('num_replicas', 1)} replica(s) x {knobs.get('intra_op_threads', '?')} thread(s), "
        f"batch <= {knobs.get('max_batch_size', '?')}, " + (f"cache {cache} entries" if cache else "no cache")
    )


# ---- the optimization cycle --------------------------------------------------------------------------------


def cycle_facts(out: dict[str, Any]) -> list[tuple[str, Any]]:
    """The cycle's outcome as (what, value) rows: champion, where it serves and how, gate, ROI."""
    final, roi = out["final"], out["roi"]
    chosen = (final.get("serving_level") or {}).get("chosen")
    champion = final.get("champion")
    if chosen and "champion_throughput" in final:  # the in-process name carries the in-process knobs
        champion = f"{champion} (as measured in process), served as {chosen} (the serving level's best knee on the endpoint)"
    if final.get("refusal"):
        champion = f"{champion}: {final['refusal']}"
    facts: list[tuple[str, Any]] = [
        ("champion", champion),
        ("search", f"{final.get('candidates_measured')} candidates measured; {final.get('search')}"),
        ("bottleneck", out["bottleneck"]),
    ]
    timed = out["baseline"].get("model level timed")
    if timed:
        facts.insert(2, ("model level timed", f"{timed}: {out['baseline'].get('measured on')}"))
    if out.get("plan_order"):
        order = out["plan_order"]
        facts.append(("plan order", f"{order['reason']} (measured {order['source']})"))
    if "champion_throughput" in final:
        facts.append(
            (
                "champion speed",
                f"{final['champion_throughput']} items/s, P99 {final['champion_p99_ms']} ms per batch",
            )
        )
    serving = out.get("serving")
    if serving:
        facts.append(("serving level", serving["sentence"]))
    gate = final.get("gate")
    if gate:
        facts.append(
            (
                "phase gate",
                f"{'PASS' if gate['passed'] else 'FAIL'} (weighted {gate['weighted_score']:.2%}): {gate['reason']}",
            )
        )
    if out.get("promotion"):
        promotion = out["promotion"]
        facts.append(
            (
                "registry",
                f"champion v{promotion['champion']} (previous v{promotion.get('previous_champion')})",
            )
        )
    knobs = final.get("serving_knobs")
    if knobs:
        if knobs.get("error"):
            facts.append(("endpoint knobs", f"not applied: {knobs['error']}"))
        else:
            facts.append(
                (
                    "endpoint knobs",
                    f"{knobs_text(knobs['knobs'])} on {len(knobs['replicas'])} replica(s), verified in {knobs['seconds']} s",
                )
            )
    facts += [
        ("performance", f"{roi['performance_improvement']:+.0%} throughput vs the baseline"),
        (
            "cost",
            f"${roi['cost_per_million_before']:.2f} -> ${roi['cost_per_million_after']:.2f} per million requests ({roi['cost_saving_rate']:.0%} saved)",
        ),
        (
            "ROI",
            f"{roi['roi']:.2f} on ${roi['investment_usd']:.0f} invested (benefit ${roi['yearly_benefit_usd']:,.0f}/year at the target load)",
        ),
        ("MLflow run", out["mlflow_run_id"]),
        ("wall time", f"{out['wall_s']} s"),
    ]
    return facts


def print_cycle(out: dict[str, Any], to: Console | None = None) -> None:
    view = to or console()
    # The stage is in the candidate's name (+threads=, +replicas=, +cache=): the type column would only repeat it;
    # where every figure came from one place, the facts below say it once instead of a column repeating it.
    places = {r.get("measured_on") for r in out["results"]} - {None}
    dropped = {"type"} | ({"measured_on"} if len(places) <= 1 else set())
    rows = [{k: v for k, v in r.items() if k not in dropped} for r in out["results"]]
    title = f"optimization cycle: {out['model']} (baseline {out['baseline']['variant']})"
    view.print(render_table(title, rows, wrap=frozenset({"reason", "candidate"})))
    serving = out.get("serving")
    if serving and serving["trials"]:
        view.print(
            render_table(
                f"serving level on the endpoint: {out['model']} (each a temporary Ray Serve app, scored by its knee)",
                serving["trials"],
                wrap=frozenset({"reason"}),
            )
        )
    view.print(facts_table(f"outcome: {out['model']}", cycle_facts(out)))


# ---- the phase gate ------------------------------------------------------------------------------------------


def gate_lines(out: dict[str, Any]) -> list[str]:
    """The release decision, the promotion and the risk window, as sentences."""
    decision = out["decision"]
    lines = [
        f"decision: {'promote' if decision['promote'] else 'keep the champion'} "
        f"(decided by {decision['decided_by']}: {decision['comment']})"
    ]
    promotion = out.get("promotion")
    if promotion and promotion.get("promoted"):
        lines.append(
            f"promoted: version {promotion['champion']} is champion, {promotion.get('previous_champion')} is previous-champion"
        )
    actions = out.get("risk_actions") or []
    if promotion:
        if actions:
            lines += [
                f"risk action ({a['level']}): {a['action']} done={a.get('done')}: {a['reason']}"
                for a in actions
            ]
        else:
            lines.append("risk window: every figure within the risk policy, no action")
    release = out.get("release")
    if release:
        served, window = release["served"], release["risk_window"]
        lines.append(
            f"released to {release['url']}: v{served['version']} ({served['sha256'][:12]}…) by {served['how']}; "
            f"risk window P99 {window['p99_ms']:.1f} ms, {window['throughput_rps']:.1f} req/s, "
            f"errors {window['error_rate']:.2%}" + ("; rolled back" if release["rolled_back"] else "")
        )
        bench = release.get("benchmark")
        if bench:
            lines.append(
                f"benchmark per release: P99 {bench.get('p99_ms', float('nan')):.1f} ms at "
                f"{bench.get('throughput_rps', float('nan')):.1f} req/s, recorded as production's baseline "
                f"(MLflow run {bench['mlflow_run_id']})"
            )
    return lines


def print_gate(out: dict[str, Any], to: Console | None = None) -> None:
    view = to or console()
    title = f"phase gate: {out['model']} {'PASS' if out['passed'] else 'FAIL'} (weighted {out['weighted_score']:.2%})"
    view.print(render_table(title, out["rows"], wrap=frozenset({"reason"})))
    for line in gate_lines(out):
        view.print(line, highlight=False)


# ---- the capacity plan ---------------------------------------------------------------------------------------


def plan_rows(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The plan table pivoted for reading: one row per scenario and confidence, units ($/month) per option, the
    cheapest option that covers the row marked with *."""
    rows: dict[tuple[str, float], dict[str, Any]] = {}
    cheapest: dict[tuple[str, float], dict[str, Any]] = {}
    for r in table:
        key = (r["scenario"], r["level"])
        if key not in cheapest or r["monthly_cost"] < cheapest[key]["monthly_cost"]:
            cheapest[key] = r
    for r in table:
        key = (r["scenario"], r["level"])
        row = rows.setdefault(
            key,
            {
                "scenario": r["scenario"],
                "confidence": f"{r['level']:g}",
                "demand req/s": f"{r['demand_rps']:,.1f}",
            },
        )
        mark = " *" if cheapest[key] is r else ""
        row[f"{r['option']} ({r['label']})"] = f"{r['units']} (${r['monthly_cost']:,.0f}){mark}"
    return list(rows.values())


def plan_lines(plan: dict[str, Any]) -> list[str]:
    rec, strategy, autoscaling = plan["recommendation"], plan["strategy"], plan["autoscaling"]
    lines = [
        f"recommendation: {rec['reason']}",
        f"strategy: {strategy['reason']}",
        f"forecaster: {plan['forecaster']}; history validation: {plan['validation']['verdict']} "
        f"({plan['validation']['zero_windows']} outage windows masked)",
        "ray serve autoscaling: " + ", ".join(f"{k}={v}" for k, v in autoscaling.items()),
    ]
    if plan.get("forecast_check"):
        lines.append(f"forecast check: {plan['forecast_check']['sentence']}")
    if plan.get("replay"):
        lines.append(f"replay of the held-out tail: {plan['replay']['reason']}")
    return lines


def print_plan(plan: dict[str, Any], to: Console | None = None) -> None:
    view = to or console()
    title = "capacity plan" + (" on synthetic history (a demo)" if plan.get("synthetic") else "")
    view.print(
        render_table(f"{title}: units ($/month) per option, * the cheapest", plan_rows(plan["plan_table"]))
    )
    for line in plan_lines(plan):
        view.print(line, highlight=False)


def risk_lines(out: dict[str, Any]) -> list[str]:
    """The assessment in sentences: the overall score, what is high and the incident it opened, the GPU factor."""
    lines = [
        f"overall {out['overall']:g} ({out['overall_level']}); at high: {', '.join(out['high']) or 'none'}; "
        f"GPU factor {out['gpu']['factor']:g} ({out['gpu']['source']}: {out['gpu']['note']})"
    ]
    for r in out["incidents"]:
        lines.append(
            f"{r['risk']}: incident {r['incident']} at {r['level']} ({r['opened']}); {r['notified']}"
        )
    lines.append(
        f"evidence, heat map and inputs: MLflow run {out['mlflow_run_id']} (experiment inferops-risk)"
    )
    return lines


def print_risk(out: dict[str, Any], to: Console | None = None) -> None:
    view = to or console()
    view.print(
        render_table(
            f"risk assessment of {out['model']} (p x i x f: low < 8 <= medium < 15 <= high)",
            out["table"],
            wrap=frozenset({"probability from"}),
        )
    )
    measured = [
        {
            "risk": r["name"],
            "signal": e["kind"],
            "p": e["probability"],
            "figure": e["note"],
            "source": e["source"],
        }
        for r in out["assessment"]["risks"]
        for e in r["evidence"]
        if e["probability"] is not None
    ]
    if measured:
        view.print(
            render_table(
                "live evidence (p: the probability it implies)",
                measured,
                wrap=frozenset({"figure", "source"}),
            )
        )
    for line in risk_lines(out):
        view.print(line, highlight=False)


# ---- make run's summary --------------------------------------------------------------------------------------


def summary_panel(summary: dict[str, Any]) -> Panel:
    """The box `make run` ends with: what serves now, how it compares, what to do next."""
    rows = [(k, v) for k, v in summary.items() if v is not None]
    table = facts_table("", rows)
    return Panel(table, title="inferops: where things stand", expand=False)


# ---- inferops serve ------------------------------------------------------------------------------------------


def example_curl(url: str, model: str, kind: str, keyed: bool) -> str:
    """A call that works when pasted: embeddings for a text model, the model's metadata for a tensor model."""
    from serving import routes

    auth = ' -H "Authorization: Bearer $KEY"' if keyed else ""
    if kind == "text":
        body = json.dumps({"model": model, "input": ["hello world"]})
        return (
            f"curl -s {url}{routes.EMBEDDINGS.path()} -H 'Content-Type: application/json'{auth} -d '{body}'"
        )
    return f"curl -s {url}{routes.MODEL.path(model)}{auth}"


def ray_line(
    gcs_address: str, joined: bool, metrics_port: int | None = None, token_auth: bool = False
) -> str:
    """Where the Serve app's Ray cluster is: what a Prefect worker's RAY_ADDRESS points at (so a gate serves its
    candidate on the same cluster, beside production), the metrics port a Prometheus scrapes, and whether a client
    of the cluster needs Ray's token (Ray >= 2.59 turns token auth on for a local cluster)."""
    how = "joined" if joined else "started by this command, stopped with it"
    metrics = f"; Prometheus metrics on port {metrics_port}" if metrics_port else ""
    worker = f"export RAY_ADDRESS={gcs_address}" + (
        " RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(ray get-auth-token)" if token_auth else ""
    )
    return f"  ray:     {gcs_address} ({how}{metrics}); a worker gating releases here: {worker}"


def serve_banner(
    url: str,
    meta: dict[str, Any],
    replicas: int,
    ingress: str,
    keyed: bool,
    key_files: list[Path] | None = None,
    made: list[Path] | None = None,
) -> list[str]:
    """What `inferops serve` serves, as the endpoint itself reports it, and how to call it (with which key)."""
    from serving import routes

    version = f", registry version {meta['registry_version']}" if meta.get("registry_version") else ""
    knobs = {
        "num_replicas": replicas,
        "intra_op_threads": meta.get("intra_op_threads"),
        "max_batch_size": (meta.get("batching") or {}).get("max_batch_size"),
        "cache_entries": (meta.get("cache") or {}).get("capacity"),
    }
    engine = meta.get("provider", "?") + (
        f" (fell back: {meta['fallback_reason']})" if meta.get("fallback_reason") else ""
    )
    lines = [
        f"inferops serving {meta['name']}: {meta['variant']} (sha256 {meta['sha256'][:12]}{version}, from "
        f"{meta['origin']}) at {url}  [ingress: {ingress}]",
        f"  knobs:   {knobs_text(knobs)}",
        f"  engine:  {engine}",
        f"  OpenAPI: {url}{routes.DOCS.path()}    health: {url}{routes.READY.path()}",
    ]
    if keyed:
        source = (
            f"KEY=$(grep -v '^#' {key_files[0]} | head -1 | cut -d' ' -f1)"
            if key_files
            else "KEY=<one of INFEROPS_API_KEYS>"
        )
        lines.append(f"  key:     {source}")
    lines.append(f"  try:     {example_curl(url, meta['name'], meta['kind'], keyed)}")
    for path in made or []:
        lines.append(
            f"  made:    {path} (mode 0600) on this first run; clients on this machine read it, elsewhere "
            f"set {'INFEROPS_ADMIN_KEYS' if 'admin' in path.name else 'INFEROPS_API_KEYS'} to its key"
        )
    if not keyed:
        lines.append(
            "  WARNING: --allow-anonymous: inference answers anyone (admin routes still need an admin key)"
        )
    return lines


# ---- inferops status -----------------------------------------------------------------------------------------


def status_facts(status: dict[str, Any]) -> list[tuple[str, Any]]:
    """One model's status as (what, value) rows."""

    def version(ref: dict[str, Any] | None) -> str | None:
        return f"v{ref['version']} {ref['variant']} (sha256 {ref['sha256'][:12]})" if ref else None

    facts: list[tuple[str, Any]] = [
        ("champion", version(status["champion"]) or "none registered"),
        ("previous champion", version(status["previous"]) or "none"),
        ("challenger", version(status["challenger"]) or "none waiting"),
        ("serves with", knobs_text(status["knobs"])),
    ]
    endpoint = status.get("endpoint")
    if endpoint:
        facts.append(("endpoint", ", ".join(f"{k}: {v}" for k, v in endpoint.items())))
    for run in status["latest"]:
        link = run["mlflow_url"] + (f" | Prefect {run['prefect_url']}" if run["prefect_url"] else "")
        facts.append((run["kind"], f"{run['verdict']} ({run['name']}, {run['started']}) {link}"))
    return facts


def print_status(statuses: Sequence[dict[str, Any]], to: Console | None = None) -> None:
    view = to or console()
    if not statuses:
        view.print("no model is registered yet: run `make run` or `inferops optimize` first", highlight=False)
    for status in statuses:
        view.print(facts_table(f"status: {status['model']}", status_facts(status)))
