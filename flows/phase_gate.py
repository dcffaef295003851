"""Phased rollout gate (SPEC §1-§2): measure four gate items on a live endpoint, decide, ask for approval,
promote, then watch the new champion and roll back, freeze or recommend scale-out as the risk policy says."""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import mlflow
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run

from flows.keys import slug
from serving.settings import get_settings
from tasks.policy import Policy, default_policy
from tasks.records import registry
from tasks.records.store import configure, ensure_experiment
from tasks.release import approval
from tasks.release import checks as gate_checks
from tasks.release.gate import GateVerdict, ItemResult, decide, render_markdown
from tasks.release.rollout_risk import Observation, RiskAction, evaluate

EXPERIMENT = "inferops-gate"
# How often the paused flow checks for a reviewer's answer (how long it waits, and how long the new champion is
# watched after promotion, are policy rollout_gate.approval_timeout_s and rollout_gate.risk_window_s).
APPROVAL_POLL_S = 2


# ---- gate items -----------------------------------------------------------------------------------------------


@task(name="gate-functional")
def functional_gate(url: str, api_key: str | None, model: str) -> ItemResult:
    """Every served model, batch sizes 1/8/32, multi-model concurrency, model load rate."""
    client = gate_checks.ServingClient(url, api_key)
    try:
        rate_min = default_policy().rollout_gate.completion.model_load_rate_min
        return gate_checks.functional_item(client, [model], model_load_rate_min=rate_min)
    finally:
        client.close()


@task(name="gate-performance")
def performance_gate(url: str, api_key: str | None, model: str, duration_s: float) -> tuple[ItemResult, Observation]:
    """P99 < SLA at the target rate (open loop), throughput, GPU utilisation where a GPU exists."""
    policy = default_policy()
    client = gate_checks.ServingClient(url, api_key)
    try:
        return gate_checks.performance_item(
            client,
            model,
            sla_p99_ms=policy.rollout_gate.sla_p99_ms,
            target_qps=policy.rollout_gate.target_qps,
            duration_s=duration_s,
            max_error_rate=policy.test_suite.max_error_rate,
            utilisation_ceiling=policy.rollout_risk.utilisation_scale_out,
        )
    finally:
        client.close()


@task(name="gate-stability")
def stability_gate(url: str, api_key: str | None, model: str, duration_s: float) -> ItemResult:
    """Availability over a continuous run and memory-leak verdicts."""
    policy = default_policy()
    client = gate_checks.ServingClient(url, api_key)
    try:
        return gate_checks.stability_item(
            client,
            model,
            duration_s=duration_s,
            rate_rps=policy.rollout_gate.target_qps,
            availability_min=policy.rollout_gate.items["stability"].minimum,
            leak_slope_mb_per_h=float(policy.test_suite.stability.leak_slope_mb_per_h or 0.0),
            sla_p99_ms=policy.rollout_gate.sla_p99_ms,
        )
    finally:
        client.close()


@task(name="gate-security")
def security_gate(url: str, api_key: str | None, model: str, candidate: registry.VersionRef | None, alias: str) -> ItemResult:
    """Served sha256 vs the registry, 401 without a key, hostile inputs, no model files over HTTP."""
    files, head = _artifact_facts(model, candidate)
    source = f"registry {model}@{alias} (version {candidate.version})" if candidate else f"registry {model}@{alias}"
    client = gate_checks.ServingClient(url, api_key)
    try:
        return gate_checks.security_item(
            client,
            [model],
            {model: (candidate.sha256 if candidate else None, source)},
            default_policy().endpoint,
            files=files,
            artifact_head=head,
        )
    finally:
        client.close()


def _artifact_facts(model: str, candidate: registry.VersionRef | None) -> tuple[list[str], bytes | None]:
    """The artifact's file name and first bytes, to recognise it if the endpoint ever hands it out."""
    if candidate is None:
        return [], None
    try:
        resolved = registry.resolve(f"models:/{model}/{candidate.version}")
        with open(resolved.path, "rb") as fh:
            return [resolved.path.name], fh.read(64) or None
    except Exception:  # noqa: BLE001 - without the file, the status check alone still guards file access
        return [], None


