"""The alert receiver: bearer authentication, Alertmanager's payload read field by field, one remediation run per
alert firing however often it is delivered, and nothing started for a forged, replayed or malformed notification."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tasks.monitoring.receiver import create_receiver
from tasks.monitoring.remediation import (
    AlertEvent,
    Ledger,
    NotificationRefused,
    actionable,
    authenticate,
    event_from,
    parse_notification,
    read_tokens,
    risk_action,
    token_file,
)

TOKEN = "receiver-test-token-0123456789"


def alert(
    name: str = "ServeP99OffBaseline", status: str = "firing", fingerprint: str = "f00d", **labels: str
) -> dict:
    return {
        "status": status,
        "labels": {
            "alertname": name,
            "severity": "critical",
            "application": "inferops",
            "model": "digits-cnn",
            "action": "rollback",
            **labels,
        },
        "annotations": {"summary": "P99 off baseline", "value": "512.5", "threshold": "300"},
        "startsAt": "2026-12-02T03:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "receiver": "inferops-critical",
            "groupKey": "{}:{}",
            "alerts": list(alerts),
        }
    ).encode()


class Starts:
    """What the receiver asked to start: the remediation deployment's runs, as ids."""

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    async def __call__(self, event: AlertEvent) -> str:
        self.events.append(event)
        return f"run-{len(self.events)}"


@pytest.fixture()
def receiver(tmp_path: Path) -> tuple[TestClient, Starts, Ledger]:
    starts, ledger = Starts(), Ledger(tmp_path / "ledger.jsonl")
    return TestClient(create_receiver([TOKEN], starts, ledger)), starts, ledger


def post(client: TestClient, body: bytes, token: str | None = TOKEN) -> Any:
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return client.post("/alerts", content=body, headers=headers)


def test_a_firing_rollback_alert_starts_one_run_and_its_redelivery_none(receiver: Any) -> None:
    client, starts, ledger = receiver
    first = post(client, payload(alert()))
    assert first.status_code == 200
    assert [s["flow_run"] for s in first.json()["started"]] == ["run-1"]
    assert starts.events[0].action == "rollback" and starts.events[0].model == "digits-cnn"
    # Alertmanager re-sends a firing alert every repeat interval; a replayed payload is the same firing too
    again = post(client, payload(alert()))
    assert again.json()["started"] == [] and [a["key"] for a in again.json()["already_handled"]] == [
        "f00d@2026-12-02T03:00:00Z"
    ]
    assert len(starts.events) == 1 and [e["flow_run"] for e in ledger.entries()] == ["run-1"]
    # the same alert firing again later is a new firing: acted on again
    later = alert()
    later["startsAt"] = "2026-12-02T05:00:00Z"
    assert len(post(client, payload(later)).json()["started"]) == 1


def test_forged_and_missing_tokens_are_refused_and_start_nothing(receiver: Any) -> None:
    client, starts, ledger = receiver
    for token in (None, "", "not-the-token-at-all", TOKEN + "x"):
        answer = post(client, payload(alert()), token=token)
        assert answer.status_code == 401, token
    basic = client.post("/alerts", content=payload(alert()), headers={"authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert starts.events == [] and ledger.entries() == []


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"version": "3", "alerts": []}).encode(), "version '3'"),
        (json.dumps({"version": "4"}).encode(), "payload.alerts is missing"),
        (payload({**alert(), "fingerprint": ""}), "alerts[0].fingerprint"),
        (payload({**alert(), "status": "pending"}), "alerts[0].status 'pending'"),
        (payload({k: v for k, v in alert().items() if k != "startsAt"}), "alerts[0].startsAt is missing"),
        (
            payload({**alert(), "startsAt": "yesterday"}),
            "alerts[0].startsAt 'yesterday' is not an RFC 3339 time",
        ),
        (payload({**alert(), "annotations": ["a"]}), "alerts[0].annotations is list"),
        (payload({**alert(), "labels": {"severity": "critical"}}), "alerts[0].labels.alertname is missing"),
    ],
)
def test_a_payload_that_is_not_alertmanagers_is_refused_naming_the_field(
    receiver: Any, body: bytes, names: str
) -> None:
    client, starts, ledger = receiver
    answer = post(client, body)
    assert answer.status_code == 400 and names in answer.json()["error"]
    assert starts.events == [] and ledger.entries() == []


def test_resolved_unlabelled_and_unknown_actions_are_left_to_a_person(receiver: Any) -> None:
    client, starts, _ = receiver
    no_action = alert("ServeP99OverSLA")
    del no_action["labels"]["action"]
    answer = post(
        client, payload(alert(status="resolved"), no_action, alert("Odd", action="reboot", fingerprint="b"))
    )
    reasons = [i["reason"] for i in answer.json()["ignored"]]
    assert answer.status_code == 200 and starts.events == []
    assert reasons[0].startswith("resolved") and "names no action" in reasons[1] and "'reboot'" in reasons[2]


