"""The one Prometheus rules file that watches a deployment (SPEC §4): recording rules for the served P99, error
ratio and request rate, and the four alert types (threshold, trend, anomaly, business), each labelled with its
level, type, layer, application and model and annotated with its channels and handling time."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serving.artifacts import slug, write_artifact
from serving.metrics import GPU_GAUGES
from serving.settings import get_settings
from tasks.monitoring.thresholds import RECORD_LOWER, RECORD_UPPER, RateBand, band_rules
from tasks.policy import Policy

# ---- what the inferops replicas and Ray export (verified against Ray 2.60's source) -------------------------------

# Ray's Prometheus exporter puts `ray_` before every metric name, Serve's own and those an app declares through
# ray.serve.metrics; counters also get `_total`, histograms `_bucket`/`_sum`/`_count`.
RAY_PREFIX = "ray_"
# ray/serve/_private/request_ingress_metrics.py: serve_num_http_requests (route, method, application, status_code),
# serve_num_http_error_requests (route, error_code, method, application), serve_http_request_latency_ms (method,
# route, application, status_code). `application` is the Serve app's name, not the model's.
SERVE_REQUESTS = "ray_serve_num_http_requests_total"
SERVE_ERRORS = "ray_serve_num_http_error_requests_total"
SERVE_LATENCY_BUCKET = "ray_serve_http_request_latency_ms_bucket"
# ray/serve/_private/constants.py DEFAULT_LATENCY_BUCKET_MS, the histogram's boundaries unless the cluster sets
# RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS (then pass the same list to render_rules).
SERVE_LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 1000, 2000, 5000, 10000, 60000, 120000, 300000, 600000,
)  # fmt: skip
# ray/dashboard/modules/reporter/reporter_agent.py: component_rss_bytes (ip, Component), one series per node and
# process title; a Serve replica's title is ray::ServeReplica:<app>:<deployment> (ray/serve/_private/common.py).
# The same names as tasks/measure/system_metrics.py (RAY_RSS_METRIC, RAY_REPLICA_MARKER), which this stage may not
# import; a test keeps the two equal.
REPLICA_RSS = "ray_component_rss_bytes"
REPLICA_COMPONENT_PREFIX = "ray::ServeReplica:"
# serving/metrics.py GpuExporter: one gauge per GPU a replica holds, tagged gpu and name (and, by Serve, application,
# deployment, replica).
GPU_TEMPERATURE = RAY_PREFIX + next(m for m, _, attr in GPU_GAUGES if attr == "temperature_c")
# The serving app's accuracy-fidelity gauge (worst-case retention of the served model against its reference, 0-1):
# the serving floor declares `ray.serve.metrics.Gauge(ACCURACY_FIDELITY_GAUGE, tag_keys=("model",))`; Serve adds the
# `application` tag itself (declaring it is refused as reserved). It is named here because tasks may import serving,
# never the reverse, and the serving floor cannot import this name.
ACCURACY_FIDELITY_GAUGE = "inferops_accuracy_fidelity"
ACCURACY_FIDELITY = RAY_PREFIX + ACCURACY_FIDELITY_GAUGE
RAY_JOB = (
    "ray"  # the Prometheus job that scrapes the Ray nodes' metrics ports (infra/prometheus/prometheus.yml)
)
# 4xx answers are the client's (bad input, too large, rate-limited: serving counts them in inferops_rejected_requests);
# the error ratio and the success rate judge the service by its 5xx answers.
SERVER_ERROR_CODES = "5.."

# ---- recording rules (Prometheus' level:metric:operations naming) -------------------------------------------------

RECORD_P99 = "inferops:serve_p99_ms:5m"
RECORD_ERROR_RATIO = "inferops:serve_error_ratio:5m"
RECORD_RATE = "inferops:serve_request_rate:5m"
RECORD_SUCCESS_RATIO = "inferops:serve_success_ratio:1h"

# ---- alerts ---------------------------------------------------------------------------------------------------------

SEVERITIES = ("warning", "critical", "emergency")  # lowest first; the levels SPEC §4's table names
ALERT_P99_OVER_SLA = "ServeP99OverSLA"
ALERT_P99_OFF_BASELINE = "ServeP99OffBaseline"
ALERT_ERROR_RATE = "ServeErrorRateHigh"
ALERT_GPU_WARNING = "GpuTemperatureWarning"
ALERT_GPU_CRITICAL = "GpuTemperatureCritical"
ALERT_P99_TREND = "ServeP99TrendingToSLA"
ALERT_MEMORY_GROWTH = "ReplicaMemoryGrowing"
ALERT_RATE_ANOMALY = "RequestRateOutsideBand"
ALERT_ACCURACY = "AccuracyFidelityLow"
ALERT_TARGET_DOWN = "RayMetricsTargetDown"
ALERT_UNAVAILABLE = "ServiceUnavailable"
ALERT_SUCCESS_RATE = "SuccessRateLow"
ALERT_UTILISATION = "ReplicaUtilisationHigh"

# The seed 7.6.1 risk class each alert is evidence of (label `risk_category`): the risk assessment counts the
# alerts of a class (tasks/risk/evidence.py), an incident an alert opens carries it; unnamed ones are performance.
RISK_CATEGORY = {
    ALERT_GPU_WARNING: "technical/gpu",
    ALERT_GPU_CRITICAL: "technical/gpu",
    ALERT_TARGET_DOWN: "external/environment",
}
DEFAULT_RISK_CATEGORY = "technical/performance"

# How long a condition must hold before it pages (`for`): long enough that one scrape, a restart or a batch of slow
# requests does not page, short enough to leave most of the type's handling time to the responder (business 3 min,
# anomaly 10 min, threshold 20 min, trend 1 h). Policy keys to be (see the report); here so no number hides in logic.
FOR = {
    ALERT_P99_OVER_SLA: "5m",
    ALERT_P99_OFF_BASELINE: "5m",
    ALERT_ERROR_RATE: "5m",
    ALERT_GPU_WARNING: "5m",
    ALERT_GPU_CRITICAL: "2m",
    ALERT_P99_TREND: "15m",
    ALERT_MEMORY_GROWTH: "30m",
    ALERT_RATE_ANOMALY: "10m",
    ALERT_ACCURACY: "2m",
    ALERT_TARGET_DOWN: "1m",
    ALERT_UNAVAILABLE: "2m",
    ALERT_SUCCESS_RATE: "5m",
    ALERT_UTILISATION: "10m",
}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")  # a Prometheus duration
# A replica's CPU share as Ray reports it (ray_component_cpu_percentage: 100 = one core), over this window: a burst
# of a minute is not a reason to add replicas, a sustained load is.
UTILISATION_WINDOW = "10m"
GPU_UTILISATION = RAY_PREFIX + next(m for m, _, attr in GPU_GAUGES if attr == "utilisation_percent")
REPLICA_CPU = "ray_component_cpu_percentage"
TREND_WINDOW = "1h"  # the P99's slope is fitted over the last hour ...
TREND_HORIZON_S = 3600  # ... and extrapolated one hour ahead
# A leak is a slope that holds over the last hour AND the last quarter hour: a replica added to a node steps the
# node's series up once, which lifts the hour's slope for an hour but the quarter's for 15 min only (< its `for`).
MEMORY_WINDOWS = ("1h", "15m")
BAND_INTERVAL = "1m"
APP_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ServedBaseline:
    """The endpoint's own P99 at its measured request rate, as a client saw it (not the in-process batch time)."""

    p99_ms: float
    rate_rps: float
    source: str  # where the figure comes from, e.g. "load suite, MLflow run 3f2a..."

    def __post_init__(self) -> None:
        for name in ("p99_ms", "rate_rps"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(
                    f"served baseline {name} must be a positive number, got {value!r}: pass the endpoint's P99 "
                    "(ms) and request rate (req/s) measured under load (the load suite's figures)"
                )
        if not self.source:
            raise ValueError(
                "served baseline source is empty: say where the figure was measured (run, suite)"
            )


def _label(value: str) -> str:
    """A PromQL string literal (JSON's escapes are PromQL's)."""
    return json.dumps(value)


def selectors(application: str, model: str, ray_job: str = RAY_JOB) -> dict[str, str]:
    """Every series selector the rules read, for one Serve app and model: the one place a live scrape is checked."""
    app = f"application={_label(application)}"
    return {
        "requests": f"{SERVE_REQUESTS}{{{app}}}",
        "server_errors": f'{SERVE_ERRORS}{{{app},error_code=~"{SERVER_ERROR_CODES}"}}',
        "latency_bucket": f"{SERVE_LATENCY_BUCKET}{{{app}}}",
        "replica_rss": f"{REPLICA_RSS}{{Component=~{_label(REPLICA_COMPONENT_PREFIX + application + ':.*')}}}",
        "replica_cpu": f"{REPLICA_CPU}{{Component=~{_label(REPLICA_COMPONENT_PREFIX + application + ':.*')}}}",
        "gpu_utilisation": f"{GPU_UTILISATION}{{{app}}}",
        "gpu_temperature": f"{GPU_TEMPERATURE}{{{app}}}",
        "accuracy_fidelity": f"{ACCURACY_FIDELITY}{{{app},model={_label(model)}}}",
        "ray_up": f"up{{job={_label(ray_job)}}}",
    }


def _number(value: float) -> str:
    return f"{value:.6g}"


def duration(minutes: float) -> str:
    """Minutes as one Prometheus/Alertmanager duration in the largest whole unit ("20m", "1h", "18s")."""
    seconds = round(minutes * 60)
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {minutes!r} min")
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def levels(policy: Policy, alert_type: str) -> list[str]:
    """The levels the policy gives an alert type, lowest first; an unknown one is refused."""
    types = policy.monitoring.alert_types
    if alert_type not in types:
        raise ValueError(
            f"policy monitoring.alert_types has no {alert_type!r} type (it has {', '.join(types)}); "
            "add it: the four types are threshold, trend, anomaly and business (SPEC §4)"
        )
    found = types[alert_type].levels
    unknown = [lv for lv in found if lv not in SEVERITIES]
    if unknown or not found:
        raise ValueError(
            f"policy monitoring.alert_types.{alert_type}.levels has unknown severity "
            f"{', '.join(map(repr, unknown)) or '(none)'}: Alertmanager routes {', '.join(SEVERITIES)}; use those"
        )
    return sorted(found, key=SEVERITIES.index)


def bucket_at_or_above(
    threshold_ms: float, buckets_ms: tuple[float, ...] = SERVE_LATENCY_BUCKETS_MS
) -> float:
    """The histogram boundary a latency threshold can be judged at.

    `histogram_quantile` interpolates linearly inside a bucket: a healthy service whose requests all take 55-60 ms
    reads as a P99 of ~99.5 ms with Ray's 50/100 ms boundaries. Comparing its estimate with a boundary is exact
    (estimate > b  <=>  over 1% of requests took longer than b), so a threshold between boundaries is judged at the
    next boundary up: never a page on a healthy service, at the price of the bucket's resolution."""
    if not threshold_ms > 0:
        raise ValueError(
            f"latency threshold must be positive, got {threshold_ms!r} ms; fix the policy or baseline"
        )
    above = [b for b in sorted(buckets_ms) if b >= threshold_ms]
    if not above:
        raise ValueError(
            f"latency threshold {threshold_ms:g} ms is above the histogram's largest boundary {max(buckets_ms):g} ms: "
            "the histogram cannot show it; add a boundary (RAY_SERVE_REQUEST_LATENCY_BUCKETS_MS) and pass it"
        )
    return float(above[0])


def _value(fmt: str) -> str:
    return '{{ $value | printf "' + fmt + '" }}'


def _alert(
    policy: Policy,
    name: str,
    alert_type: str,
    level: str,
    layer: str,
    expr: str,
    summary: str,
    description: str,
    application: str,
    model: str,
    threshold: float | None = None,
    **extra: str,
) -> dict[str, Any]:
    kind = policy.monitoring.alert_types[alert_type]
    numbers = {"value": "{{ $value }}"}  # what the receiver reads back (tasks/monitoring/remediation.py)
    if threshold is not None:
        numbers["threshold"] = _number(threshold)
    return {
        "alert": name,
        "expr": expr,
        "for": pending(policy, name),
        "labels": {
            "severity": level,
            "type": alert_type,
            "layer": layer,
            "application": application,
            "model": model,
            "risk_category": RISK_CATEGORY.get(name, DEFAULT_RISK_CATEGORY),
            **extra,
        },
        "annotations": {
            "summary": summary,
            "description": description,
            "channels": ", ".join(kind.channels),
            "handle_within": duration(kind.handle_within_min),
            **numbers,
        },
    }


def pending(policy: Policy, alert: str) -> str:
    """How long `alert`'s condition must hold before it fires: the policy's monitoring.pending, else FOR."""
    given = policy.monitoring.pending
    unknown = sorted(set(given) - set(FOR))
    if unknown:
        raise ValueError(
            f"policy monitoring.pending names {', '.join(map(repr, unknown))}, which no rule has: use alert names of "
            f"the rules file ({', '.join(sorted(FOR))})"
        )
    value = given.get(alert, FOR[alert])
    if not isinstance(value, str) or not DURATION.match(value):
        raise ValueError(
            f"policy monitoring.pending.{alert} is {value!r}, not a Prometheus duration: write e.g. 30s, 5m or 1h"
        )
    return value


def recording_rules(application: str, model: str) -> list[dict[str, Any]]:
    """The served P99, error ratio, request rate (5 min) and success ratio (1 h) of one Serve app."""
    s = selectors(application, model)
    by = "sum by (application)"

    def ratio_of_errors(window: str) -> str:
        requests = f"{by} (rate({s['requests']}[{window}]))"
        # Serve creates the error counter at the first error: until then there is no series, and a ratio over
        # a missing numerator would be missing too instead of 0.
        return f"({by} (rate({s['server_errors']}[{window}])) or 0 * {requests}) / {requests}"

    return [
        {"record": RECORD_RATE, "expr": f"{by} (rate({s['requests']}[5m]))"},
        {"record": RECORD_ERROR_RATIO, "expr": ratio_of_errors("5m")},
        {
            "record": RECORD_P99,
            "expr": f"histogram_quantile(0.99, sum by (application, le) (rate({s['latency_bucket']}[5m])))",
        },
        {"record": RECORD_SUCCESS_RATIO, "expr": f"1 - ({ratio_of_errors('1h')})"},
    ]


def render_rules(
    application: str,
    model: str,
    baseline: ServedBaseline,
    policy: Policy,
    *,
    band: RateBand | None = None,
    ray_job: str = RAY_JOB,
    latency_buckets_ms: tuple[float, ...] = SERVE_LATENCY_BUCKETS_MS,
    gpu: bool = False,
    replica_cpus: float = 1.0,
) -> dict[str, Any]:
    """The rules file (as a dict) for one deployment: `application` is the Serve app's name (Serve's `application`
    label), `model` the model it serves; without a `band` (no history yet) the anomaly alert is left out. `gpu`: the
    replicas run on GPUs (their utilisation is the GPU's), else `replica_cpus` is each replica's CPU reservation."""
    if not isinstance(application, str) or not APP_NAME.match(application):
        raise ValueError(
            f"application {application!r} is not a Serve app name of letters, digits, '-' and '_': pass the app's "
            "name as deployed (serving.app names it 'inferops'), not the model"
        )
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model {model!r} is empty: pass the served model's name")
    if not isinstance(replica_cpus, int | float) or not replica_cpus > 0:
        raise ValueError(
            f"replica_cpus {replica_cpus!r} must be a positive number: pass each replica's CPU reservation "
            "(ray_actor_options num_cpus; 1 by default)"
        )
    if not isinstance(baseline, ServedBaseline):
        raise ValueError(f"baseline must be a ServedBaseline, got {type(baseline).__name__}")
    monitoring, risk = policy.monitoring, policy.rollout_risk
    sla = policy.rollout_gate.sla_p99_ms
    warn_c, crit_c = monitoring.gpu_temperature_warning_c, monitoring.gpu_temperature_critical_c
    if not 0 < warn_c < crit_c:
        raise ValueError(
            f"policy monitoring.gpu_temperature_warning_c {warn_c} and gpu_temperature_critical_c {crit_c} must be "
            "positive with the warning below the critical; fix the policy file"
        )
    if not risk.error_rate_alert > 0:
        raise ValueError(
            f"policy rollout_risk.error_rate_alert must be positive, got {risk.error_rate_alert}: a threshold of 0 "
            "pages on the first error; set the error ratio that freezes changes (SPEC §2: 0.01)"
        )
    # threshold alerts use the type's lowest level (warning) and highest (critical); the others their highest
    threshold = levels(policy, "threshold")
    trend = levels(policy, "trend")[-1]
    anomaly = levels(policy, "anomaly")[-1]
    business = levels(policy, "business")[-1]
    s = selectors(application, model, ray_job)
    app = f"application={_label(application)}"
    p99, rate, errors = f"{RECORD_P99}{{{app}}}", f"{RECORD_RATE}{{{app}}}", f"{RECORD_ERROR_RATIO}{{{app}}}"
    sla_at = bucket_at_or_above(sla, latency_buckets_ms)
    off = baseline.p99_ms * (1 + risk.perf_deviation_rollback)
    off_at = bucket_at_or_above(off, latency_buckets_ms)
    # Latency rises with load: above the baseline's rate (by the same deviation the rollout risk tolerates) a slower
    # P99 says "scale out" (the SLA alert still fires), not "this model regressed, roll it back".
    comparable_rps = baseline.rate_rps * (1 + risk.perf_deviation_rollback)
    slope_mb_h = policy.test_suite.stability.leak_slope_mb_per_h
    growth_mb = policy.test_suite.stability.leak_min_growth_mb
    fidelity_min = policy.optimization.accuracy_retention_threshold
    success_min = policy.rollout_gate.completion.success_rate_min
    ms = _value("%.1f")

    def alert(
        name: str,
        alert_type: str,
        level: str,
        layer: str,
        expr: str,
        summary: str,
        description: str,
        threshold: float | None = None,
        **extra: str,
    ) -> dict[str, Any]:
        return _alert(
            policy,
            name,
            alert_type,
            level,
            layer,
            expr,
            summary,
            description,
            application,
            model,
            threshold,
            **extra,
        )

    threshold_rules = [
        alert(
            ALERT_P99_OVER_SLA,
            "threshold",
            threshold[0],
            "application",
            f"{p99} > {_number(sla_at)}",
            f"{application} served P99 {ms} ms is over the {sla:g} ms SLA",
            f"Served P99 of {application} ({RECORD_P99}, Ray Serve's latency histogram) is {ms} ms; the SLA is "
            f"{sla:g} ms (policy rollout_gate.sla_p99_ms), judged at the histogram's {sla_at:g} ms boundary.",
            threshold=sla_at,
        ),
        alert(
            ALERT_P99_OFF_BASELINE,
            "threshold",
            threshold[-1],
            "application",
            f"{p99} > {_number(off_at)} and on(application) {rate} <= {_number(comparable_rps)}",
            f"{application} served P99 {ms} ms is {risk.perf_deviation_rollback:.0%} or more off its "
            f"{baseline.p99_ms:g} ms baseline: roll back",
            f"Served P99 of {application} is {ms} ms at a request rate within {comparable_rps:g} req/s; the served "
            f"baseline is {baseline.p99_ms:g} ms at {baseline.rate_rps:g} req/s ({baseline.source}), and the "
            f"rollback threshold is {off:g} ms (+{risk.perf_deviation_rollback:.0%}, policy "
            f"rollout_risk.perf_deviation_rollback), judged at the histogram's {off_at:g} ms boundary.",
            threshold=off_at,
            action="rollback",
        ),
        alert(
            ALERT_ERROR_RATE,
            "threshold",
            threshold[-1],
            "application",
            f"{errors} > {_number(risk.error_rate_alert)}",
            f"{application} 5xx ratio {_value('%.4f')} is over {risk.error_rate_alert:g}: freeze changes",
            f"{RECORD_ERROR_RATIO} of {application} is {_value('%.4f')} (5xx answers / all answers over 5 min); the "
            f"threshold is {risk.error_rate_alert:g} (policy rollout_risk.error_rate_alert): fix urgently and "
            "stop further changes.",
            threshold=risk.error_rate_alert,
            action="freeze",
        ),
        alert(
            ALERT_UTILISATION,
            "threshold",
            threshold[0],
            "system",
            f"max(avg_over_time({s['gpu_utilisation']}[{UTILISATION_WINDOW}])) / 100 > "
            f"{_number(risk.utilisation_scale_out)}"
            if gpu
            else f"max(avg_over_time({s['replica_cpu']}[{UTILISATION_WINDOW}])) / {_number(100 * replica_cpus)} > "
            f"{_number(risk.utilisation_scale_out)}",
            f"{application} replicas run at {_value('%.2f')} of their capacity: scale out",
            f"The busiest replica of {application} ("
            + (
                f"GPU: {GPU_UTILISATION}"
                if gpu
                else f"CPU: {REPLICA_CPU} over its {replica_cpus:g} reserved CPU"
            )
            + f") averaged {_value('%.2f')} of its capacity over {UTILISATION_WINDOW}; above "
            f"{risk.utilisation_scale_out:g} (policy rollout_risk.utilisation_scale_out) SPEC §2 adds replicas: a "
            "recommendation is recorded, the capacity plan sizes it.",
            threshold=risk.utilisation_scale_out,
            action="scale_out",
        ),
        alert(
            ALERT_GPU_WARNING,
            "threshold",
            threshold[0],
            "infrastructure",
            f"{s['gpu_temperature']} > {_number(warn_c)}",
            f"GPU {{{{ $labels.gpu }}}} of {application} at {ms} °C, over {warn_c:g} °C",
            f"GPU {{{{ $labels.gpu }}}} ({{{{ $labels.name }}}}) on {{{{ $labels.instance }}}} reads {ms} °C; the "
            f"warning threshold is {warn_c:g} °C (policy monitoring.gpu_temperature_warning_c).",
        ),
        alert(
            ALERT_GPU_CRITICAL,
            "threshold",
            threshold[-1],
            "infrastructure",
            f"{s['gpu_temperature']} > {_number(crit_c)}",
            f"GPU {{{{ $labels.gpu }}}} of {application} at {ms} °C, over {crit_c:g} °C",
            f"GPU {{{{ $labels.gpu }}}} ({{{{ $labels.name }}}}) on {{{{ $labels.instance }}}} reads {ms} °C; the "
            f"critical threshold is {crit_c:g} °C (policy monitoring.gpu_temperature_critical_c).",
        ),
    ]
    rss = s["replica_rss"]

    def slope(window: str) -> str:
        return f"deriv({rss}[{window}]) * 3600 / {2**20}"

    trend_rules = [
        alert(
            ALERT_P99_TREND,
            "trend",
            trend,
            "application",
            f"predict_linear({p99}[{TREND_WINDOW}], {TREND_HORIZON_S}) > {_number(sla)} and {p99} <= {_number(sla)}",
            f"{application} served P99 heads for the {sla:g} ms SLA within {TREND_HORIZON_S // 60} min",
            f"The served P99 of {application}, extrapolated from its slope over the last {TREND_WINDOW}, reaches "
            f"{ms} ms in {TREND_HORIZON_S // 60} min; the SLA is {sla:g} ms (policy rollout_gate.sla_p99_ms).",
        ),
        alert(
            ALERT_MEMORY_GROWTH,
            "trend",
            trend,
            "system",
            f"{slope(MEMORY_WINDOWS[0])} > {_number(slope_mb_h)}"
            f" and {slope(MEMORY_WINDOWS[1])} > {_number(slope_mb_h)}"
            f" and delta({rss}[{MEMORY_WINDOWS[0]}]) > {round(growth_mb * 2**20)}",
            f"{{{{ $labels.Component }}}} memory grows {_value('%.1f')} MB/h",
            f"Resident memory of {{{{ $labels.Component }}}} on {{{{ $labels.ip }}}} grows {_value('%.1f')} MB/h "
            f"over the last {MEMORY_WINDOWS[0]} and {MEMORY_WINDOWS[1]}, and by over {growth_mb:g} MB in the hour; "
            f"the leak threshold is {slope_mb_h:g} MB/h (policy test_suite.stability.leak_slope_mb_per_h).",
        ),
    ]
    anomaly_rules = [
        alert(
            ALERT_ACCURACY,
            "anomaly",
            anomaly,
            "business",
            f"{s['accuracy_fidelity']} < {_number(fidelity_min)}",
            f"{model} accuracy fidelity {_value('%.4f')} is below {fidelity_min:g}",
            f"{ACCURACY_FIDELITY} of {model} on {application} is {_value('%.4f')}; the model must keep "
            f"{fidelity_min:g} of its reference accuracy (policy optimization.accuracy_retention_threshold).",
        )
    ]
    groups = [{"name": f"inferops-{application}-recording", "rules": recording_rules(application, model)}]
    if band is not None:
        # A table lookup in PromQL costs one node per slot (168 for an hour of the week: ~40 ms per evaluation in
        # promtool). The band moves once an hour, so its group is evaluated once a minute, not every global
        # interval; the alert compares a 5-minute rate and waits 10 minutes, so a minute's lag changes nothing.
        groups.append(
            {
                "name": f"inferops-{application}-band",
                "interval": BAND_INTERVAL,
                "rules": band_rules(band, application),
            }
        )
        bound = (
            '{{ with printf "%s{application=%q}" "RECORD" $labels.application | query }}'
            '{{ . | first | value | printf "%.2f" }}{{ end }}'
        )
        lower, upper = bound.replace("RECORD", RECORD_LOWER), bound.replace("RECORD", RECORD_UPPER)
        anomaly_rules.append(
            alert(
                ALERT_RATE_ANOMALY,
                "anomaly",
                anomaly,
                "application",
                f"({rate} > on(application) {RECORD_UPPER}{{{app}}}) or ({rate} < on(application) "
                f"{RECORD_LOWER}{{{app}}})",
                f"{application} request rate {_value('%.2f')} req/s is outside its usual {lower}-{upper} req/s",
                f"{RECORD_RATE} of {application} is {_value('%.2f')} req/s; the band learned for this time of the "
                f"week ({band.granularity} slots, median +- {band.sigmas:g} MAD-sigmas, from {band.source}) is "
                f"{lower}-{upper} req/s.",
            )
        )
    business_rules = [
        alert(
            ALERT_TARGET_DOWN,
            "business",
            business,
            "infrastructure",
            f"{s['ray_up']} == 0",
            f"Ray metrics target {{{{ $labels.instance }}}} is down: {application} may be unavailable",
            f"Prometheus cannot scrape {{{{ $labels.instance }}}} (job {ray_job}, up == 0): the Ray node or its "
            f"metrics agent is down, so {application}'s replicas there serve nothing Prometheus can see.",
        ),
        alert(
            ALERT_UNAVAILABLE,
            "business",
            business,
            "business",
            f"absent({s['requests']})",
            f"{application} is unavailable: no request counter",
            f"{SERVE_REQUESTS} for application {application} is absent: no Serve proxy reports the app (it is not "
            "deployed, or its proxies are down and restarted without traffic).",
        ),
        alert(
            ALERT_SUCCESS_RATE,
            "business",
            business,
            "business",
            f"{RECORD_SUCCESS_RATIO}{{{app}}} < {_number(success_min)}",
            f"{application} success rate {_value('%.4f')} is below {success_min:g}",
            f"{RECORD_SUCCESS_RATIO} of {application} is {_value('%.4f')} (answers that were not 5xx, last hour); the "
            f"minimum is {success_min:g} (policy rollout_gate.completion.success_rate_min).",
        ),
    ]
    for kind, items in (
        ("threshold", threshold_rules),
        ("trend", trend_rules),
        ("anomaly", anomaly_rules),
        ("business", business_rules),
    ):
        groups.append({"name": f"inferops-{application}-{kind}", "rules": items})
    return {"groups": groups}


def rules_yaml(rules: dict[str, Any]) -> str:
    """The rules as YAML; long expressions stay on one line."""
    return yaml.dump(rules, Dumper=_NoAliases, sort_keys=False, allow_unicode=True, width=1 << 20)


class _NoAliases(yaml.SafeDumper):
    """Writes a shared dict twice instead of as a YAML anchor and alias (`&id001`), which people misread."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# ---- checking and writing ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolVerdict:
    """What promtool or amtool said of a file; `ok` is None when the tool is not installed."""

    tool: str
    ok: bool | None
    output: str

    def sentence(self) -> str:
        if self.ok is None:
            return self.output
        return f"{self.tool}: {'passed' if self.ok else 'refused'}: {self.output.strip()[-1500:]}"


def find_tool(name: str) -> str | None:
    """`name` on PATH, else in /usr/bin (where the Debian packages put promtool and amtool)."""
    found = shutil.which(name)
    if found:
        return found
    fallback = Path("/usr/bin") / name
    return str(fallback) if fallback.is_file() else None


def run_tool(name: str, package: str, args: list[str], timeout_s: float = 60.0) -> ToolVerdict:
    """Run a checking tool; not installed is a verdict of its own (ok=None) naming the package to install."""
    binary = find_tool(name)
    if binary is None:
        return ToolVerdict(name, None, f"{name} not installed (Debian package `{package}`): file not checked")
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    return ToolVerdict(name, result.returncode == 0, result.stdout + result.stderr)


def check_rules(path: str | Path) -> ToolVerdict:
    """`promtool check rules` on a rules file."""
    return run_tool("promtool", "prometheus", ["check", "rules", str(path)])


class RefusedFile(ValueError):
    """A generated file its checking tool refused; nothing was written."""


def write_checked(final: Path, text: str, check: Any, manifest: dict[str, Any]) -> Path:
    """Write `text` atomically to `final` with a manifest, after `check(tmp)` passed (or could not run)."""
    record = dict(manifest)  # the writer adds the verdict; write_artifact reads it after the writer ran

    def writer(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        verdict = check(tmp)
        if verdict.ok is False:
            raise RefusedFile(f"{final.name} not written: {verdict.sentence()}")
        record["checked"] = verdict.sentence()

    write_artifact(final, writer, record)
    return final


def unseen_selectors(prometheus: str, rules: dict[str, Any], *, gpu: bool) -> list[str]:
    """Every `rule reads selector` of `rules` whose selector holds no series on a live Prometheus: a metric or label
    the deployment does not export, on which the rule would never fire. Exempt: series Ray creates at their first
    event (the first 5xx, the first throttle), and GPU series of a deployment without GPUs (`gpu` False). Ask once
    the deployment has served traffic (the cycle does, after the release's risk window): Serve creates its request
    series at the first request, the fidelity gauge at the first probe."""
    from tasks.monitoring.collect import instant, series_selectors

    gpu_only = {RAY_PREFIX + name for name, _, _ in GPU_GAUGES}
    unseen = []
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            for selector in series_selectors(str(rule.get("expr", ""))):
                if not gpu and selector.split("{", 1)[0] in gpu_only:
                    continue
                if not instant(prometheus, f"count({selector})"):
                    unseen.append(f"{name} reads {selector}")
    return list(dict.fromkeys(unseen))


def reload_prometheus(prometheus: str, timeout_s: float = 30.0) -> str:
    """Ask Prometheus to re-read its rule files (POST /-/reload, with --web.enable-lifecycle); what it answered."""
    import httpx

    try:
        answer = httpx.post(prometheus.rstrip("/") + "/-/reload", timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"Prometheus at {prometheus} not reloaded ({type(exc).__name__}): it reads the rules at its next restart"
    if answer.status_code == 200:
        return f"Prometheus at {prometheus} reloaded its rules"
    return (
        f"Prometheus at {prometheus} refused the reload (HTTP {answer.status_code}: start it with "
        "--web.enable-lifecycle, or reload it yourself)"
    )


def write_rules(
    application: str,
    model: str,
    rules: dict[str, Any],
    *,
    prometheus: str | None = None,
    gpu: bool = False,
) -> Path:
    """Write the rules beside the data (atomically, only if promtool passes them) for Prometheus to load. Given the
    Prometheus that scrapes the deployment, a file whose rules read series it does not hold is refused too, and the
    file Prometheus loads now stays as it was."""
    final = get_settings().data_dir / "monitoring" / f"{slug(application)}-{slug(model)}.rules.yml"
    if prometheus:
        unseen = unseen_selectors(prometheus, rules, gpu=gpu)
        if unseen:
            raise RefusedFile(
                f"{final.name} not written: {len(unseen)} selector(s) hold no series on {prometheus}: "
                f"{'; '.join(unseen[:6])}. The rules must name the Serve app as deployed (application label) and "
                "the served model; check that Prometheus scrapes the Ray nodes"
            )
    return write_checked(final, rules_yaml(rules), check_rules, {"application": application, "model": model})
