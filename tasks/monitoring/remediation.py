"""Automatic remediation (AIOps L5, SPEC §2 and §4): what an Alertmanager notification asks inferops to do.

The rules file labels the alerts that call for an action (`action="rollback"` on the served P99 off its baseline,
`"freeze"` on the error ratio, `"scale_out"` on replica utilisation). Alertmanager posts its webhook payload to the
receiver (tasks/monitoring/receiver.py); this module authenticates it (a bearer token shared with Alertmanager),
reads it (every field it needs, refused by name when missing), decides which alerts call for an action, and keeps
the ledger of alerts already acted on: Alertmanager re-sends a firing alert every repeat interval and a replayed
payload is the same alert again, so each firing of an alert (its fingerprint and start) starts one run, once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serving.settings import get_settings

# the action label -> SPEC §2's risk level and the rollout-risk action that carries it out
ACTIONS = {"rollback": "high", "freeze": "medium", "scale_out": "low"}
RISK_ACTIONS = {"rollback": "rollback", "freeze": "alert_and_freeze", "scale_out": "scale_out"}
PAYLOAD_VERSION = "4"  # Alertmanager's webhook payload version (prometheus/alertmanager notify/webhook)
MAX_PAYLOAD_BYTES = 1 << 20


class NotificationRefused(ValueError):
    """A notification the receiver will not act on; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AlertEvent:
    """One alert of a notification: what fired, for which deployment, and the action its rule names."""

    alertname: str
    status: str  # firing | resolved
    fingerprint: str
    starts_at: str
    labels: dict[str, str]
    annotations: dict[str, str]

    @property
    def key(self) -> str:
        """One firing of one alert: Alertmanager's fingerprint of its labels and when it started."""
        return f"{self.fingerprint}@{self.starts_at}"

    @property
    def action(self) -> str | None:
        return self.labels.get("action")

    @property
    def model(self) -> str | None:
        return self.labels.get("model")

    def started(self) -> float:
        """When the alert started firing (epoch seconds), from Alertmanager's startsAt (checked when read)."""
        return _epoch(self.starts_at)

    def number(self, annotation: str) -> float:
        """An annotation the rules file fills with a number (`value`, `threshold`); NaN when absent or not one."""
        try:
            return float(self.annotations.get(annotation, "nan"))
        except ValueError:
            return math.nan

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}


