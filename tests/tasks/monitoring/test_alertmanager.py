"""The Alertmanager config, checked by the real amtool and a real Alertmanager: it validates with and without SMTP,
routes each level to its receiver, inhibits downstream alerts while their cause fires and groups by application."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from serving.network import free_port
from tasks.monitoring import rules as r
from tasks.monitoring.alertmanager import (
    alertmanager_yaml,
    check_alertmanager,
    level_timings,
    receiver_name,
    render_alertmanager,
    write_alertmanager,
)
from tasks.policy import Policy, default_policy
from tests.prometheus_server import find_binary, wait_until

AMTOOL_MISSING = (
    "amtool not installed (Debian package `prometheus-alertmanager`; `make test-tools` installs it as root)"
)
ALERTMANAGER_MISSING = "prometheus-alertmanager not installed (Debian package `prometheus-alertmanager`; `make test-tools` installs it)"
SMTP = {
    "smtp_smarthost": "smtp.example.com:587",
    "smtp_from": "am@example.com",
    "email_to": "oncall@example.com",
}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return default_policy()


@pytest.fixture(scope="module")
def amtool() -> str:
    found = find_binary("amtool")
    if found is None:
        pytest.skip(AMTOOL_MISSING)
    return found


def config_file(folder: Path, policy: Policy, **kwargs: Any) -> Path:
    token = folder / "receiver-token"
    token.write_text("test-receiver-token\n")
    args: dict[str, Any] = {
        "webhook_url": f"http://127.0.0.1:{free_port()}/alerts",
        "bearer_token_file": token,
    }
    path = folder / "alertmanager.yml"
    path.write_text(alertmanager_yaml(render_alertmanager(policy, **{**args, **kwargs}), policy))
    return path


@pytest.mark.parametrize("smtp", [False, True], ids=["webhook-only", "with-smtp"])
def test_config_passes_amtool(amtool: str, policy: Policy, tmp_path: Path, smtp: bool) -> None:
    path = config_file(tmp_path, policy, **(SMTP if smtp else {}))
    verdict = check_alertmanager(path)
    assert verdict.ok, verdict.sentence()
    config = yaml.safe_load(path.read_text())
    emails = [x for x in config["receivers"] if "email_configs" in x]
    if smtp:
        assert config["global"]["smtp_smarthost"] == SMTP["smtp_smarthost"]
        assert {x["name"] for x in emails} == {receiver_name("warning"), receiver_name("critical")}
    else:
        assert "global" not in config and not emails  # amtool refuses email without SMTP
    for receiver in config["receivers"]:
        auth = receiver["webhook_configs"][0]["http_config"]["authorization"]
        assert auth["type"] == "Bearer" and auth["credentials_file"].endswith("receiver-token")


def test_each_severity_routes_to_its_receiver(amtool: str, policy: Policy, tmp_path: Path) -> None:
    path = config_file(tmp_path, policy)
    for level in ("emergency", "critical", "warning"):
        result = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={path}", f"severity={level}", "alertname=X"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.stdout.strip() == receiver_name(level), result.stdout + result.stderr


def test_timings_are_shorter_for_higher_levels(policy: Policy) -> None:
    t = level_timings(policy)
    assert list(t) == ["emergency", "critical", "warning"]
    assert (
        t["emergency"]["group_wait"],
        t["emergency"]["group_interval"],
        t["emergency"]["repeat_interval"],
    ) == (
        "18s",
        "90s",
        "18m",
    )
    assert (t["critical"]["group_wait"], t["critical"]["repeat_interval"]) == ("1m", "1h")  # anomaly: 10 min
    assert (t["warning"]["group_wait"], t["warning"]["repeat_interval"]) == ("2m", "2h")  # threshold: 20 min


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"webhook_url": "inferops-alert-receiver:9095"}, "webhook_url 'inferops-alert-receiver:9095'"),
        ({"webhook_url": "ftp://receiver/alerts"}, "webhook_url"),
        ({"bearer_token": "x"}, "exactly once"),  # with bearer_token_file too
        ({"smtp_smarthost": "smtp.example.com"}, "smtp_smarthost 'smtp.example.com' is not host:port"),
        ({"smtp_smarthost": "smtp.example.com:587", "smtp_from": "am@example.com"}, "email_to None"),
    ],
)
def test_bad_input_is_refused_by_name(policy: Policy, kwargs: dict[str, Any], named: str) -> None:
    args = {"webhook_url": "http://receiver:9095/alerts", "bearer_token_file": "/run/secrets/token", **kwargs}
    with pytest.raises(ValueError, match=named):
        render_alertmanager(policy, **args)


def test_unknown_severity_in_the_policy_is_refused(policy: Policy) -> None:
    types = dict(policy.monitoring.alert_types)
    types["anomaly"] = types["anomaly"].model_copy(update={"levels": ["page"]})
    odd = policy.model_copy(
        update={"monitoring": policy.monitoring.model_copy(update={"alert_types": types})}
    )
    with pytest.raises(ValueError, match=r"alert_types\.anomaly\.levels has unknown severity 'page'"):
        render_alertmanager(odd, webhook_url="http://receiver/alerts", bearer_token="t")


def test_write_alertmanager_publishes_a_checked_file(amtool: str, policy: Policy) -> None:
    config = render_alertmanager(policy, webhook_url="http://receiver:9095/alerts", bearer_token="t")
    path = write_alertmanager(config, policy)
    assert yaml.safe_load(path.read_text()) == config
    assert path.read_text().startswith("# inferops Alertmanager config")


# ---- a real Alertmanager ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alertmanager(policy: Policy) -> Iterator[str]:
    """Alertmanager on a free loopback port with the rendered config (its webhook points at a closed port: the
    notifications fail, which does not matter here), stopped afterwards."""
    binary = find_binary("prometheus-alertmanager") or find_binary("alertmanager")
    if binary is None:
        pytest.skip(ALERTMANAGER_MISSING)
    with tempfile.TemporaryDirectory(prefix="inferops-test-alertmanager-") as tmp:
        folder = Path(tmp)
        path = config_file(folder, policy)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = folder / "alertmanager.log"
        command = [
            binary,
            f"--config.file={path}",
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        try:

            def ready() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"alertmanager exited: {log_path.read_text()[-2000:]}")
                try:
                    return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(ready, 30, f"alertmanager at {url} ready", interval_s=0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def alert(
    name: str, severity: str, layer: str, application: str = "inferops", **labels: str
) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "labels": {
            "alertname": name,
            "severity": severity,
            "layer": layer,
            "application": application,
            **labels,
        },
        "annotations": {"summary": name},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=10)).isoformat(),
    }


def post(url: str, alerts: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{url}/api/v2/alerts", json=alerts, timeout=10)
    assert response.status_code == 200, response.text


def alerts_now(url: str, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v2/alerts", params=params, timeout=10)
    response.raise_for_status()
    return list(response.json())


def by_name(found: list[dict[str, Any]], name: str, application: str = "inferops") -> dict[str, Any] | None:
    for a in found:
        if a["labels"]["alertname"] == name and a["labels"]["application"] == application:
            return a
    return None


def test_unavailable_service_inhibits_its_application_alerts(alertmanager: str) -> None:
    post(
        alertmanager,
        [
            alert(r.ALERT_UNAVAILABLE, "emergency", "business"),
            alert(r.ALERT_P99_OVER_SLA, "warning", "application"),
            alert(r.ALERT_ERROR_RATE, "critical", "application", action="freeze"),
            alert(r.ALERT_P99_OVER_SLA, "warning", "application", application="other-app"),
        ],
    )

    def inhibited() -> list[dict[str, Any]]:
        return alerts_now(alertmanager, inhibited="true", active="false", silenced="false")

    wait_until(lambda: len(inhibited()) >= 2, 10, "two inhibited alerts in Alertmanager", interval_s=0.2)
    muted = inhibited()
    source = by_name(alerts_now(alertmanager), r.ALERT_UNAVAILABLE)
    assert source is not None and source["status"]["state"] == "active"
    for name in (r.ALERT_P99_OVER_SLA, r.ALERT_ERROR_RATE):
        target = by_name(muted, name)
        assert target is not None, muted
        assert target["status"]["state"] == "suppressed"
        assert target["status"]["inhibitedBy"] == [source["fingerprint"]]
    assert (
        by_name(muted, r.ALERT_P99_OVER_SLA, "other-app") is None
    )  # another app's latency is not its effect


def test_gpu_critical_inhibits_the_same_gpus_warning(alertmanager: str) -> None:
    gpu = {"instance": "node-1:8080", "model": "minilm"}
    post(
        alertmanager,
        [
            alert(r.ALERT_GPU_CRITICAL, "critical", "infrastructure", gpu="0", **gpu),
            alert(r.ALERT_GPU_WARNING, "warning", "infrastructure", gpu="0", **gpu),
            alert(r.ALERT_GPU_WARNING, "warning", "infrastructure", gpu="1", **gpu),
        ],
    )

    def warnings() -> dict[str, str]:
        found = alerts_now(alertmanager, filter=f'alertname="{r.ALERT_GPU_WARNING}"')
        return {a["labels"]["gpu"]: a["status"]["state"] for a in found}

    wait_until(lambda: warnings() == {"0": "suppressed", "1": "active"}, 10, "GPU 0's warning inhibited")


def test_two_alerts_of_one_application_share_a_group(alertmanager: str) -> None:
    post(
        alertmanager,
        [
            alert(
                r.ALERT_MEMORY_GROWTH,
                "warning",
                "system",
                Component="ray::ServeReplica:inferops:A",
                ip="10.0.0.1",
            ),
            alert(
                r.ALERT_MEMORY_GROWTH,
                "warning",
                "system",
                Component="ray::ServeReplica:inferops:A",
                ip="10.0.0.2",
            ),
        ],
    )

    def group() -> dict[str, Any] | None:
        response = httpx.get(f"{alertmanager}/api/v2/alerts/groups", timeout=10)
        response.raise_for_status()
        for g in response.json():
            if g["labels"] == {"alertname": r.ALERT_MEMORY_GROWTH, "application": "inferops"}:
                return dict(g)
        return None

    wait_until(lambda: (g := group()) is not None and len(g["alerts"]) == 2, 10, "one group of two alerts")
    found = group()
    assert found is not None and found["receiver"]["name"] == receiver_name("warning")
    assert {a["labels"]["ip"] for a in found["alerts"]} == {"10.0.0.1", "10.0.0.2"}
