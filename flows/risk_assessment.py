"""Risk assessment (seed 7.6, SPEC §6) as one flow: the register's risks, each probability raised by what the service
shows (incidents and alerts of its class, a probe of the live endpoint, Prometheus, the latest capacity plan, the
fidelity probe), GPU health as the factor, scored on the seed's matrix; recorded with its heat map and the change
against the previous assessment; a risk at high opens an incident and is notified. Monthly, on demand, and after an
incident is resolved (prefect.yaml). Orchestration only: the logic lives in tasks/risk."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from serving.app import PRODUCTION_APP
from serving.auth import client_key
from serving.client import EndpointError, InferopsClient
from serving.network import checked_url
from tasks.monitoring.collect import MonitoringError, instant, probes
from tasks.policy import Policy, default_policy
from tasks.records import names, runs
from tasks.release import checks as gate_checks
from tasks.risk import evidence as ev
from tasks.risk import tracking
from tasks.risk.assessment import LiveAssessment, assess_live, sentence, table_rows
from tasks.risk.incidents import IncidentStore
from tasks.risk.response import respond


@task(name="probe-endpoint", task_run_name="probe {model} at {url}")
def probe_endpoint(url: str, api_key: str | None, model: str, policy: Policy) -> dict[str, Any]:
    """A probe load at the gate's target rate for `risk.live.probe_s`: what a user of the endpoint sees now. An
    endpoint that does not answer at all is an error rate of 1, not a failed assessment."""
    gate, seconds = policy.rollout_gate, policy.risk.live.probe_s
    try:
        with InferopsClient(url, api_key) as client:
            # a second at the rate first, discarded: connections and the replica's first batches are not the risk
            gate_checks.observe(
                client,
                model,
                rate_rps=gate.target_qps,
                duration_s=policy.risk.live.probe_warmup_s,
                sla_p99_ms=gate.sla_p99_ms,
            )
            seen, load, _ = gate_checks.observe(
                client, model, rate_rps=gate.target_qps, duration_s=seconds, sla_p99_ms=gate.sla_p99_ms
            )
    except (EndpointError, httpx.HTTPError) as exc:
        return {"error_rate": 1.0, "p99_ms": math.inf, "requests": 0, "down": f"{type(exc).__name__}: {exc}"}
    return {"error_rate": seen.error_rate, "p99_ms": seen.p99_ms, "requests": load.sent, "down": None}


def _read(prometheus: str, query: str) -> float | None:
    try:
        found = instant(prometheus, query)
    except MonitoringError as exc:
        get_run_logger().warning("Prometheus %s: %s", prometheus, exc)
        return None
    return found[0][1] if found and math.isfinite(found[0][1]) else None


@task(name="gather-evidence")
def gather_evidence(
    model: str,
    url: str | None,
    api_key: str | None,
    prometheus: str | None,
    app: str,
    policy: Policy,
) -> dict[str, list[ev.Signal]]:
    """Every register risk's live inputs, each with its source and window (tasks/risk/evidence.py)."""
    risk = policy.risk
    store = IncidentStore()
    incidents = store.list()
    baseline_p99, baseline_from = tracking.released_p99(model)
    endpoint: list[ev.Signal] = []
    if url:
        seen = probe_endpoint(url, api_key, model, policy)
        where = f"probe of {url} at {policy.rollout_gate.target_qps:g} req/s"
        if seen["down"]:
            where += f" (no answer: {seen['down']})"
        endpoint += ev.endpoint_signals(
            seen["error_rate"],
            seen["p99_ms"],
            seen["requests"],
            baseline_p99,
            baseline_from,
            risk,
            where,
            f"{risk.live.probe_s:g} s now",
        )
    if prometheus:
        table = probes(app, model)
        errors, p99 = (
            _read(prometheus, table["error_rate"].query),
            _read(prometheus, table["response_time"].query),
        )
        if errors is not None and p99 is not None:
            endpoint += ev.endpoint_signals(
                errors,
                p99,
                0,
                baseline_p99,
                baseline_from,
                risk,
                f"Prometheus {prometheus} ({app})",
                "last 5m",
            )
    if not endpoint:
        why = "no endpoint given (--url) and no Prometheus traffic: the endpoint's health not read"
        endpoint = [ev.no_data("error_rate", "-", why), ev.no_data("latency", "-", why)]
    demand, knee, units, plan_from, confidence = tracking.latest_plan(model)
    headroom = ev.headroom_signal(demand, knee, units, risk, plan_from, confidence)
    agreement = _read(prometheus, probes(app, model)["accuracy"].query) if prometheus else None
    fidelity = ev.fidelity_signal(
        agreement, risk, f"Prometheus {prometheus}" if prometheus else "no Prometheus given"
    )
    categories = {e.category for e in risk.risk_register if e.category and "alerts" in e.signals}
    fired = {c: _read(prometheus, ev.alerts_query(c, risk)) for c in categories} if prometheus else {}
    return ev.per_risk(
        risk,
        [*endpoint, headroom, fidelity],
        incidents,
        f"incident records ({store.url})",
        fired,
        f"Prometheus {prometheus or '(none given)'}",
    )


