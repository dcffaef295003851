"""The Alertmanager config for the inferops alerts (SPEC §4): one route per level, timings from the handling times,
grouping by alert and application, inhibition of downstream alerts by their cause, receivers that validate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from serving.settings import get_settings
from tasks.monitoring.rules import (
    ALERT_GPU_CRITICAL,
    ALERT_GPU_WARNING,
    ALERT_TARGET_DOWN,
    ALERT_UNAVAILABLE,
    SEVERITIES,
    RefusedFile,
    ToolVerdict,
    levels,
    run_tool,
    write_checked,
)
from tasks.policy import Policy

GROUP_BY = ["alertname", "application"]
# Timings per level from the shortest handling time of the alert types at that level (SPEC §4: emergency 3 min,
# critical 10 min, warning 20 min):
# - group_wait, a tenth of it: the first page waits that long for related alerts to join its group (aggregation is
#   one of SPEC §4's noise cuts), yet reaches the responder with 90% of the handling time left;
# - group_interval, half of it: alerts joining a group already paged are told while half the time is left;
# - repeat_interval, six times it: a reminder once the handling time has passed several times over (an escalation,
#   not noise); more often is the repetition SPEC §4 wants cut.
GROUP_WAIT_SHARE = 0.1
GROUP_INTERVAL_SHARE = 0.5
REPEAT_FACTOR = 6.0
SMARTHOST = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def receiver_name(level: str) -> str:
    return f"inferops-{level}"


def _seconds(value: float) -> str:
    """Seconds as one whole-unit duration ("18s", "5m", "2h")."""
    total = max(round(value), 1)
    for unit, size in (("h", 3600), ("m", 60)):
        if total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


def level_timings(policy: Policy) -> dict[str, dict[str, Any]]:
    """Per level the policy uses: its handling time (minutes), channels, and Alertmanager's three timings."""
    out: dict[str, dict[str, Any]] = {}
    for name, kind in policy.monitoring.alert_types.items():
        for level in levels(policy, name):  # refuses an unknown severity, naming the key
            entry = out.setdefault(level, {"handle_min": kind.handle_within_min, "channels": []})
            entry["handle_min"] = min(entry["handle_min"], kind.handle_within_min)
            entry["channels"] += [c for c in kind.channels if c not in entry["channels"]]
    for entry in out.values():
        handle_s = entry["handle_min"] * 60
        entry["group_wait"] = _seconds(handle_s * GROUP_WAIT_SHARE)
        entry["group_interval"] = _seconds(handle_s * GROUP_INTERVAL_SHARE)
        entry["repeat_interval"] = _seconds(handle_s * REPEAT_FACTOR)
    return dict(sorted(out.items(), key=lambda kv: -SEVERITIES.index(kv[0])))  # highest level first


def _check_url(url: str) -> str:
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(
            f"webhook_url {url!r} is not an http(s) URL with a host: pass the inferops alert receiver's address, "
            "e.g. http://inferops-alert-receiver:9095/alerts"
        )
    return url


