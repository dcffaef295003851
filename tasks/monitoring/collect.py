"""The four monitoring layers of SPEC §4, read from Prometheus for one deployment, and how much of them is there.

Each metric the policy requires of a layer (`monitoring.layers.<layer>.metrics`) maps to PromQL over the series
Ray Serve and the inferops replicas export (Ray prefixes `ray_` to both, with the app in the `application`
label). A reading says what was asked, what came back and whether the series exists at all: coverage is the share
of the required series Prometheus actually holds for the deployment, the gate's "monitoring coverage" criterion.
GPU series are required only of a deployment whose replicas run on a GPU; on CPU replicas they are not applicable
(and say so), never counted as missing or as present.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from serving.client import InferopsClient
from serving.metrics import GPU_THROTTLED
from tasks.policy import Monitoring

TIMEOUT_S = 10.0
WINDOW = "1m"  # the rate window: a few scrapes at Prometheus' usual 15 s interval
REQUESTS = "ray_serve_num_http_requests_total"
ERRORS = "ray_serve_num_http_error_requests_total"
LATENCY = "ray_serve_http_request_latency_ms_bucket"
REPLICA_RSS = "ray_component_rss_bytes"
REPLICA_CPU = "ray_component_cpu_percentage"
# Ray names a replica's worker process `ray::ServeReplica:<app>:<deployment>`
REPLICA_COMPONENT = 'Component=~"ray::ServeReplica:{app}:.*"'


class MonitoringError(RuntimeError):
    """Prometheus cannot be read, or an input to the collection is wrong; the message says which and the fix."""


@dataclass(frozen=True)
class Probe:
    """One metric: what it is, the PromQL that reads it, its unit and whether it needs a GPU replica."""

    what: str
    query: str
    unit: str
    gpu: bool = False


def _app(app: str) -> str:
    return f'application="{app}"'


def probes(app: str, model: str) -> dict[str, Probe]:
    """The PromQL of every metric name the policy may require, for the Serve app `app` serving `model`."""
    a = _app(app)
    rate = f"sum(rate({REQUESTS}{{{a}}}[{WINDOW}]))"
    errors = f"sum(rate({ERRORS}{{{a}}}[{WINDOW}]))"

    def quantile(q: float) -> str:
        return f"histogram_quantile({q}, sum by (le) (rate({LATENCY}{{{a}}}[{WINDOW}])))"

    component = REPLICA_COMPONENT.format(app=app)
    table = {
        # business
        "response_time": ("P99 served latency", quantile(0.99), "ms"),
        "success_rate": ("success rate", f"1 - ({errors} or vector(0)) / {rate}", "ratio"),
        "accuracy": (
            "accuracy fidelity",
            f'min(ray_inferops_accuracy_fidelity{{{a},model="{model}"}})',
            "ratio",
        ),
        # application
        "qps": ("requests per second", rate, "req/s"),
        "latency_distribution": ("P50 served latency", quantile(0.5), "ms"),
        "error_rate": ("error rate", f"({errors} or vector(0)) / {rate}", "ratio"),
        # requests per engine call: what dynamic batching buys (1 = no batching at all)
        "batching_efficiency": (
            "requests per batch",
            f'sum(rate(ray_inferops_batch_size_sum{{{a},model="{model}"}}[{WINDOW}])) / '
            f'sum(rate(ray_inferops_batch_size_count{{{a},model="{model}"}}[{WINDOW}]))',
            "requests",
        ),
        # system
        "concurrency": (
            "requests in flight",
            f"sum(ray_serve_replica_processing_queries{{{a}}})",
            "requests",
        ),
        "replica_memory": ("replica RSS", f"sum({REPLICA_RSS}{{{component}}})", "bytes"),
        "replica_cpu": ("replica CPU", f"sum({REPLICA_CPU}{{{component}}})", "%"),
        "gpu_utilisation": ("GPU utilisation", "avg(ray_inferops_gpu_utilisation_percent)", "%"),
        "gpu_memory": ("GPU memory used", "sum(ray_inferops_gpu_memory_used_bytes)", "bytes"),
        # infrastructure
        "gpu_temperature": ("GPU temperature", "max(ray_inferops_gpu_temperature_celsius)", "C"),
        "gpu_health": ("GPUs throttled", f"sum(ray_{GPU_THROTTLED}) or vector(0)", "GPUs"),
        "gpu_power": ("GPU power", "sum(ray_inferops_gpu_power_watts)", "W"),
        "network": ("node network in", "sum(ray_node_network_receive_speed)", "B/s"),
    }
    gpu_metrics = {"gpu_utilisation", "gpu_memory", "gpu_temperature", "gpu_health", "gpu_power"}
    return {
        name: Probe(what, query, unit, name in gpu_metrics) for name, (what, query, unit) in table.items()
    }


@dataclass(frozen=True)
class Reading:
    """What Prometheus holds for one required metric."""

    layer: str
    metric: str
    query: str
    unit: str
    applicable: bool
    present: bool
    value: float | None
    note: str = ""

    def row(self) -> dict[str, Any]:
        shown = "-" if self.value is None else f"{self.value:.4g}"
        state = "n/a" if not self.applicable else "present" if self.present else "MISSING"
        return {
            "layer": self.layer,
            "metric": self.metric,
            "value": shown,
            "unit": self.unit,
            "series": state,
            "note": self.note,
        }


@dataclass(frozen=True)
class LayerReport:
    """Every reading of one collection, and the coverage per layer and overall."""

    app: str
    model: str
    prometheus: str
    readings: list[Reading] = field(default_factory=list)

    def coverage(self, layer: str | None = None) -> float | None:
        """Share of the applicable required series that exist (None: nothing applicable)."""
        pool = [r for r in self.readings if r.applicable and (layer is None or r.layer == layer)]
        return sum(r.present for r in pool) / len(pool) if pool else None

    def meets(self, minimum: float) -> bool:
        """Whether coverage reaches `minimum` (the gate's monitoring_coverage_min); nothing applicable does not."""
        overall = self.coverage()
        return overall is not None and overall >= minimum

    @property
    def missing(self) -> list[Reading]:
        return [r for r in self.readings if r.applicable and not r.present]

    def layers(self) -> list[str]:
        return list(dict.fromkeys(r.layer for r in self.readings))

    def sentence(self, minimum: float) -> str:
        overall = self.coverage()
        if overall is None:
            return f"no required series is applicable to {self.app}"
        verdict = "meets" if self.meets(minimum) else "is below"
        gaps = ", ".join(f"{r.layer}/{r.metric}" for r in self.missing) or "none"
        return (
            f"monitoring coverage of {self.app} is {overall:.0%} ({verdict} the {minimum:.0%} the gate requires); "
            f"missing: {gaps}"
        )


def instant(prometheus: str, query: str, timeout_s: float = TIMEOUT_S) -> list[tuple[dict[str, str], float]]:
    """One instant query: each series' labels and value (NaN kept: a ratio of no traffic is not a value)."""
    url = prometheus.rstrip("/") + "/api/v1/query"
    try:
        response = httpx.get(url, params={"query": query}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise MonitoringError(
            f"Prometheus at {prometheus} cannot be reached ({type(exc).__name__}: {exc}); check the URL "
            "(the inferops_prometheus_url variable of the deployments)"
        ) from None
    if response.status_code != 200:
        raise MonitoringError(
            f"Prometheus query {query!r} failed: HTTP {response.status_code} {response.text[:200]}"
        )
    body = response.json()
    result = body.get("data", {}).get("result", [])
    if body.get("status") != "success" or not isinstance(result, list):
        raise MonitoringError(f"Prometheus query {query!r} returned no vector (status {body.get('status')})")
    return [(dict(item.get("metric", {})), float(item["value"][1])) for item in result]


def _exists(prometheus: str, query: str) -> bool:
    """Whether the series behind `query` exist, traffic or not (a rate over no requests is empty, the series
    is still there): asked of the raw selectors inside it."""
    selectors = series_selectors(query)
    return bool(selectors) and all(instant(prometheus, f"count({s})") for s in selectors)


# Series Ray creates only on their first event (the first error, the first throttle): their absence is a zero.
CREATED_ON_FIRST_EVENT = (ERRORS, f"ray_{GPU_THROTTLED}")


def series_selectors(query: str) -> list[str]:
    """The `metric{labels}` selectors of a query (the series it reads), without functions or ranges."""
    import re

    out = []
    for match in re.finditer(r"\b(ray_[a-zA-Z0-9_]+)(\{[^}]*\})?", query):
        if match.group(1) not in CREATED_ON_FIRST_EVENT:
            out.append(match.group(1) + (match.group(2) or ""))
    return list(dict.fromkeys(out))


def collect(
    prometheus: str,
    app: str,
    model: str,
    monitoring: Monitoring,
    *,
    gpu: bool,
    extra: Mapping[str, list[str]] | None = None,
) -> LayerReport:
    """Read every metric the policy requires per layer (plus `extra` per layer) for the app; `gpu`: the replicas
    run on a GPU, so GPU series are required of it."""
    if not app or not model:
        raise MonitoringError("collect needs the Serve app name and the model name (e.g. app='inferops')")
    table = probes(app, model)
    readings = []
    for layer, spec in monitoring.layers.items():
        wanted = [*spec.metrics, *((extra or {}).get(layer, []))]
        for metric in wanted:
            if metric not in table:
                raise MonitoringError(
                    f"policy monitoring.layers.{layer}.metrics names {metric!r}, which inferops cannot read; "
                    f"use one of {sorted(table)}"
                )
            probe = table[metric]
            if probe.gpu and not gpu:
                readings.append(
                    Reading(
                        layer, metric, probe.query, probe.unit, False, False, None, "CPU replicas: no GPU"
                    )
                )
                continue
            present = _exists(prometheus, probe.query)
            values = instant(prometheus, probe.query) if present else []
            value = values[0][1] if values and math.isfinite(values[0][1]) else None
            note = "" if present else "no such series in Prometheus"
            if present and value is None:
                note = "series exist; no traffic in the window"
            readings.append(Reading(layer, metric, probe.query, probe.unit, True, present, value, note))
    return LayerReport(app, model, prometheus, readings)


def render_markdown(report: LayerReport, minimum: float) -> str:
    """The collection as a person reads it: a sentence, coverage per layer, then every reading."""
    from tasks.decision import markdown_table

    lines = [f"# Monitoring of {report.app} ({report.model})", "", report.sentence(minimum) + ".", ""]
    per_layer = []
    for layer in report.layers():
        cov = report.coverage(layer)
        per_layer.append({"layer": layer, "coverage": "n/a" if cov is None else f"{cov:.0%}"})
    lines += ["## Coverage per layer", "", markdown_table(per_layer), "", "## Readings", ""]
    lines += [markdown_table([r.row() for r in report.readings]), ""]
    lines += [f"Read from {report.prometheus}; GPU series are required only of replicas on a GPU."]
    return "\n".join(lines)


def serves_on_gpu(url: str, api_key: str | None, model: str) -> bool:
    """Whether production's replicas run `model` on a GPU (then its GPU series are required and watched)."""
    with InferopsClient(url, api_key) as client:
        provider = str(client.check_serves(model).get("provider", ""))
    return any(p in provider for p in ("CUDA", "Tensorrt"))
