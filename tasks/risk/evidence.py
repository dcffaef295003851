"""The live inputs of a risk assessment (SPEC §6, seed 7.6.2-7.6.3): each a figure with its source and the window
it covers, mapped to a probability 1-5 by the policy's thresholds (`risk.live.probabilities`).

Plain logic: the flow (flows/risk_assessment.py) reads Prometheus, MLflow and the endpoint and passes the figures.

- incidents: the incident records of the risk's category per 30 days (tasks/risk/incidents.py);
- alerts: Prometheus alerts of the category (their `risk_category` label) that fired per 30 days;
- error_rate, latency: a probe load on the live endpoint (and Prometheus' last minutes where given), the P99
  against the P99 production was watched at after its last release;
- headroom: forecast peak demand against the capacity at the measured knee, from the latest capacity plan;
- fidelity: the fidelity probe's agreement with the FP32 reference, from Prometheus;
- the GPU factor from NVML health where GPUs serve, 1.0 with the reason elsewhere.

A figure that cannot be had (no Prometheus given, no plan yet) is a signal with no value that says why; the
register's own probability then stands, labelled static.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tasks.policy import SIGNALS, Probabilities, Risk
from tasks.risk.incidents import Incident

DAY_S = 86400.0
PER = 30.0  # rates are per 30 days: the assessment is monthly


@dataclass(frozen=True)
class Signal:
    """One live input: its kind (tasks/policy.py SIGNALS), the figure, the probability it implies (None: no data)."""

    kind: str
    value: float | None
    probability: int | None
    source: str
    window: str
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def level(value: float, thresholds: Sequence[float]) -> int:
    """Probability 1-5: 1 below the first threshold, k + 1 at or above the k-th of four."""
    return 1 + sum(1 for t in thresholds if value >= t)


def _signal(kind: str, value: float, table: Probabilities, source: str, window: str, note: str) -> Signal:
    key = {
        "incidents": "incidents_per_30d",
        "alerts": "alerts_per_30d",
        "error_rate": "error_rate",
        "latency": "latency_ratio",
        "headroom": "headroom",
        "fidelity": "fidelity_loss",
    }[kind]
    return Signal(kind, value, level(value, getattr(table, key)), source, window, note)


def no_data(kind: str, source: str, why: str) -> Signal:
    if kind not in SIGNALS:
        raise ValueError(f"signal kind {kind!r} is not one of {', '.join(SIGNALS)}")
    return Signal(kind, None, None, source, "-", why)


def _days(days: float) -> str:
    return f"last {days:g} d"


# ---- incident and alert history -----------------------------------------------------------------------------------


def incident_rate(
    incidents: Sequence[Incident], category: str | None, policy: Risk, where: str, now: float | None = None
) -> Signal:
    """Incidents of `category` opened in the history window, per 30 days."""
    days = policy.live.history_days
    if category is None:
        return no_data("incidents", where, "the risk names no category, so no incident counts against it")
    now = time.time() if now is None else now
    start = now - days * DAY_S
    count = sum(1 for i in incidents if i.category == category and start <= i.opened_at <= now)
    rate = count / days * PER
    return _signal(
        "incidents",
        round(rate, 3),
        policy.live.probabilities,
        where,
        _days(days),
        f"{count} {category} incident(s) in {days:g} d = {rate:.2f} per 30 d",
    )


def alert_rate(fired: float | None, category: str | None, policy: Risk, where: str) -> Signal:
    """Distinct alerts labelled `risk_category=<category>` that fired in the history window (`fired`, read from
    Prometheus' `ALERTS` by the flow: `alerts_query`), per 30 days; None: Prometheus not given or not answering."""
    days = policy.live.history_days
    if category is None:
        return no_data("alerts", where, "the risk names no category, so no alert counts against it")
    if fired is None:
        return no_data("alerts", where, "alert history not read (no Prometheus given, or it did not answer)")
    rate = fired / days * PER
    return _signal(
        "alerts",
        round(rate, 3),
        policy.live.probabilities,
        where,
        _days(days),
        f"{fired:g} {category} alert(s) fired in {days:g} d = {rate:.2f} per 30 d",
    )


def alerts_query(category: str, policy: Risk) -> str:
    """PromQL: how many distinct alerts of `category` fired within the history window (Prometheus keeps `ALERTS`
    for its retention: a shorter retention is a shorter window)."""
    days = policy.live.history_days
    return (
        f'count(max_over_time(ALERTS{{alertstate="firing",risk_category="{category}"}}[{days:g}d])) '
        "or vector(0)"
    )


# ---- the live endpoint --------------------------------------------------------------------------------------------


def endpoint_signals(
    error_rate: float,
    p99_ms: float,
    requests: int,
    baseline_p99_ms: float | None,
    baseline_source: str,
    policy: Risk,
    source: str,
    window: str,
) -> list[Signal]:
    """Error rate and P99 of what the endpoint served (a probe load, or Prometheus' window), the P99 against the
    P99 production was watched at after its last release."""
    table = policy.live.probabilities
    out = [
        _signal(
            "error_rate",
            round(error_rate, 5),
            table,
            source,
            window,
            f"{error_rate:.2%} of {requests} request(s) failed" if requests else f"{error_rate:.2%} failed",
        )
    ]
    if baseline_p99_ms is None or not baseline_p99_ms > 0:
        out.append(no_data("latency", source, f"no recorded P99 to compare with: {baseline_source}"))
    elif not math.isfinite(p99_ms):
        out.append(_signal("latency", math.inf, table, source, window, "no request answered: P99 unbounded"))
    else:
        ratio = p99_ms / baseline_p99_ms
        out.append(
            _signal(
                "latency",
                round(ratio, 3),
                table,
                source,
                window,
                f"P99 {p99_ms:.1f} ms = {ratio:.2f}x the {baseline_p99_ms:.1f} ms of {baseline_source}",
            )
        )
    return out


# ---- capacity and fidelity ----------------------------------------------------------------------------------------


def headroom_signal(
    demand_rps: float | None,
    knee_rps: float | None,
    units: int | None,
    policy: Risk,
    source: str,
    level_: str,
) -> Signal:
    """Forecast peak demand over the capacity the latest plan counted (measured knee x current units)."""
    if demand_rps is None or not knee_rps or not units:
        return no_data("headroom", source, "no capacity plan with a forecast and a measured knee yet")
    use = demand_rps / (knee_rps * units)
    return _signal(
        "headroom",
        round(use, 3),
        policy.live.probabilities,
        source,
        "the plan's horizon",
        f"forecast peak {demand_rps:,.1f} req/s at {level_} = {use:.0%} of {units} x {knee_rps:,.1f} req/s (knee)",
    )


def fidelity_signal(agreement: float | None, policy: Risk, where: str) -> Signal:
    """The lowest agreement of the replicas' fidelity probes with the FP32 reference (serving/fidelity.py), read
    from Prometheus by the flow; None: not read, and `where` says why."""
    if agreement is None or not math.isfinite(agreement):
        return no_data("fidelity", where, "no fidelity probe reading (no Prometheus given, or no series yet)")
    return _signal(
        "fidelity",
        round(1.0 - agreement, 5),
        policy.live.probabilities,
        where,
        "latest probe",
        f"fidelity {agreement:.4f} against FP32 (loss {1 - agreement:.4f})",
    )


def per_risk(
    policy: Risk,
    shared: Sequence[Signal],
    incidents: Sequence[Incident],
    incidents_from: str,
    fired: dict[str, float | None],
    alerts_from: str,
) -> dict[str, list[Signal]]:
    """Each register risk's evidence: the signals its entry names, the incident and alert rates of its own category
    (`fired`: alerts that fired per category, read by the flow) and the shared ones (endpoint, headroom, fidelity)."""
    out: dict[str, list[Signal]] = {}
    for entry in policy.risk_register:
        signals: list[Signal] = []
        for kind in entry.signals:
            if kind == "incidents":
                signals.append(incident_rate(incidents, entry.category, policy, incidents_from))
            elif kind == "alerts":
                count = fired.get(entry.category) if entry.category else None
                signals.append(alert_rate(count, entry.category, policy, alerts_from))
            else:
                signals += [s for s in shared if s.kind == kind]
        out[entry.name] = signals
    return out


# ---- GPU health ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuHealth:
    """The GPU factor every risk is multiplied by, and the readings behind it."""

    factor: float
    source: str
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SLOWDOWN_REASONS = ("hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")


def gpu_factor(readings: Sequence[dict[str, Any]], policy: Risk) -> GpuHealth:
    """The factor from NVML readings, one dict per GPU: `temperature_c`, `slowdown_c`, `ecc_uncorrected`,
    `xid_events`, `throttle_reasons` (absent or None where the board does not say). No GPU: 1.0, with the reason
    the caller gives in `readings` being empty."""
    lo, hi = policy.gpu_factor_range
    g = (
        policy.live.gpu_health
    )  # uncorrected ECC or XID: faulty; slowdown or near the limit: stressed; cool: healthy
    FAULTY, STRESSED, NOMINAL, HEALTHY = g.faulty, g.stressed, g.nominal, g.healthy  # noqa: N806
    NEAR_LIMIT_C, COOL_MARGIN_C = g.near_limit_c, g.cool_margin_c  # noqa: N806
    if not readings:
        return GpuHealth(NOMINAL, "NVML", "no GPU serves here: GPU health neither raises nor lowers a risk")
    worst, why = HEALTHY, []
    for r in readings:
        name = f"GPU {r.get('index', '?')}"
        if (r.get("ecc_uncorrected") or 0) > 0 or (r.get("xid_events") or 0) > 0:
            worst = max(worst, FAULTY)
            why.append(
                f"{name}: {r.get('ecc_uncorrected') or 0} uncorrected ECC, {r.get('xid_events') or 0} XID"
            )
            continue
        slow = [x for x in (r.get("throttle_reasons") or ()) if x in SLOWDOWN_REASONS]
        temp, limit = r.get("temperature_c"), r.get("slowdown_c")
        if slow or (temp is not None and limit is not None and temp >= limit - NEAR_LIMIT_C):
            worst = max(worst, STRESSED)
            why.append(f"{name}: {', '.join(slow) or f'{temp:g} C near its {limit:g} C slowdown'}")
        elif temp is None or limit is None or temp > limit - COOL_MARGIN_C:
            worst = max(worst, NOMINAL)
            why.append(f"{name}: healthy" + (f", {temp:g} C of {limit:g} C" if temp and limit else ""))
        else:
            why.append(f"{name}: healthy and cool, {temp:g} C of {limit:g} C")
    return GpuHealth(min(max(worst, lo), hi), "NVML", "; ".join(why))


def _maybe(read: Callable[..., Any], *args: Any) -> float | None:
    try:
        return float(read(*args))
    except Exception:  # NotSupported on boards without ECC or thresholds: left out, not zero
        return None


def nvml_readings() -> tuple[list[dict[str, Any]], str]:
    """Each local GPU's health from NVML (pynvml), and a sentence on where it came from or why there is none."""
    from serving.gpu import _nvml, gpu_status, read_gpu

    available, reason = gpu_status()
    if not available:
        return [], f"NVML {reason}"
    nvml = _nvml()
    out = []
    for index in range(int(nvml.nvmlDeviceGetCount())):
        sample = read_gpu(nvml, index)
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        reading: dict[str, Any] = {
            "index": index,
            "temperature_c": sample.temperature_c,
            "throttle_reasons": sample.throttle_reasons,
        }
        reading["slowdown_c"] = _maybe(
            nvml.nvmlDeviceGetTemperatureThreshold, handle, nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        )
        reading["ecc_uncorrected"] = _maybe(
            nvml.nvmlDeviceGetTotalEccErrors,
            handle,
            nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            nvml.NVML_VOLATILE_ECC,
        )
        out.append(reading)
    return out, f"NVML on this host ({len(out)} GPU)"
