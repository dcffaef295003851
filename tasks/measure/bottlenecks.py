"""Where a request's time goes, and which of the seed's focus areas is the bottleneck: pure functions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Server-Timing phase names (contracts) -> the seed's focus areas, plus the serving path the issue adds.
PHASE_AREAS: dict[str, str] = {
    "proxy_http": "serving path",
    "queue": "serving path",
    "batch_wait": "batch processing",
    "tokenize": "model computation",
    "compute": "model computation",
    "serialize": "serving path",
}
PHASE_LABELS: dict[str, str] = {
    "proxy_http": "proxy / HTTP (client latency minus server total)",
    "queue": "queueing (waiting for a free engine)",
    "batch_wait": "batch wait (waiting for the batch to fill)",
    "tokenize": "preprocessing (tokenization)",
    "compute": "model compute",
    "serialize": "serialization",
}
# GPU memory below this free share makes GPU memory a finding even when it is not the per-request cost.
# Not in the policy yet (see report): a display/diagnosis threshold, not a gate.
GPU_HEADROOM_MIN = 0.10


@dataclass(frozen=True)
class Phase:
    name: str
    label: str
    area: str
    ms: float
    share: float


@dataclass
class Breakdown:
    """Per-request time by phase, the dominant one with its evidence, and the extra findings."""

    client_ms: float
    server_ms: float
    phases: list[Phase]
    dominant: Phase | None
    focus_area: str
    evidence: str
    findings: list[str] = field(default_factory=list)


def breakdown(
    client_ms: float,
    server_timing_ms: dict[str, float],
    *,
    model_load_s: float | None = None,
    gpu_memory_headroom: float | None = None,
    gpu_status: str | None = None,
    gpu_headroom_min: float = GPU_HEADROOM_MIN,
) -> Breakdown:
    """Split the mean client latency into phases (server timings + proxy/HTTP remainder) and name the dominant one."""
    server_ms = math.fsum(v for k, v in server_timing_ms.items() if k != "total")
    if "total" in server_timing_ms:
        server_ms = max(server_ms, server_timing_ms["total"])
    findings: list[str] = []
    timed = bool(server_timing_ms) and math.isfinite(client_ms)
    raw: dict[str, float] = {k: v for k, v in server_timing_ms.items() if k != "total"}
    if timed:
        raw["proxy_http"] = max(0.0, client_ms - server_ms)
    total = math.fsum(raw.values())
    phases = [
        Phase(
            name=name,
            label=PHASE_LABELS.get(name, f"other ({name})"),
            area=PHASE_AREAS.get(name, "serving path"),
            ms=ms,
            share=ms / total if total > 0 else 0.0,
        )
        for name, ms in sorted(raw.items(), key=lambda kv: -kv[1])
    ]
    dominant = phases[0] if phases and total > 0 else None
    if dominant is None:
        focus = "unknown"
        evidence = (
            "no Server-Timing header in the responses: only the client latency "
            f"({client_ms:.1f} ms) is known; serve through inferops to see the phases"
        )
    else:
        focus = dominant.area
        evidence = (
            f"{dominant.label} takes {dominant.ms:.1f} ms of {total:.1f} ms per request ({dominant.share:.0%}); "
            + ", ".join(f"{p.name} {p.ms:.1f} ms" for p in phases[1:])
        ).rstrip("; ")
    if model_load_s is not None:
        findings.append(
            f"model loading: {model_load_s:.2f} s per replica start (paid at deploy and scale-out)"
        )
    if gpu_memory_headroom is not None:
        verdict = "low" if gpu_memory_headroom < gpu_headroom_min else "ok"
        findings.append(
            f"GPU memory: {gpu_memory_headroom:.0%} free (threshold {gpu_headroom_min:.0%}) -> {verdict}"
            + ("; larger batches or more replicas will not fit" if verdict == "low" else "")
        )
        if verdict == "low" and dominant is not None and dominant.area == "model computation":
            focus = "GPU memory"
            evidence += f"; GPU memory headroom {gpu_memory_headroom:.0%} < {gpu_headroom_min:.0%}"
    elif gpu_status:
        findings.append(f"GPU memory: {gpu_status}")
    return Breakdown(client_ms, server_ms, phases, dominant, focus, evidence, findings)


def render_markdown(result: Breakdown, title: str = "Bottleneck breakdown") -> str:
    """A markdown table of the phases, the dominant bottleneck and the findings."""
    lines = [f"## {title}", ""]
    lines.append(
        f"- client latency (mean): {result.client_ms:.2f} ms; server total: {result.server_ms:.2f} ms"
    )
    lines.append(f"- dominant bottleneck: **{result.focus_area}** — {result.evidence}")
    lines += ["", "| phase | focus area | ms | share |", "|---|---|---:|---:|"]
    for p in result.phases:
        lines.append(f"| {p.label} | {p.area} | {p.ms:.2f} | {p.share:.0%} |")
    if result.findings:
        lines += ["", *(f"- {f}" for f in result.findings)]
    return "\n".join(lines) + "\n"
