"""System metrics sampled in the background during a run: target processes (psutil), GPUs, Prometheus scrape."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from serving.gpu import GpuSample, gpu_status, sample_gpus

DEFAULT_INTERVAL_S = 0.5
PROMETHEUS_TIMEOUT_S = 2.0
# Ray names each replica's worker process after its actor class, e.g. "ray::ServeReplica:app:Embedder".
RAY_REPLICA_MARKER = "ServeReplica"
# Ray exports each component's resident memory on every node's metrics endpoint; Serve replicas are the components
# named ray::ServeReplica:<app>:<deployment>.
RAY_RSS_METRIC = "ray_component_rss_bytes"


@dataclass(frozen=True)
class ProcSample:
    """CPU and memory of the target processes at one instant (summed over the pids still alive)."""

    t_s: float
    cpu_percent: float
    rss_bytes: int
    alive: int


@dataclass
class SystemSummary:
    """What the sampler saw during a run; GPU and Prometheus say `unavailable (...)` when they were."""

    pids: list[int]
    samples: list[ProcSample]
    host_cpu_percent_mean: float
    cpu_percent_mean: float
    cpu_percent_max: float
    rss_start_bytes: int
    rss_end_bytes: int
    rss_max_bytes: int
    gpu: str
    gpu_samples: list[tuple[float, list[GpuSample]]] = field(default_factory=list)
    prometheus: dict[str, float] | None = None
    prometheus_status: str = "not configured"
    replica_memory: list[tuple[float, int]] = field(default_factory=list)  # (t, bytes) from Ray's metrics
    replica_memory_status: str = "not configured"

    def gpu_memory_series(self) -> list[tuple[float, int]]:
        """(t, bytes used summed over GPUs) for leak detection."""
        return [(t, sum(g.memory_used_bytes for g in gs)) for t, gs in self.gpu_samples if gs]

    def rss_series(self) -> list[tuple[float, int]]:
        """(t, RSS bytes) of the target processes, or of the Serve replicas as Ray reports them (any node)."""
        local = [(s.t_s, s.rss_bytes) for s in self.samples if s.alive]
        return local if self.pids else list(self.replica_memory)

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow: utilisation of the targets and, with a GPU, of the GPUs."""
        out = {"host_cpu_percent_mean": self.host_cpu_percent_mean}
        if self.pids:  # without target processes there is nothing to report, and zeros would mislead
            out["target_cpu_percent_mean"] = self.cpu_percent_mean
            out["target_cpu_percent_max"] = self.cpu_percent_max
            out["target_rss_mb_max"] = self.rss_max_bytes / 2**20
        flat = [g for _, gs in self.gpu_samples for g in gs]
        if flat:
            utils = [g.utilisation_percent for g in flat if g.utilisation_percent is not None]
            if utils:  # a MIG slice reports none: no figure rather than a zero
                out["gpu_utilisation_percent_mean"] = sum(utils) / len(utils)
            out["gpu_memory_used_mb_max"] = max(g.memory_used_bytes for g in flat) / 2**20
            out["gpu_memory_headroom_min"] = min(g.memory_headroom for g in flat)
            temps = [g.temperature_c for g in flat if g.temperature_c is not None]
            if temps:
                out["gpu_temperature_c_max"] = max(temps)
            powers = [g.power_w for g in flat if g.power_w is not None]
            if powers:
                out["gpu_power_w_mean"] = sum(powers) / len(powers)
        return out


