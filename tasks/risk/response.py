"""What an assessment does about what it found (SPEC §6, seed 7.6.4): a risk at high opens an incident at the
policy's level (once while it stays open), open incidents escalate by the response levels' rules, and each new
incident is notified through the monitoring channels: an alert posted to Alertmanager, routed like any other."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from tasks.policy import Risk
from tasks.risk.assessment import AssessedRisk, LiveAssessment
from tasks.risk.incidents import AUTOMATIC, STEPS, Incident, IncidentStore

ALERT_RISK_HIGH = "RiskAssessedHigh"  # the alert an assessment raises in Alertmanager for a risk at high
NOTIFY_TIMEOUT_S = 10.0


def risk_source(model: str, risk: str) -> str:
    """The source prefix of the incidents a risk of a model opens; an assessment appends its own id."""
    return f"risk:{model}:{risk}:"


@dataclass(frozen=True)
class Response:
    risk: str
    incident: int
    level: str
    opened: bool  # False: an incident of this risk was already open
    notified: str  # how the channels were told, or why not

    def row(self) -> dict[str, Any]:
        return {
            "risk": self.risk,
            "incident": self.incident,
            "level": self.level,
            "opened": "new" if self.opened else "already open",
            "notified": self.notified,
        }


def open_for_high(
    assessment: LiveAssessment, store: IncidentStore, policy: Risk, assessment_id: str
) -> list[tuple[AssessedRisk, Incident, bool]]:
    """An incident for each risk at high, unless one for that risk is still open (then that one)."""
    out = []
    level = policy.live.high_risk_level
    for risk in assessment.high():
        prefix = risk_source(assessment.model, risk.name)
        already = store.open_incidents(prefix)
        if already:
            out.append((risk, already[0], False))
            continue
        spec = policy.response_levels[level]
        incident = store.open(
            f"risk at high: {risk.name} ({risk.matrix_score:g}) on {assessment.model}",
            level,
            model=assessment.model,
            source=prefix + assessment_id,
            category=risk.category,
            detected_at=min(assessment.at, time.time()),
            note=f"{risk.probability_source}; {spec.team} respond within {spec.respond_within_min:g} min",
        )
        out.append((risk, incident, True))
    return out


def escalations_due(
    incidents: list[Incident], policy: Risk, now: float | None = None
) -> list[tuple[Incident, str, str]]:
    """Open incidents not yet mitigated that have outlasted their level's `escalate_after_min`: (incident, next
    level, why). Rules no record measures (impact grows, core business hit) stay with the people responding."""
    now = time.time() if now is None else now
    due = []
    for incident in incidents:
        spec = policy.response_levels.get(incident.level)
        if spec is None or spec.escalate_to is None or spec.escalate_after_min is None:
            continue
        if STEPS.index(incident.state) >= STEPS.index("mitigated"):
            continue
        since = incident.escalations[-1][0] if incident.escalations else incident.opened_at
        lasted = (now - since) / 60
        if lasted >= spec.escalate_after_min:
            due.append(
                (
                    incident,
                    spec.escalate_to,
                    f"{incident.level} unmitigated for {lasted:.0f} min (SPEC §6: escalate if it lasts "
                    f"{spec.escalate_after_min:g} min)",
                )
            )
    return due


def escalate_due(store: IncidentStore, policy: Risk, now: float | None = None) -> list[Incident]:
    return [
        store.escalate(i.id, to, by=AUTOMATIC, reason=why, at=now)
        for i, to, why in escalations_due(store.open_incidents(), policy, now)
    ]


def severity_of(level: str, policy: Risk) -> str:
    """The alert severity Alertmanager routes a response level by (the inverse of policy risk.alert_levels)."""
    for severity, mapped in policy.alert_levels.items():
        if mapped == level:
            return severity
    return max(policy.alert_levels, key=lambda s: policy.alert_levels[s])  # above every mapped level: the top


def risk_alert(risk: AssessedRisk, incident: Incident, policy: Risk, app: str) -> dict[str, Any]:
    """Alertmanager's v2 alert for a risk at high: labelled with its incident, so the receiver files no second."""
    return {
        "labels": {
            "alertname": ALERT_RISK_HIGH,
            "severity": severity_of(incident.level, policy),
            "application": app,
            "model": incident.model or "",
            "risk": risk.name,
            "risk_category": risk.category or "",
            "incident": str(incident.id),
        },
        "annotations": {
            "summary": incident.title,
            "description": f"{risk.probability_source}; incident {incident.id} at {incident.level}",
        },
        "startsAt": datetime.fromtimestamp(incident.opened_at, UTC).isoformat(),
    }


def notify(alertmanager: str | None, alerts: list[dict[str, Any]]) -> str:
    """Post the alerts to Alertmanager (`/api/v2/alerts`); a sentence on what happened. Not reachable is said, not
    raised: the incident is recorded either way, and the next assessment posts it again while it is open."""
    if not alerts:
        return "nothing to notify"
    if not alertmanager:
        return "no Alertmanager given (--alertmanager): recorded as an incident only"
    url = alertmanager.rstrip("/") + "/api/v2/alerts"
    try:
        reply = httpx.post(url, json=alerts, timeout=NOTIFY_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return f"Alertmanager {alertmanager} not reachable ({type(exc).__name__}: {exc})"
    if reply.status_code != 200:
        return f"Alertmanager {alertmanager} answered {reply.status_code}: {reply.text[:200]}"
    return f"posted to Alertmanager {alertmanager}"


def respond(
    assessment: LiveAssessment,
    store: IncidentStore,
    policy: Risk,
    assessment_id: str,
    alertmanager: str | None = None,
    app: str = "inferops",
) -> list[Response]:
    """Open (or find) the incident of each risk at high, notify the channels of every one still open, escalate."""
    found = open_for_high(assessment, store, policy, assessment_id)
    said = notify(alertmanager, [risk_alert(r, i, policy, app) for r, i, _ in found])
    escalate_due(store, policy)
    return [Response(r.name, i.id, store.get(i.id).level, new, said) for r, i, new in found]