@task(name="gpu-health")
def gpu_health(policy: Policy) -> ev.GpuHealth:
    readings, where = ev.nvml_readings()
    health = ev.gpu_factor(readings, policy.risk)
    return health if readings else ev.GpuHealth(health.factor, where, health.note)


@task(name="score-risks")
def score(
    model: str, evidence: dict[str, list[ev.Signal]], gpu: ev.GpuHealth, policy: Policy
) -> LiveAssessment:
    return assess_live(model, policy.risk, evidence, gpu)


@task(name="record-assessment")
def record(assessment: LiveAssessment, policy: Policy) -> tuple[str, list[dict[str, Any]]]:
    """The MLflow run (scores, evidence, heat map) and the Prefect table, both with the change since the last one."""
    previous = tracking.latest_assessment(assessment.model)
    before = previous.assessment if previous else None
    run_id = runs.log_run(tracking.assessment_record(assessment, policy.risk, before))
    rows = table_rows(assessment, before)
    create_table_artifact(
        key=names.artifact_key("risk", assessment.model),
        table=rows,
        description=sentence(assessment),
    )
    return run_id, rows


@task(name="respond-to-risks")
def respond_to(
    assessment: LiveAssessment, run_id: str, alertmanager: str | None, app: str, policy: Policy
) -> list[dict[str, Any]]:
    return [r.row() for r in respond(assessment, IncidentStore(), policy.risk, run_id, alertmanager, app)]


@flow(name="risk-assessment", log_prints=True)
def risk_assessment(
    model: str = "minilm",
    url: str | None = None,
    api_key: str | None = None,
    prometheus: str | None = None,
    alertmanager: str | None = None,
    app: str = PRODUCTION_APP,
) -> dict[str, Any]:
    """Assess the register's risks of `model` on live evidence: the endpoint at `url` probed, `prometheus`'s alerts,
    traffic and fidelity read where given, the incident records and latest capacity plan always; a risk at high
    opens an incident (notified through `alertmanager` where given)."""
    policy = default_policy()
    url = checked_url(url, "url")  # None: not read; "" (a deployment's unset variable): refused by name
    prometheus = checked_url(prometheus, "prometheus")
    alertmanager = checked_url(alertmanager, "alertmanager")
    evidence = gather_evidence(model, url, client_key(api_key) if url else None, prometheus, app, policy)
    assessment = score(model, evidence, gpu_health(policy), policy)
    run_id, rows = record(assessment, policy)
    responses = respond_to(assessment, run_id, alertmanager, app, policy)
    get_run_logger().info(sentence(assessment))
    return {
        "model": model,
        "mlflow_run_id": run_id,
        "overall": assessment.composite,
        "overall_level": assessment.overall_level,
        "high": [r.name for r in assessment.high()],
        "table": rows,
        "gpu": assessment.gpu.as_dict(),
        "incidents": responses,
        "assessment": assessment.as_dict(),
    }


if __name__ == "__main__":
    print(json.dumps(risk_assessment(), indent=2, default=str))