def replica_pids(marker: str = RAY_REPLICA_MARKER) -> list[int]:
    """Pids of Ray Serve replica processes on this host (found by their process title)."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            title = " ".join(proc.info.get("cmdline") or []) or (proc.info.get("name") or "")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if marker in title:
            found.append(int(proc.info["pid"]))
    return sorted(found)


class SystemSampler:
    """Samples target processes and GPUs every `interval_s` in a daemon thread; use as a context manager."""

    def __init__(
        self,
        pids: Iterable[int] = (),
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        include_children: bool = True,
        prometheus_url: str | None = None,
        replica_metrics_url: str | None = None,
    ) -> None:
        self.pids = list(pids)
        self.replica_metrics_url = replica_metrics_url
        self.replica_memory: list[tuple[float, int]] = []
        self._replica_memory_error = ""
        self.interval_s = interval_s
        self.include_children = include_children
        self.prometheus_url = prometheus_url
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._procs: dict[int, psutil.Process] = {}
        self.samples: list[ProcSample] = []
        self.gpu_samples: list[tuple[float, list[GpuSample]]] = []
        self._host_cpu: list[float] = []
        self._t0 = 0.0

    def _targets(self) -> list[psutil.Process]:
        procs = []
        for pid in self.pids:
            try:
                proc = self._procs.get(pid) or psutil.Process(pid)
                self._procs[pid] = proc
                procs.append(proc)
                if self.include_children:
                    for child in proc.children(recursive=True):
                        procs.append(self._procs.setdefault(child.pid, child))
            except psutil.NoSuchProcess:
                continue
        return procs

    def sample_once(self) -> ProcSample:
        """Take one reading now and keep it."""
        t = time.monotonic() - self._t0
        cpu = 0.0
        rss = 0
        alive = 0
        for proc in self._targets():
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                alive += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        sample = ProcSample(t, cpu, rss, alive)
        self.samples.append(sample)
        if self.replica_metrics_url:
            try:
                self.replica_memory.append((t, int(serve_replica_rss(self.replica_metrics_url))))
            except PrometheusUnavailable as exc:
                self._replica_memory_error = str(exc)
        self._host_cpu.append(psutil.cpu_percent(None))
        gpus = sample_gpus()
        if gpus:
            self.gpu_samples.append((t, gpus))
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def start(self) -> SystemSampler:
        self._t0 = time.monotonic()
        psutil.cpu_percent(None)  # the first call only sets the reference point
        for proc in self._targets():
            try:
                proc.cpu_percent(None)
            except psutil.NoSuchProcess:
                pass
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="system-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> SystemSummary:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s * 4 + 1)
        self.sample_once()
        return self.summary()

    def __enter__(self) -> SystemSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()

    def summary(self) -> SystemSummary:
        """Aggregate the samples so far (and scrape Prometheus once, when a URL was given)."""
        live = [s for s in self.samples if s.alive] or [ProcSample(0.0, 0.0, 0, 0)]
        busy = live[1:] or live  # the first cpu_percent reading covers no interval
        available, reason = gpu_status()
        prom: dict[str, float] | None = None
        prom_status = "not configured"
        if self.prometheus_url:
            try:
                prom = scrape_prometheus(self.prometheus_url)
                prom_status = f"scraped {len(prom)} series from {self.prometheus_url}"
            except PrometheusUnavailable as exc:
                prom_status = f"unavailable ({exc})"
        host = self._host_cpu[1:] or self._host_cpu or [0.0]
        return SystemSummary(
            pids=list(self.pids),
            samples=list(self.samples),
            host_cpu_percent_mean=sum(host) / len(host),
            cpu_percent_mean=sum(s.cpu_percent for s in busy) / len(busy),
            cpu_percent_max=max(s.cpu_percent for s in busy),
            rss_start_bytes=live[0].rss_bytes,
            rss_end_bytes=live[-1].rss_bytes,
            rss_max_bytes=max(s.rss_bytes for s in live),
            gpu=reason if not available else f"available: {', '.join(g.name for g in sample_gpus())}",
            gpu_samples=list(self.gpu_samples),
            prometheus=prom,
            prometheus_status=prom_status,
            replica_memory=list(self.replica_memory),
            replica_memory_status=(
                "not configured"
                if not self.replica_metrics_url
                else f"{len(self.replica_memory)} readings from {self.replica_metrics_url}"
                + (f"; last error: {self._replica_memory_error}" if self._replica_memory_error else "")
            ),
        )


# ---------------------------------------------------------------------------------------------------------
# Prometheus text exposition format
# ---------------------------------------------------------------------------------------------------------
class PrometheusUnavailable(RuntimeError):
    """The metrics endpoint could not be read."""


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+\S+)?\s*$")


def parse_prometheus_text(text: str) -> dict[str, float]:
    """Series (`name{labels}`) -> value from the Prometheus text format; comments and bad lines are skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, raw = match.groups()
        try:
            value = float(raw)  # accepts NaN, +Inf, -Inf as the format spells them
        except ValueError:
            continue
        out[name + (labels or "")] = value
    return out


def metric_total(series: dict[str, float], name: str) -> float:
    """Sum of every series of one metric name over all label sets (NaN when absent)."""
    values = [v for k, v in series.items() if k == name or k.startswith(name + "{")]
    return math.fsum(values) if values else float("nan")


def scrape_prometheus(url: str, timeout_s: float = PROMETHEUS_TIMEOUT_S) -> dict[str, float]:
    """Scrape one Prometheus endpoint; raise PrometheusUnavailable with the reason when it cannot."""
    import httpx

    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise PrometheusUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise PrometheusUnavailable(f"{url} answered {response.status_code}")
    return parse_prometheus_text(response.text)


def hardware_info() -> dict[str, Any]:
    """CPU model, core counts, memory and GPUs of this host, for MLflow params."""
    import platform

    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    available, reason = gpu_status()
    return {
        "cpu_model": cpu_model,
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": ", ".join(g.name for g in sample_gpus()) if available else reason,
    }


def serve_replica_rss(url: str, timeout_s: float = PROMETHEUS_TIMEOUT_S) -> float:
    """Resident memory of every Serve replica, in bytes, wherever the replicas run: from a Ray node's metrics
    endpoint (a URL ending in /metrics) or from a Prometheus server that scrapes the nodes (its base URL)."""
    import httpx

    if url.rstrip("/").endswith("/metrics"):
        series = scrape_prometheus(url, timeout_s)
        values = [
            v for k, v in series.items() if k.startswith(RAY_RSS_METRIC + "{") and RAY_REPLICA_MARKER in k
        ]
        if not values:
            raise PrometheusUnavailable(f"{url} exports no {RAY_RSS_METRIC} for a Serve replica")
        return math.fsum(values)
    query = f'sum({RAY_RSS_METRIC}{{Component=~"ray::{RAY_REPLICA_MARKER}:.*"}})'
    try:
        response = httpx.get(f"{url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=timeout_s)
        result = response.json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise PrometheusUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None
    if not result:
        raise PrometheusUnavailable(
            f"{url} has no {RAY_RSS_METRIC} for a Serve replica (is it scraping the Ray nodes?)"
        )
    return float(result[0]["value"][1])
