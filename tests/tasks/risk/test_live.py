"""The live assessment's logic without Prefect: evidence to probability, the register's prior as a floor, the GPU
factor from health readings, a risk at high opening one incident, escalation by the response levels, the cycle's
"risk assessed" item, and the incident table of an older database gaining its category column."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from tasks.optimize.checklist import risk_fact
from tasks.policy import PolicyError, default_policy, load_policy
from tasks.risk import evidence as ev
from tasks.risk.assessment import assess_live, changes
from tasks.risk.incidents import IncidentError, IncidentStore
from tasks.risk.response import escalations_due, open_for_high, respond, risk_alert
from tasks.risk.tracking import Recorded

RISK = default_policy().risk
NO_GPU = ev.GpuHealth(1.0, "NVML", "no GPU")
DECLINE = "inference performance decline"


@pytest.fixture()
def store(tmp_path: Path) -> IncidentStore:
    return IncidentStore(f"sqlite:///{tmp_path / 'incidents.db'}")


def _error(rate: float) -> ev.Signal:
    return ev.endpoint_signals(rate, 20.0, 200, None, "none", RISK, "probe", "10 s")[0]


@pytest.mark.parametrize(
    ("rate", "level"), [(0.0, 1), (0.001, 2), (0.0049, 2), (0.005, 3), (0.01, 4), (0.05, 5), (0.5, 5)]
)
def test_an_error_rate_maps_to_the_policys_probability_levels(rate: float, level: int) -> None:
    assert _error(rate).probability == level


def test_live_evidence_raises_a_probability_and_never_lowers_it_below_the_register() -> None:
    quiet = assess_live("m", RISK, {DECLINE: [_error(0.0)]}, NO_GPU)
    row = next(r for r in quiet.risks if r.name == DECLINE)
    assert (row.probability, row.probability_source, row.level) == (3, "static (register)", "medium")
    failing = assess_live("m", RISK, {DECLINE: [_error(0.2)]}, NO_GPU)
    row = next(r for r in failing.risks if r.name == DECLINE)
    assert row.probability == 5 and row.probability_source.startswith("live: error_rate")
    assert row.matrix_score == 15.0 and row.level == "high"  # 5 x 3 x 1.0: high starts at 15
    assert changes(failing, quiet.as_dict())[DECLINE] == "medium -> high (+6.00)"
    assert sum(r.weight for r in failing.risks) == pytest.approx(1.0)


def test_latency_against_the_released_p99_and_no_baseline_said() -> None:
    (slow,) = [
        s for s in ev.endpoint_signals(0.0, 60.0, 10, 25.0, "release", RISK, "p", "w") if s.kind == "latency"
    ]
    assert slow.value == 2.4 and slow.probability == 5 and "2.40x" in slow.note
    (none,) = [
        s
        for s in ev.endpoint_signals(0.0, 60.0, 10, None, "no release yet", RISK, "p", "w")
        if s.kind == "latency"
    ]
    assert none.probability is None and "no release yet" in none.note


def test_incident_and_alert_rates_are_per_30_days_of_the_history_window(store: IncidentStore) -> None:
    now = time.time()
    for k in range(3):
        store.open(
            f"slow {k}", "L2", category="technical/performance", detected_at=now - 86400 * (k + 1), at=now
        )
    store.open("old", "L2", category="technical/performance", detected_at=now - 86400 * 200, at=now)
    store.open("gpu", "L2", category="technical/gpu", at=now)
    rate = ev.incident_rate(store.list(), "technical/performance", RISK, "db", now=now + 1)
    assert rate.value == pytest.approx(3 / 90 * 30) and rate.probability == 3  # 1 per 30 d: third level
    assert ev.alert_rate(None, "technical/gpu", RISK, "Prometheus").probability is None
    assert (
        ev.alert_rate(12.0, "technical/gpu", RISK, "Prometheus").probability == 3
    )  # 4 per 30 d: second threshold


def test_the_gpu_factor_follows_health_and_is_one_without_a_gpu() -> None:
    assert ev.gpu_factor([], RISK).factor == 1.0
    cool = {
        "index": 0,
        "temperature_c": 45.0,
        "slowdown_c": 90.0,
        "ecc_uncorrected": 0,
        "throttle_reasons": (),
    }
    assert ev.gpu_factor([cool], RISK).factor == 0.9
    hot = {**cool, "temperature_c": 87.0}
    assert ev.gpu_factor([cool, hot], RISK).factor == 1.1
    throttled = {**cool, "throttle_reasons": ("hw_thermal_slowdown",)}
    assert ev.gpu_factor([throttled], RISK).factor == 1.1
    failing = {**cool, "ecc_uncorrected": 3}
    health = ev.gpu_factor([cool, failing], RISK)
    assert health.factor == 1.2 and "3 uncorrected ECC" in health.note


def test_a_high_risk_opens_one_incident_while_it_stays_open(store: IncidentStore) -> None:
    high = assess_live("m", RISK, {DECLINE: [_error(0.2)]}, NO_GPU)
    ((risk, incident, new),) = open_for_high(high, store, RISK, "run-1")
    assert new and incident.level == "L2" and incident.category == "technical/performance"
    ((_, again, new),) = open_for_high(high, store, RISK, "run-2")
    assert not new and again.id == incident.id
    alert = risk_alert(risk, incident, RISK, "inferops")
    assert alert["labels"]["incident"] == str(incident.id) and alert["labels"]["severity"] == "critical"
    said = respond(high, store, RISK, "run-3", alertmanager="http://127.0.0.1:9")
    assert said[0].incident == incident.id and "not reachable" in said[0].notified  # recorded either way


def test_an_unmitigated_l2_escalates_after_an_hour_and_a_lower_level_is_refused(store: IncidentStore) -> None:
    t0 = time.time() - 3 * 3600
    incident = store.open("slow", "L2", detected_at=t0, at=t0)
    assert escalations_due([incident], RISK, now=t0 + 59 * 60) == []
    ((due, to, why),) = escalations_due([incident], RISK, now=t0 + 61 * 60)
    assert to == "L3" and "lasts 60 min" in why
    raised = store.escalate(incident.id, to, by="inferops", reason=why, at=t0 + 61 * 60)
    assert raised.level == "L3" and raised.escalations[0][1:3] == ("L2", "L3")
    with pytest.raises(IncidentError, match="at L3: escalating means a higher level"):
        store.escalate(incident.id, "L2", by="inferops", reason="x")
    assert store.get(incident.id).level == "L3"
    assert escalations_due([store.get(incident.id)], RISK, now=t0 + 3 * 3600) == []  # L3 escalates by hand


def test_the_cycles_risk_item_wants_a_recent_assessment_without_a_high_risk() -> None:
    now = time.time()
    fine = Recorded("abcdef123", now - 86400, "medium", [], {})
    assert risk_fact(fine, 31, None)[0]
    assert not risk_fact(None, 31, None)[0]
    ok, said = risk_fact(Recorded("abcdef123", now - 40 * 86400, "medium", [], {}), 31, None)
    assert not ok and "older than the policy's 31 d" in said
    ok, said = risk_fact(Recorded("abcdef123", now, "medium", [DECLINE], {}), 31, None)
    assert not ok and DECLINE in said
    assert not risk_fact(fine, 31, "error-rate alert")[0]


def test_an_older_incident_database_gains_the_category_column_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE inferops_incidents (id INTEGER PRIMARY KEY, title VARCHAR(300) NOT NULL, level VARCHAR(4) "
            "NOT NULL, state VARCHAR(20) NOT NULL, model VARCHAR(200), source VARCHAR(300), opened_at FLOAT NOT NULL, "
            "CONSTRAINT uq_incident_source UNIQUE (source))"
        )
        db.execute("INSERT INTO inferops_incidents VALUES (1, 'old one', 'L1', 'notified', 'm', 's', 1.0)")
    store = IncidentStore(f"sqlite:///{path}")
    old = store.get(1)
    assert old.title == "old one" and old.category is None
    new = store.open("new one", "L2", category="technical/gpu")
    assert store.get(new.id).category == "technical/gpu"


@pytest.mark.parametrize(
    ("risk", "named"),
    [
        (
            {
                "risk_register": [
                    {
                        "name": "x",
                        "probability": 2,
                        "impact": 2,
                        "weight": 1,
                        "gpu_factor": 1.0,
                        "signals": ["tea_leaves"],
                    }
                ]
            },
            "risk 'x': signals 'tea_leaves' unknown",
        ),
        ({"live": {"high_risk_level": "L9"}}, "live.high_risk_level 'L9' is not a response level"),
        ({"live": {"probabilities": {"error_rate": [0.05, 0.01, 0.1, 0.2]}}}, "probabilities.error_rate"),
        ({"response_levels": {"L2": {"escalate_to": "L7"}}}, "response_levels.L2.escalate_to 'L7'"),
    ],
)
def test_a_bad_live_risk_policy_is_refused_naming_the_key(tmp_path: Path, risk: dict, named: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"risk": risk}))
    with pytest.raises(PolicyError, match=re.escape(named)):
        load_policy(path)


def test_the_receiver_files_no_second_incident_for_a_risk_alert_and_carries_an_alerts_category(
    store: IncidentStore,
) -> None:
    import json

    from tasks.monitoring.remediation import parse_notification, record_incident

    high = assess_live("m", RISK, {DECLINE: [_error(0.2)]}, NO_GPU)
    ((risk, incident, _),) = open_for_high(high, store, RISK, "run-1")
    posted = risk_alert(risk, incident, RISK, "inferops")
    as_sent = {  # what Alertmanager's webhook makes of the posted alert
        "status": "firing",
        "labels": posted["labels"],
        "annotations": posted["annotations"],
        "startsAt": "2026-12-01T03:00:00Z",
        "fingerprint": "beef",
    }
    event = parse_notification(json.dumps({"version": "4", "alerts": [as_sent]}).encode())[0]
    assert record_incident(event, store, RISK.alert_levels).id == incident.id
    assert len(store.list()) == 1
    ruled = {**as_sent, "labels": {**as_sent["labels"], "incident": "", "risk_category": "technical/gpu"}}
    event = parse_notification(json.dumps({"version": "4", "alerts": [ruled]}).encode())[0]
    filed = record_incident(event, store, RISK.alert_levels)
    assert filed.id != incident.id and filed.category == "technical/gpu"
