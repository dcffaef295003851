"""A real Prometheus for tests: the Debian `prometheus` binary on a free loopback port, scraping given targets
every second into a temporary TSDB, stopped afterwards; and the root-only install that CI falls back on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from serving.network import free_port

SCRAPE_INTERVAL_S = 1
RETENTION = "15d"  # Prometheus's default, stated on the command line so tests can expect it
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# A scrape's samples carry the time it started and land when it ends, at most its timeout (the interval) later;
# one that times out marks its series stale from that start. Wait a few intervals past a range's end before
# reading it, and no scrape still in flight can change what the range holds.
SETTLE_S = 5 * SCRAPE_INTERVAL_S
APT_LOCK_TIMEOUT_S = 300  # another apt-get (the other package, a CI step) may hold dpkg's lock
PACKAGED_SERVICES = ("prometheus", "prometheus-alertmanager")
# Ray Serve's proxy counts HTTP requests per app in `serve_num_http_requests`; Ray exports a counter with `ray_`
# before and `_total` after the name, on the node's metrics port, refreshed every metrics_report_interval_ms (10 s).
SERVE_REQUESTS_COUNTER = "ray_serve_num_http_requests_total"


@dataclass(frozen=True)
class PrometheusServer:
    """A running Prometheus: its base URL and the log to read when something goes wrong."""

    url: str
    log_path: Path

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@dataclass(frozen=True)
class ServeTraffic:
    """A Serve app's HTTP request counter, as a Prometheus scraping the Ray node holds it."""

    prometheus_url: str
    app: str
    requests: int = 20
    counter: str = SERVE_REQUESTS_COUNTER
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def selector(self) -> str:
        return f'{self.counter}{{application="{self.app}"}}'

    def rate_query(self, window: str) -> str:
        return f"sum(rate({self.selector}[{window}]))"


def counter_value(traffic: ServeTraffic) -> float:
    """The app's request counter now (summed over routes and status codes); 0 before Prometheus has it."""
    result = instant(traffic.prometheus_url, f"sum({traffic.selector})")
    return float(result[0]["value"][1]) if result else 0.0


def find_binary(name: str) -> str | None:
    """`name` on PATH, else in /usr/bin (where Debian puts it; sudo-less PATHs sometimes lack it)."""
    found = shutil.which(name)
    if found:
        return found
    fallback = Path("/usr/bin") / name
    return str(fallback) if fallback.is_file() and os.access(fallback, os.X_OK) else None


def apt_install(packages: list[str]) -> None:
    """Install Debian packages non-interactively (root only), refreshing the package lists if the first try fails,
    then stop the services the packages start, so no system Prometheus holds port 9090 (the tests use their own)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT_S}",
        *packages,
    ]
    first = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if first.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, check=False)
        second = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if second.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(install)}` failed twice (the second time after apt-get update): "
                f"{(second.stderr or second.stdout)[-1500:]}; install {' '.join(packages)} by hand"
            )
    stop_packaged_services()


def stop_packaged_services() -> None:
    """Debian starts prometheus (on 9090) and prometheus-alertmanager where an init system runs: stop and
    disable them. Containers without one (policy-rc.d says 101) never started them; this is then a no-op."""
    for service in PACKAGED_SERVICES:
        if Path("/run/systemd/system").is_dir():
            subprocess.run(["systemctl", "disable", "--now", service], capture_output=True, check=False)
        elif Path(f"/etc/init.d/{service}").exists():
            subprocess.run([f"/etc/init.d/{service}", "stop"], capture_output=True, check=False)


def config_text(targets: list[str], interval_s: int = SCRAPE_INTERVAL_S) -> str:
    """A Prometheus config scraping `targets` (host:port) every `interval_s` (JSON is YAML, so no YAML writer)."""
    config = {
        "global": {"scrape_interval": f"{interval_s}s", "scrape_timeout": f"{interval_s}s"},
        "scrape_configs": [{"job_name": "targets", "static_configs": [{"targets": targets}]}],
    }
    return json.dumps(config, indent=2)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def prometheus_server(
    binary: str, targets: list[str], interval_s: int = SCRAPE_INTERVAL_S
) -> Iterator[PrometheusServer]:
    """Start Prometheus on a free loopback port with a temporary TSDB, wait for `/-/ready`, stop it afterwards.
    Late in a test session a Ray node exports every app the session ever ran: a longer `interval_s` (the scrape
    timeout too) leaves time to read it all."""
    with tempfile.TemporaryDirectory(prefix="inferops-test-prometheus-") as tmp:
        folder = Path(tmp)
        (folder / "prometheus.yml").write_text(config_text(targets, interval_s))
        port = free_port()
        server = PrometheusServer(f"http://127.0.0.1:{port}", folder / "prometheus.log")
        command = [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        with server.log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        try:
            _wait_ready(server, process)
            yield server
        finally:
            _stop(process)


def _wait_ready(server: PrometheusServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}: {server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"prometheus at {server.url} not ready after {READY_TIMEOUT_S:g} s: {server.log_tail()}"
    )


def instant(url: str, query: str) -> list[dict[str, Any]]:
    """An instant query's result vector (`[{"metric": {...}, "value": [t, "v"]}]`)."""
    response = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def settled_now() -> datetime:
    """An end for range queries that reads the same every time: now, returned once `SETTLE_S` has passed, so
    every scrape timestamped up to it has finished (a busy node late in the session can make one time out)."""
    end = datetime.now(UTC)
    time.sleep(SETTLE_S)
    return end


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.5) -> float:
    """Poll `check` until it holds; return the seconds it took, or fail naming `what` after `timeout_s`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")