def render_alertmanager(
    policy: Policy,
    *,
    webhook_url: str,
    bearer_token_file: str | Path | None = None,
    bearer_token: str | None = None,
    smtp_smarthost: str | None = None,
    smtp_from: str | None = None,
    email_to: str | None = None,
    smtp_auth_username: str | None = None,
    smtp_auth_password_file: str | Path | None = None,
) -> dict[str, Any]:
    """The config (as a dict): every level routes to its own receiver, a webhook to the inferops alert receiver
    (with a bearer credential from a file or a string) and, only when an SMTP smarthost is given, email too."""
    _check_url(webhook_url)
    if (bearer_token_file is None) == (bearer_token is None):
        raise ValueError(
            "give the webhook's bearer credential exactly once: bearer_token_file (a path Alertmanager reads, "
            "preferred) or bearer_token (the string)"
        )
    if bearer_token is not None and not bearer_token.strip():
        raise ValueError("bearer_token is empty: pass the alert receiver's token, or bearer_token_file")
    authorization: dict[str, str] = {"type": "Bearer"}
    if bearer_token_file is not None:
        authorization["credentials_file"] = str(bearer_token_file)
    else:
        authorization["credentials"] = str(bearer_token)
    config: dict[str, Any] = {}
    if smtp_smarthost is not None:
        if not SMARTHOST.match(smtp_smarthost):
            raise ValueError(
                f"smtp_smarthost {smtp_smarthost!r} is not host:port: pass e.g. smtp.example.com:587"
            )
        for name, value in (("smtp_from", smtp_from), ("email_to", email_to)):
            if not value or not EMAIL.match(value):
                raise ValueError(
                    f"{name} {value!r} is not an email address: with an SMTP smarthost, pass the sender "
                    "(smtp_from) and the on-call address (email_to)"
                )
        smtp: dict[str, Any] = {"smtp_smarthost": smtp_smarthost, "smtp_from": smtp_from}
        if smtp_auth_username:
            smtp["smtp_auth_username"] = smtp_auth_username
            if smtp_auth_password_file:
                smtp["smtp_auth_password_file"] = str(smtp_auth_password_file)
        config["global"] = smtp
    timings = level_timings(policy)
    lowest = min(timings, key=SEVERITIES.index)
    config["route"] = {
        # an alert without a known severity (another rules file's) still reaches someone: the lowest level
        "receiver": receiver_name(lowest),
        "group_by": GROUP_BY,
        **{k: timings[lowest][k] for k in ("group_wait", "group_interval", "repeat_interval")},
        "routes": [
            {
                "matchers": [f'severity="{level}"'],
                "receiver": receiver_name(level),
                **{k: t[k] for k in ("group_wait", "group_interval", "repeat_interval")},
            }
            for level, t in timings.items()
        ],
    }
    config["inhibit_rules"] = [
        # the service is down (or Prometheus cannot see its node): its latency, error and rate alerts are effects
        {
            "source_matchers": [f'alertname=~"{ALERT_UNAVAILABLE}|{ALERT_TARGET_DOWN}"'],
            "target_matchers": ['layer="application"'],
            "equal": ["application"],
        },
        # a node whose metrics port is down also loses the app's request counter
        {
            "source_matchers": [f'alertname="{ALERT_TARGET_DOWN}"'],
            "target_matchers": [f'alertname="{ALERT_UNAVAILABLE}"'],
            "equal": ["application"],
        },
        # the critical temperature of a GPU says all its warning would
        {
            "source_matchers": [f'alertname="{ALERT_GPU_CRITICAL}"'],
            "target_matchers": [f'alertname="{ALERT_GPU_WARNING}"'],
            "equal": ["application", "instance", "gpu"],
        },
    ]
    receivers = []
    for level, t in timings.items():
        receiver: dict[str, Any] = {
            "name": receiver_name(level),
            "webhook_configs": [
                {
                    "url": webhook_url,
                    "send_resolved": True,
                    "http_config": {"authorization": dict(authorization)},
                }
            ],
        }
        # Alertmanager refuses email_configs without an SMTP smarthost: none at all unless one is given
        if smtp_smarthost is not None and "email" in t["channels"]:
            receiver["email_configs"] = [{"to": email_to, "send_resolved": True}]
        receivers.append(receiver)
    config["receivers"] = receivers
    return config


def alertmanager_yaml(config: dict[str, Any], policy: Policy) -> str:
    """The config as YAML, headed by the timings per level and why."""
    lines = [
        "# inferops Alertmanager config, rendered by tasks/monitoring/alertmanager.py from the policy (SPEC §4).",
        f"# Timings per level: group_wait = {GROUP_WAIT_SHARE:g} x, group_interval = {GROUP_INTERVAL_SHARE:g} x, "
        f"repeat_interval = {REPEAT_FACTOR:g} x the level's shortest handling time:",
    ]
    for level, t in level_timings(policy).items():
        lines.append(
            f"#   {level}: handle within {t['handle_min']:g} min -> group_wait {t['group_wait']}, "
            f"group_interval {t['group_interval']}, repeat_interval {t['repeat_interval']} "
            f"(channels: {', '.join(t['channels'])})"
        )
    body = yaml.safe_dump(config, sort_keys=False, width=1 << 20)
    return "\n".join(lines) + "\n" + body


def check_alertmanager(path: str | Path) -> ToolVerdict:
    """`amtool check-config` on an Alertmanager config."""
    return run_tool("amtool", "prometheus-alertmanager", ["check-config", str(path)])


def write_alertmanager(config: dict[str, Any], policy: Policy, path: Path | None = None) -> Path:
    """Write the config beside the data, or at `path` (atomically, only if amtool passes it), for Alertmanager."""
    if (
        path is not None
    ):  # a file kept in a repository (infra/): checked, then replaced whole, no manifest beside it
        text = alertmanager_yaml(config, policy)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        verdict = check_alertmanager(tmp)
        if verdict.ok is False:
            tmp.unlink()
            raise RefusedFile(f"{path.name} not written: {verdict.sentence()}")
        tmp.replace(path)
        return path
    final = get_settings().data_dir / "monitoring" / "alertmanager.yml"
    return write_checked(
        final, alertmanager_yaml(config, policy), check_alertmanager, {"kind": "alertmanager"}
    )