def test_a_start_that_fails_is_not_recorded_so_alertmanagers_retry_acts(tmp_path: Path) -> None:
    ledger, calls = Ledger(tmp_path / "ledger.jsonl"), []

    async def down(event: AlertEvent) -> str:
        calls.append(event)
        if len(calls) == 1:
            raise ConnectionError("Prefect API unreachable")
        return "run-after-retry"

    client = TestClient(create_receiver([TOKEN], down, ledger))
    failed = post(client, payload(alert()))
    assert failed.status_code == 503 and "Prefect API unreachable" in failed.json()["error"]
    assert ledger.entries() == []
    assert post(client, payload(alert())).json()["started"][0]["flow_run"] == "run-after-retry"


def test_concurrent_deliveries_of_one_firing_start_one_run(tmp_path: Path) -> None:
    ledger, started = Ledger(tmp_path / "ledger.jsonl"), []

    async def slow_start(event: AlertEvent) -> str:
        started.append(event)
        await asyncio.sleep(0.3)  # a start that takes a while: the other deliveries arrive meanwhile
        return "run-1"

    client = TestClient(create_receiver([TOKEN], slow_start, ledger))
    answers: list[Any] = []
    threads = [
        threading.Thread(target=lambda: answers.append(post(client, payload(alert())))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 1 and [e["flow_run"] for e in ledger.entries()] == ["run-1"]
    assert sorted(len(a.json()["started"]) for a in answers) == [0, 0, 0, 1]


def test_a_start_that_hangs_is_cut_and_answered_503_so_alertmanager_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.monitoring import receiver

    monkeypatch.setattr(receiver, "START_TIMEOUT_S", 0.2)

    async def hangs(event: AlertEvent) -> str:
        await asyncio.sleep(30)
        return "never"

    ledger = Ledger(tmp_path / "ledger.jsonl")
    answer = post(TestClient(create_receiver([TOKEN], hangs, ledger)), payload(alert()))
    assert answer.status_code == 503 and "TimeoutError" in answer.json()["error"]
    assert ledger.entries() == []


def test_bearer_tokens_and_token_files(tmp_path: Path) -> None:
    authenticate(f"Bearer {TOKEN}", [TOKEN])
    with pytest.raises(NotificationRefused) as refused:
        authenticate("Bearer nope", [TOKEN])
    assert refused.value.status == 401
    path, made = token_file(tmp_path / "keys" / "token")
    assert made and oct(path.stat().st_mode & 0o777) == "0o600"
    assert token_file(path) == (path, False)  # never replaced
    assert len(read_tokens(path)[0]) >= 32
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ValueError, match="at least 16"):
        read_tokens(short)
    with pytest.raises(ValueError, match="cannot be read"):
        read_tokens(tmp_path / "absent")


def test_an_alert_becomes_the_release_risk_action_it_names() -> None:
    event = parse_notification(payload(alert()))[0]
    assert actionable(event) is None
    action = risk_action(event)
    assert (action.level, action.action, action.observed, action.threshold) == (
        "high",
        "rollback",
        512.5,
        300.0,
    )
    assert "ServeP99OffBaseline" in action.reason
    assert event_from(event.as_dict()) == event
    freeze = risk_action(parse_notification(payload(alert("ServeErrorRateHigh", action="freeze")))[0])
    assert (freeze.level, freeze.action) == ("medium", "alert_and_freeze")
    with pytest.raises(ValueError, match="starts no remediation"):
        risk_action(parse_notification(payload(alert(status="resolved")))[0])


def test_every_firing_opens_its_incident_and_one_inferops_mitigated_is_resolved_with_its_alert(
    tmp_path: Path,
) -> None:
    from tasks.monitoring.remediation import mitigated_incident
    from tasks.policy import default_policy
    from tasks.risk.incidents import IncidentStore

    store, levels = (
        IncidentStore(f"sqlite:///{tmp_path / 'incidents.db'}"),
        default_policy().risk.alert_levels,
    )
    starts = Starts()
    client = TestClient(create_receiver([TOKEN], starts, Ledger(tmp_path / "l.jsonl"), store, levels))
    quiet = alert("ServeP99OverSLA", fingerprint="0a", severity="warning")
    del quiet["labels"]["action"]
    answer = post(client, payload(alert(), quiet)).json()
    rolled, watched = answer["started"][0]["incident"], answer["ignored"][0]["incident"]
    assert store.get(rolled).level == "L2" and store.get(watched).level == "L1"  # critical, warning
    assert post(client, payload(alert())).json()["already_handled"][0]["incident"] == rolled  # the same one
    mitigated_incident(starts.events[0], store, levels, "rollback: v4 -> v3")  # what the remediation run does
    post(client, payload(alert(status="resolved"), {**quiet, "status": "resolved"}))
    assert store.get(rolled).state == "resolved" and store.get(rolled).by("resolved") == "inferops"
    assert store.get(watched).state == "notified"  # nobody mitigated it: a person closes it