# ---- verdict, records, approval, promotion ----------------------------------------------------------------------


@task(name="gate-verdict")
def publish_verdict(
    model: str, results: list[ItemResult], candidate: registry.VersionRef | None, params: dict[str, Any]
) -> tuple[GateVerdict, str, str]:
    """Decide, then publish the Prefect table + markdown artifacts and an MLflow run; returns (verdict, report, run id)."""
    verdict = decide(results, default_policy().rollout_gate)
    title = f"Phase gate {model}" + (f" v{candidate.version}" if candidate else "")
    report = render_markdown(verdict, title=title) + "\n" + gate_checks.render_checks_markdown(results)
    key = f"phase-gate-{slug(model)}"
    create_table_artifact(key=key, table=verdict.rows, description=f"{title}: {'PASS' if verdict.passed else 'FAIL'} ({verdict.reason})")
    create_markdown_artifact(key=f"{key}-report", markdown=report, description=title)
    ensure_experiment(EXPERIMENT)
    # Nested when the optimization cycle runs the gate inside its own MLflow run.
    with mlflow.start_run(
        run_name=f"gate-{model}" + (f"-v{candidate.version}" if candidate else ""), nested=mlflow.active_run() is not None
    ) as run:
        mlflow.set_tags(
            {
                "inferops.kind": "gate",
                "inferops.model": model,
                "inferops.gate.verdict": "pass" if verdict.passed else "fail",
                "inferops.gate.reason": verdict.reason[:4000],
                "inferops.sha256": candidate.sha256 if candidate else "",
                "inferops.retention_class": "implementation_logs",
            }
        )
        mlflow.log_params({k: v for k, v in params.items() if v is not None})
        mlflow.log_metric("weighted_score", verdict.weighted_score)
        mlflow.log_metric("passed", float(verdict.passed))
        for row in verdict.rows:
            item = str(row["item"])
            mlflow.log_metrics({f"{item}.observed": float(row["observed"]), f"{item}.minimum": float(row["minimum"])})  # type: ignore[arg-type]
            mlflow.set_tag(f"inferops.gate.{item}.reason", str(row["reason"])[:4000])
        mlflow.log_table({k: [str(r[k]) for r in verdict.rows] for k in verdict.rows[0]}, "gate_items.json")
        mlflow.log_dict({r.item: {"observed": r.observed, "checks": r.checks} for r in results}, "gate_checks.json")
        mlflow.log_text(report, "gate_report.md")
        run_id = run.info.run_id
    return verdict, report, run_id


@task(name="gate-decision")
def record_decision(decision: approval.ApprovalDecision, run_id: str, model: str) -> None:
    """Approval decision on the gate's MLflow run (tags + JSON) and as a Prefect artifact."""
    approval.record(decision, run_id)
    create_markdown_artifact(
        key=f"phase-gate-{slug(model)}-decision",
        markdown=f"# Release decision: {model}\n\n```json\n{json.dumps(decision.as_dict(), indent=2)}\n```\n",
        description=f"promote={decision.promote} ({decision.decided_by})",
    )


@task(name="promote")
def promote_candidate(model: str, candidate_alias: str, run_id: str) -> dict[str, Any]:
    """challenger -> champion (the old champion becomes previous-champion); recorded on the gate run."""
    if candidate_alias == registry.CHAMPION:
        record: dict[str, Any] = {"model": model, "promoted": False, "reason": "candidate is already champion"}
    else:
        record = {**registry.promote(model), "promoted": True}
    client = MlflowClient(configure())
    client.log_dict(run_id, record, "promotion.json")
    client.set_tag(run_id, "inferops.gate.promoted", str(record["promoted"]).lower())
    return record


@task(name="keep-champion")
def keep_champion(model: str, candidate_alias: str, candidate: registry.VersionRef | None, why: str) -> None:
    """A failed or rejected candidate is not promoted: drop its alias and tag the version with the reason."""
    if candidate is None or candidate_alias == registry.CHAMPION:
        return
    MlflowClient(configure()).set_model_version_tag(model, candidate.version, "inferops.gate", why[:4000])
    registry.discard_challenger(model)


