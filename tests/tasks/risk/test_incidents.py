"""Incident records: the seed's steps in order in a real SQL database, refusals that change nothing, MTTR, MTTA,
availability and automation rate computed from the steps, and the incidents an alert firing opens and resolves."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tasks.monitoring.remediation import mitigated_incident, parse_notification, record_incident
from tasks.policy import default_policy
from tasks.risk.incidents import AUTOMATIC, STEPS, IncidentError, IncidentStore, figures

LEVELS = default_policy().risk.alert_levels


@pytest.fixture()
def store(tmp_path: Path) -> IncidentStore:
    return IncidentStore(f"sqlite:///{tmp_path / 'incidents.db'}")


def test_an_incident_goes_through_the_seeds_steps_in_order(store: IncidentStore) -> None:
    t0 = 1_700_000_000.0
    incident = store.open(
        "served P99 off its baseline", "L2", model="minilm", detected_at=t0, by="alice", at=t0
    )
    assert incident.state == "notified" and [s.step for s in incident.steps] == list(STEPS[:4])
    assert incident.at("detected") == t0
    for minutes, step in ((4, "responding"), (6, "located"), (9, "mitigated"), (15, "resolved")):
        incident = store.advance(incident.id, step, by="alice", at=t0 + minutes * 60)
    assert incident.state == "resolved" and incident.next_step() == "recovered"
    row = incident.row()
    assert row["ack min"] == 4.0 and row["repair min"] == 15.0


def test_a_step_out_of_order_is_refused_naming_the_next_and_changes_nothing(
    store: IncidentStore, tmp_path: Path
) -> None:
    incident = store.open("replica killed", "L3")
    with pytest.raises(
        IncidentError,
        match=r"incident \d+ is notified: it cannot go to 'resolved'; the next step is 'responding'",
    ):
        store.advance(incident.id, "resolved", by="bob")
    with pytest.raises(IncidentError, match="not one of"):
        store.advance(incident.id, "fixed", by="bob")
    with pytest.raises(IncidentError, match="does not exist"):
        store.advance(incident.id + 100, "responding", by="bob")
    with pytest.raises(IncidentError, match="level 'L9'"):
        store.open("x", "L9")
    after = store.get(incident.id)
    assert after.state == "notified" and len(after.steps) == 4
    # straight from the database: the refused steps wrote nothing
    rows = (
        sqlite3.connect(tmp_path / "incidents.db")
        .execute("select count(*) from inferops_incident_steps")
        .fetchone()
    )
    assert rows == (4,)


def test_figures_come_from_the_recorded_steps() -> None:
    policy = default_policy().risk
    with_store = IncidentStore("sqlite://")  # in memory: the figures only read what the steps say
    day = 86400.0
    now = 1_700_000_000.0
    quick = with_store.open("slow release", "L2", detected_at=now - day, at=now - day)
    with_store.advance_to(quick.id, "mitigated", by=AUTOMATIC, at=now - day + 60)
    with_store.advance(quick.id, "resolved", by=AUTOMATIC, at=now - day + 300)  # 5 min
    outage = with_store.open("service down", "L3", detected_at=now - 2 * day, at=now - 2 * day)
    for minutes, step in (
        (2, "responding"),
        (10, "located"),
        (20, "mitigated"),
        (25, "resolved"),
        (30, "recovered"),
    ):
        with_store.advance(outage.id, step, by="carol", at=now - 2 * day + minutes * 60)
    # a second incident of the same outage, and one that began before the window and is still open
    same = with_store.open(
        "replicas restarting", "L4", detected_at=now - 2 * day + 600, at=now - 2 * day + 600
    )
    with_store.advance_to(same.id, "resolved", by="carol", at=now - 2 * day + 1200)
    before = with_store.open("node lost", "L3", detected_at=now - 40 * day, at=now - 40 * day)
    found = figures([quick, outage, same, before], policy, window_s=30 * day, now=now)
    assert found.availability == 0.0  # the old one, never recovered, is down the whole window
    found = figures([with_store.get(i.id) for i in (quick, outage, same)], policy, window_s=30 * day, now=now)
    assert found.incidents == 3 and found.resolved == 3
    assert found.mttr_min == pytest.approx((5 + 25 + 10) / 3, abs=0.01)
    assert found.mtta_min == pytest.approx((1 + 2 + 10) / 3, abs=0.01)
    # the L3 outage's 30 min, the L4 inside it counted once, the L2 no outage
    assert found.availability == pytest.approx(1 - 30 * 60 / (30 * day))
    assert found.automation_rate == pytest.approx(1 / 3, abs=1e-3)
    assert any("MTTR 13.3 min (meets the < 20 min target)" in s for s in found.sentences())
    with pytest.raises(IncidentError, match="window_s"):
        figures([], policy, window_s=0)


def alert(status: str = "firing", severity: str = "critical") -> bytes:
    body = {
        "status": status,
        "labels": {
            "alertname": "ServeP99OffBaseline",
            "severity": severity,
            "model": "digits-cnn",
            "action": "rollback",
        },
        "annotations": {"summary": "served P99 off baseline"},
        "startsAt": "2026-12-01T03:00:00.123456789Z",
        "fingerprint": "f00d",
    }
    return json.dumps({"version": "4", "alerts": [body]}).encode()


def test_an_alert_firing_opens_one_incident_and_its_automatic_mitigation_resolves_it(
    store: IncidentStore,
) -> None:
    firing = parse_notification(alert())[0]
    opened = record_incident(firing, store, LEVELS)
    assert opened.level == "L2" and opened.source == firing.key
    assert opened.at("detected") == pytest.approx(1796094000.123456)  # the alert's own start, nanoseconds cut
    assert record_incident(firing, store, LEVELS).id == opened.id  # re-sent: the same incident
    # resolved before anyone mitigated it: left for a person
    resolved = parse_notification(alert("resolved"))[0]
    assert record_incident(resolved, store, LEVELS).state == "notified"
    done = mitigated_incident(firing, store, LEVELS, "rollback: v4 -> v3")
    assert done.state == "mitigated" and done.by("mitigated") == AUTOMATIC
    assert record_incident(resolved, store, LEVELS).state == "resolved"
    assert len(store.list()) == 1
    with pytest.raises(ValueError, match="severity 'page'"):
        record_incident(parse_notification(alert(severity="page"))[0], store, LEVELS)
