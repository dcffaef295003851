"""Which level of the search goes first (issue: bottlenecks from the endpoint order the plan): where a request's
time goes on the served endpoint under load near its knee decides it. Serving path dominant (proxy / HTTP,
queueing, serialization) or batch wait dominant: the serving level first, on what serves now, and the model level's
champion is served with the knobs it found. Model compute dominant (or GPU memory short): the model level first, and
the serving level searches around its champion. Pure logic: the flow measures, this decides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from tasks.measure.bottlenecks import Breakdown
from tasks.optimize.serving_search import KneeTrial, usage_sentence

Level = Literal["serving level", "model level"]
Forced = Literal["auto", "serving", "model"]
FORCED: tuple[str, ...] = ("auto", "serving", "model")
# The seed's focus areas a serving knob changes (replicas, batch size and wait, the proxy's load): the serving level
# first. "model computation" and "GPU memory" are changed by the model's variant: the model level first.
SERVING_AREAS = frozenset({"serving path", "batch processing"})


@dataclass(frozen=True)
class PlanOrder:
    """The order the cycle runs its two levels in, and why."""

    first: Level
    source: str  # where the breakdown came from: "endpoint (...)" or "in process (...)"
    reason: str

    @property
    def serving_first(self) -> bool:
        return self.first == "serving level"

    def record(self) -> dict[str, str]:
        return {"first": self.first, "source": self.source, "reason": self.reason}


def check_forced(forced: str, serving_runs: bool = True) -> None:
    """An order the cycle can follow: one of FORCED, and the serving level first only where it runs."""
    if forced not in FORCED:
        raise ValueError(
            f"plan_order={forced!r} is not an order: give auto (the endpoint's dominant phase decides), serving (the "
            "serving level first) or model (the model level first)"
        )
    if forced == "serving" and not serving_runs:
        raise ValueError(
            "plan_order='serving' needs the serving level: give a url and a serving trial budget above 0 "
            "(serving_trials), or plan_order='auto'"
        )


def measured_breakdown(
    served: KneeTrial | None, in_process: Callable[[], Breakdown]
) -> tuple[Breakdown, str]:
    """The breakdown that orders the plan, and where it was measured: what serves now on the endpoint near its knee
    (`served`, with its knee and its replicas' use as findings), else `in_process()` with the reason."""
    if served is not None and served.breakdown is not None and served.breakdown.dominant is not None:
        at = (
            f"at its knee, {served.knee_rps:.1f} req/s"
            if served.meets_sla
            else "at the first rate tried (no rate met the SLA)"
        )
        figures = [
            f"what serves now on the endpoint: knee {served.knee_rps:.1f} req/s"
            + (f", P99 {served.p99_ms:.1f} ms there" if served.p99_ms is not None else ""),
            usage_sentence(served),
        ]
        return (
            replace(served.breakdown, findings=[*figures, *served.breakdown.findings]),
            f"on the endpoint: {served.config.name} on a temporary app beside production, {at}",
        )
    why = (
        " (no endpoint, or the serving level is off)"
        if served is None
        else f" (the endpoint measurement failed: {served.reason})"
        if not served.ok
        else " (no phase timings from the endpoint)"
    )
    return in_process(), "in process: tokenize and compute timed on the worker" + why


def plan_order(
    breakdown: Breakdown, source: str, forced: str = "auto", serving_runs: bool = True
) -> PlanOrder:
    """The level that goes first for `breakdown` (measured at `source`), unless `forced` names one; without the
    serving level (`serving_runs` False) there is only the model level."""
    check_forced(forced, serving_runs)
    if not serving_runs:
        return PlanOrder(
            "model level",
            source,
            "model level only: the serving level runs on an endpoint (a url) with a serving trial budget above 0",
        )
    dominant = breakdown.dominant
    said = (
        f"{dominant.label} dominates ({dominant.share:.0%} of {sum(p.ms for p in breakdown.phases):.1f} ms, focus "
        f"area {breakdown.focus_area})"
        if dominant is not None
        else "no phase timings (no Server-Timing in the answers)"
    )
    if forced != "auto":
        first: Level = "serving level" if forced == "serving" else "model level"
        return PlanOrder(first, source, f"{first} first as asked (plan_order={forced}); measured: {said}")
    if dominant is None:
        return PlanOrder("model level", source, f"model level first (the default): {said}")
    if breakdown.focus_area in SERVING_AREAS:
        return PlanOrder("serving level", source, f"serving level first: {said}")
    return PlanOrder("model level", source, f"model level first: {said}")