# ---- rollout risk control ----------------------------------------------------------------------------------------


@task(name="risk-window")
def risk_window(url: str, api_key: str | None, model: str, duration_s: float) -> Observation:
    """Watch the new champion under the target load for a window; the live figures to compare with the gate's."""
    policy = default_policy()
    client = gate_checks.ServingClient(url, api_key)
    try:
        current, _, _ = gate_checks.observe(
            client, model, rate_rps=policy.rollout_gate.target_qps, duration_s=duration_s, sla_p99_ms=policy.rollout_gate.sla_p99_ms
        )
        return current
    finally:
        client.close()


@task(name="risk-actions")
def risk_actions(
    model: str, url: str, api_key: str | None, baseline: Observation, current: Observation, run_id: str
) -> list[dict[str, Any]]:
    """Evaluate the risk policy and carry out every action it demands; each action is recorded."""
    policy = default_policy()
    actions: list[RiskAction] = evaluate(baseline, current, policy.rollout_risk)
    records = [
        approval.apply_risk_action(
            a, model=model, url=url, api_key=api_key, run_id=run_id, target_utilisation=policy.capacity.target_utilisation
        )
        for a in actions
    ]
    client = MlflowClient(configure())
    client.log_dict(run_id, {"baseline": asdict(baseline), "current": asdict(current), "actions": records}, "risk_actions.json")
    for name, value in asdict(current).items():
        if math.isfinite(value):
            client.log_metric(run_id, f"risk.current.{name}", value)
    client.set_tag(run_id, "inferops.risk.actions", ",".join(a.action for a in actions) or "none")
    lines = [
        f"# Rollout risk control: {model}",
        "",
        f"Baseline (gate): P99 {baseline.p99_ms:.1f} ms, {baseline.throughput_rps:.1f} req/s; "
        f"live window: P99 {current.p99_ms:.1f} ms, {current.throughput_rps:.1f} req/s, "
        f"errors {current.error_rate:.2%}, utilisation {current.utilisation:.0%}",
        "",
        "| level | action | threshold | observed | done | reason |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['level']} | {r['action']} | {r['threshold']} | {r['observed']} | {r.get('done')} | {r['reason']} |" for r in records]
    if not records:
        lines.append("| - | none | - | - | - | every figure within the risk policy |")
    create_markdown_artifact(key=f"phase-gate-{slug(model)}-risk", markdown="\n".join(lines) + "\n", description="rollout risk control")
    return records


# ---- the flow ------------------------------------------------------------------------------------------------------


def _api_key(given: str | None) -> str | None:
    if given:
        return given
    keys = get_settings().api_keys
    return keys[0] if keys else None


@contextmanager
def _endpoint(model: str, alias: str, url: str | None, api_key: str | None) -> Iterator[tuple[str, str | None]]:
    """The URL to gate; without one, serve `models:/model@alias` on a local Ray Serve for the gate's duration."""
    if url is not None:
        yield url, api_key
        return
    import socket

    from ray import serve

    from serving.app import run_local

    key = api_key or secrets.token_urlsafe(24)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    # Its own route prefix: an app at "/" would replace the production app on the same Serve instance.
    name = f"gate-{slug(model)}"
    # The candidate's app is short-lived and reserves no logical CPU, so it schedules beside a production
    # deployment whose replicas hold every CPU Ray knows of (its ORT threads still come from the policy).
    # Pinned to the version, not the alias: promotion removes `challenger`, and Serve rebuilds an app from its
    # args whenever its config changes.
    ref = registry.alias_version(model, alias)
    uri = f"models:/{model}/{ref.version}" if ref else f"models:/{model}@{alias}"
    local = run_local({"model": uri, "api_keys": [key], "num_cpus": 0}, name=name, port=port,
                      route_prefix=f"/{name}")  # fmt: skip
    try:
        yield local, key
    finally:
        serve.delete(name)