def read_tokens(path: str | Path) -> list[str]:
    """The receiver's bearer tokens, one per line. Alertmanager's `credentials_file` sends the whole file as one
    token: give it a file with one line; several lines are for rotating the receiver (old and new accepted)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(
            f"token file {path} cannot be read ({exc.strerror}): write the shared secret there, one line, and give "
            "Alertmanager the same file as the webhook's credentials_file"
        ) from exc
    tokens = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not tokens:
        raise ValueError(f"token file {path} holds no token: write the shared secret there, one line")
    short = [t for t in tokens if len(t) < 16]
    if short:
        raise ValueError(
            f"token file {path} has a token of {len(short[0])} characters: use at least 16 "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return tokens


def token_file(path: str | Path | None = None) -> tuple[Path, bool]:
    """The receiver's token file (default: the data dir's keys/alert-receiver-token), made with a new random token
    (0600, never replacing one) when absent; returns it and whether it was made now."""
    import secrets

    path = Path(path) if path else get_settings().data_dir / "keys" / "alert-receiver-token"
    if path.exists():
        return path, False
    if not path.parent.exists():
        path.parent.mkdir(parents=True)
        os.chmod(path.parent, 0o700)  # only a folder made here: never loosen or tighten someone else's
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
    return path, True


def authenticate(authorization: str | None, tokens: Sequence[str]) -> None:
    """Refuse (401) a request without `Authorization: Bearer <one of tokens>`; compared in constant time."""
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise NotificationRefused(
            "no bearer token: the receiver takes Alertmanager's webhook with "
            "http_config.authorization (type Bearer, the receiver's token file)",
            401,
        )
    given = presented.strip().encode()
    if not any(hmac.compare_digest(given, t.encode()) for t in tokens):
        raise NotificationRefused("bearer token is not the receiver's: nothing was done", 401)


def _field(obj: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or (kind is str and not value):
        raise NotificationRefused(
            f"{where}.{name} is {'missing' if value is None else repr(value)[:80]}: Alertmanager's webhook "
            f"payload (version {PAYLOAD_VERSION}) has a {kind.__name__} there; is this an Alertmanager webhook?"
        )
    return value


def _epoch(text: str) -> float:
    """RFC 3339 (Alertmanager writes up to 9 fractional digits) as epoch seconds; ValueError if it is not one."""
    from datetime import datetime

    parsed = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("no time zone")
    return parsed.timestamp()


def _timestamp(text: str, where: str) -> str:
    try:
        _epoch(text)
    except ValueError as exc:
        raise NotificationRefused(
            f"{where} {text!r} is not an RFC 3339 time ({exc}): Alertmanager writes e.g. 2026-12-02T03:00:00.123Z"
        ) from None
    return text


def parse_notification(body: bytes) -> list[AlertEvent]:
    """The alerts of an Alertmanager webhook payload; a payload that is not one is refused, naming the field."""
    if len(body) > MAX_PAYLOAD_BYTES:
        raise NotificationRefused(f"payload of {len(body)} bytes is over {MAX_PAYLOAD_BYTES}", 413)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotificationRefused(
            f"payload is not JSON ({exc}): send Alertmanager's webhook payload"
        ) from exc
    if not isinstance(payload, dict):
        raise NotificationRefused("payload is not a JSON object: send Alertmanager's webhook payload")
    version = payload.get("version")
    if version != PAYLOAD_VERSION:
        raise NotificationRefused(
            f"payload version {version!r} is not {PAYLOAD_VERSION!r}, the Alertmanager webhook version this receiver "
            "reads"
        )
    alerts = _field(payload, "alerts", list, "payload")
    events = []
    for i, alert in enumerate(alerts):
        where = f"alerts[{i}]"
        if not isinstance(alert, dict):
            raise NotificationRefused(f"{where} is not an object")
        labels = _field(alert, "labels", dict, where)
        annotations = alert.get("annotations") or {}
        if not isinstance(annotations, dict):
            raise NotificationRefused(f"{where}.annotations is {type(annotations).__name__}, not an object")
        status = _field(alert, "status", str, where)
        if status not in ("firing", "resolved"):
            raise NotificationRefused(f"{where}.status {status!r} is neither 'firing' nor 'resolved'")
        if not all(isinstance(v, str) for v in (*labels.values(), *annotations.values())):
            raise NotificationRefused(f"{where}: every label and annotation value must be a string")
        events.append(
            AlertEvent(
                alertname=_field(labels, "alertname", str, f"{where}.labels"),
                status=status,
                fingerprint=_field(alert, "fingerprint", str, where),
                starts_at=_timestamp(_field(alert, "startsAt", str, where), f"{where}.startsAt"),
                labels=dict(labels),
                annotations=dict(annotations),
            )
        )
    return events


def actionable(event: AlertEvent) -> str | None:
    """Why `event` starts no remediation, or None when it does (a firing alert naming a known action and model)."""
    if event.status != "firing":
        return "resolved: nothing to do"
    if event.action is None:
        return "its rule names no action: a person handles it"
    if event.action not in ACTIONS:
        return f"action {event.action!r} is not one of {', '.join(ACTIONS)}: a person handles it"
    if not event.model:
        return "it has no model label: the rules file labels every alert with the model it watches"
    return None


def incident_level(event: AlertEvent, alert_levels: dict[str, str]) -> str:
    """The response level of the incident an alert opens, from its severity (policy risk.alert_levels)."""
    severity = event.labels.get("severity", "")
    if severity not in alert_levels:
        raise ValueError(
            f"alert {event.alertname} has severity {severity!r}, which policy risk.alert_levels does not map to a "
            f"response level ({', '.join(f'{k}: {v}' for k, v in alert_levels.items())}); add it"
        )
    return alert_levels[severity]


def record_incident(event: AlertEvent, store: Any, alert_levels: dict[str, str]) -> Any:
    """The incident of one alert firing: opened when it fires (once per firing), resolved by inferops when
    Alertmanager says it resolved; a person takes the steps after (recover, post-mortem). An alert labelled with
    the `incident` a risk assessment opened for it is that incident."""
    from tasks.risk.incidents import AUTOMATIC, IncidentError

    recorded = event.labels.get("incident", "")
    if recorded.isdigit():  # raised by inferops for an incident it already opened (a risk at high): that one
        try:
            return store.get(int(recorded))
        except IncidentError:  # recorded in another store than this receiver's: filed here like any alert
            pass
    if event.status == "firing":
        return store.open(
            event.annotations.get("summary") or event.alertname,
            incident_level(event, alert_levels),
            model=event.model,
            source=event.key,
            category=event.labels.get("risk_category"),
            detected_at=min(event.started(), time.time()),
            note=f"alert {event.alertname} ({event.labels.get('severity', '?')}) fired {event.starts_at}",
        )
    incident = store.find_source(event.key)
    # resolved by inferops only what inferops mitigated: an alert that cleared by itself waits for a person
    if incident is None or incident.state != "mitigated" or incident.by("mitigated") != AUTOMATIC:
        return incident
    return store.advance(incident.id, "resolved", by=AUTOMATIC, note=f"alert {event.alertname} resolved")


def mitigated_incident(event: AlertEvent, store: Any, alert_levels: dict[str, str], what: str) -> Any:
    """The incident of an alert firing that an automatic action mitigated (opened first if the receiver had not)."""
    from tasks.risk.incidents import AUTOMATIC, STEPS

    incident = store.find_source(event.key) or record_incident(event, store, alert_levels)
    if STEPS.index(incident.state) >= STEPS.index("mitigated"):
        return incident
    return store.advance_to(incident.id, "mitigated", by=AUTOMATIC, note=what)


# ---- the ledger of alerts acted on ---------------------------------------------------------------------------------


@dataclass
class Entry:
    key: str
    alertname: str
    action: str
    model: str
    received_at: float
    flow_run: str


class Ledger:
    """Every alert firing the receiver acted on, one JSON line each, appended under a lock (several receiver
    processes may share the file); the key of a firing already there starts nothing again."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = (
            Path(path) if path else get_settings().data_dir / "monitoring" / "remediation-ledger.jsonl"
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):  # a line cut by a crash mid-write is not an entry
                out.append(json.loads(line))
        return out

    def _append(self, entry: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def seen(self, event: AlertEvent) -> bool:
        """Whether `event`'s firing was acted on already."""
        with self._locked():
            return any(e.get("key") == event.key for e in self.entries())

    def record(self, event: AlertEvent, flow_run: str) -> Entry:
        """Append that `event`'s firing started `flow_run`."""
        entry = Entry(
            event.key, event.alertname, str(event.action), str(event.model), time.time(), str(flow_run)
        )
        with self._locked():
            self._append(asdict(entry))
        return entry


# ---- carrying one out, and its record ------------------------------------------------------------------------------


def risk_action(event: AlertEvent) -> Any:
    """The rollout-risk action (tasks/release/rollout_risk.py) an alert's `action` label stands for."""
    from tasks.release.rollout_risk import RiskAction

    reason = actionable(event)
    if reason is not None:
        raise ValueError(f"alert {event.alertname} ({event.key}) starts no remediation: {reason}")
    summary = event.annotations.get("summary") or event.alertname
    action = str(event.action)
    return RiskAction(
        ACTIONS[action],
        RISK_ACTIONS[action],
        event.number("value"),
        event.number("threshold"),
        f"alert {event.alertname} (fired {event.starts_at}): {summary}",
    )


def event_from(alert: dict[str, Any]) -> AlertEvent:
    """The AlertEvent a receiver passed to the remediation run (AlertEvent.as_dict)."""
    try:
        return AlertEvent(
            **{
                k: alert[k]
                for k in ("alertname", "status", "fingerprint", "starts_at", "labels", "annotations")
            }
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"alert parameter lacks {exc}: pass the alert as the receiver does (AlertEvent.as_dict())"
        ) from exc


def remediation_markdown(event: AlertEvent, done: dict[str, Any]) -> str:
    """The Prefect artifact of one automatic action: the alert that caused it, and what was done."""
    from tasks.decision import markdown_table

    outcome = "done" if done.get("done") else "NOT done"
    rows = [
        {
            "": "alert",
            "value": f"{event.alertname} ({event.labels.get('severity', '?')}), fired {event.starts_at}",
        },
        {"": "summary", "value": event.annotations.get("summary", "")},
        {"": "action", "value": f"{done.get('action')} ({done.get('level')} risk): {outcome}"},
    ]
    if "registry" in done:
        reg = done["registry"]
        rows.append({"": "registry", "value": f"champion v{reg['from_version']} -> v{reg['to_version']}"})
    if "endpoint" in done:
        rows.append(
            {
                "": "endpoint",
                "value": f"{done['endpoint'].get('how') or 'unchanged'}: {done['endpoint']['detail']}",
            }
        )
    if "recommendation" in done:
        rows.append({"": "recommendation", "value": done["recommendation"]["advice"]})
    if "detail" in done:
        rows.append({"": "detail", "value": done["detail"]})
    return f"# Automatic remediation: {event.model}\n\n" + markdown_table(rows)