@flow(name="phase-gate", log_prints=True)
def phase_gate(
    model: str = "minilm",
    url: str | None = None,
    candidate_alias: str = "challenger",
    stability_duration_s: float | None = None,
    require_approval: bool | None = None,
    api_key: str | None = None,
    performance_duration_s: float | None = None,
    risk_window_s: float | None = None,
    approval_timeout_s: int | None = None,
) -> dict[str, Any]:
    """Gate `model@candidate_alias` on the endpoint at `url`, then promote it and watch it, or keep the champion."""
    logger = get_run_logger()
    policy: Policy = default_policy()
    risk_window_s = risk_window_s if risk_window_s is not None else policy.rollout_gate.risk_window_s
    approval_timeout_s = approval_timeout_s if approval_timeout_s is not None else policy.rollout_gate.approval_timeout_s
    started = time.perf_counter()
    frozen = approval.frozen_reason(model)
    candidate = registry.alias_version(model, candidate_alias)
    with _endpoint(model, candidate_alias, url, _api_key(api_key)) as (url, key):
        stability_s = stability_duration_s if stability_duration_s is not None else policy.rollout_gate.stability_duration_s
        perf_s = performance_duration_s if performance_duration_s is not None else float(policy.test_suite.benchmark.duration_s or 20.0)
        params = {
            "model": model,
            "url": url,
            "candidate_alias": candidate_alias,
            "candidate_version": candidate.version if candidate else None,
            "stability_duration_s": stability_s,
            "performance_duration_s": perf_s,
            "target_qps": policy.rollout_gate.target_qps,
            "sla_p99_ms": policy.rollout_gate.sla_p99_ms,
        }

        functional = functional_gate(url, key, model)
        performance, baseline = performance_gate(url, key, model, perf_s)
        stability = stability_gate(url, key, model, stability_s)
        security = security_gate(url, key, model, candidate, candidate_alias)
        verdict, report, run_id = publish_verdict(model, [functional, performance, stability, security], candidate, params)
        logger.info("gate %s: %s (weighted %.2f%%)", model, "PASS" if verdict.passed else "FAIL", verdict.weighted_score * 100)

        version = candidate.version if candidate else None
        needs_human = policy.rollout_gate.require_approval if require_approval is None else require_approval
        if frozen:
            decision = approval.ApprovalDecision(
                model, version, verdict.passed, verdict.weighted_score, False, "policy", f"changes frozen: {frozen}", time.time()
            )
        elif needs_human and verdict.passed:
            form = approval.ApprovalInput.with_initial_data(
                description=approval.request_text(model, version, verdict, report), approve=False, comment=""
            )
            try:
                given = pause_flow_run(wait_for_input=form, timeout=approval_timeout_s, poll_interval=APPROVAL_POLL_S)
                decision = approval.from_input(model, version, verdict, given)
            except FlowPauseTimeout:
                decision = approval.timed_out(model, version, verdict, approval_timeout_s)
        else:
            decision = approval.by_policy(model, version, verdict)
        record_decision(decision, run_id, model)

        outcome: dict[str, Any] = {
            "model": model,
            "url": url,
            "passed": verdict.passed,
            "weighted_score": verdict.weighted_score,
            "rows": verdict.rows,
            "reason": verdict.reason,
            "decision": decision.as_dict(),
            "mlflow_run_id": run_id,
            "promotion": None,
            "risk_actions": [],
        }
        if not decision.promote or candidate is None:
            why = decision.comment if decision.gate_passed else f"gate failed: {verdict.reason}"
            keep_champion(model, candidate_alias, candidate, why)
        else:
            outcome["promotion"] = promote_candidate(model, candidate_alias, run_id)
            current = risk_window(url, key, model, risk_window_s)
            outcome["risk_actions"] = risk_actions(model, url, key, baseline, current, run_id)
        outcome["wall_s"] = round(time.perf_counter() - started, 1)
        MlflowClient(configure()).log_metric(run_id, "wall_s", outcome["wall_s"])
        return outcome


if __name__ == "__main__":
    import sys

    # python -m flows.phase_gate [MODEL] [URL]: a quick gate run from a shell (stability 30 s, risk window 20 s)
    args = sys.argv[1:]
    result = phase_gate(
        model=args[0] if args else "minilm",
        url=args[1] if len(args) > 1 else None,
        stability_duration_s=30.0,
        risk_window_s=20.0,
    )
    print(json.dumps(result, indent=2, default=str))
