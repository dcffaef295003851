"""The optimization cycle's logic (seed 7.3): checklist, repeated measurements, validation, selection, report."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from tasks.optimize import improvement
from tasks.optimize.decision_matrix import CandidateEvidence, MatrixVerdict, score_candidate
from tasks.policy import Optimization


class ChecklistFailed(RuntimeError):
    """A pre-implementation checklist item (seed 7.3.9) is not met: nothing is applied."""


@dataclass(frozen=True)
class ChecklistItem:
    item: str
    passed: bool
    evidence: str


CHECKLIST_ITEMS = (
    "baseline established",
    "bottleneck analysis done",
    "plan reviewed",
    "risk assessed",
    "rollback prepared",
    "test environment ready",
    "monitoring configured",
)


def check_checklist(facts: dict[str, tuple[bool, str]]) -> list[ChecklistItem]:
    """Every seed 7.3.9 item must be backed by a fact the flow gathered; the first missing or false one stops."""
    items = []
    for name in CHECKLIST_ITEMS:
        ok, evidence = facts.get(name, (False, "not checked by the flow"))
        items.append(ChecklistItem(name, ok, evidence))
    failed = [i for i in items if not i.passed]
    if failed:
        first = failed[0]
        raise ChecklistFailed(f"pre-implementation checklist: '{first.item}' is not met: {first.evidence}")
    return items


@dataclass(frozen=True)
class Trial:
    """Repeated measurements of one configuration: throughput (items/s) and P99 latency (ms) per repeat."""

    throughput: tuple[float, ...]
    p99_ms: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.throughput or len(self.throughput) != len(self.p99_ms):
            raise ValueError("a trial needs one or more repeats, each with a throughput and a P99")

    @property
    def median_throughput(self) -> float:
        return statistics.median(self.throughput)

    @property
    def median_p99(self) -> float:
        return statistics.median(self.p99_ms)

    @property
    def spread(self) -> float:
        """Relative run-to-run spread of throughput: (max - min) / median."""
        return (max(self.throughput) - min(self.throughput)) / self.median_throughput

    @property
    def p99_spread(self) -> float:
        return (max(self.p99_ms) - min(self.p99_ms)) / self.median_p99 if self.median_p99 > 0 else 0.0


@dataclass
class CandidateResult:
    name: str
    optimization_type: str
    params: dict[str, Any]
    trial: Trial | None
    retention: float | None
    worst_case_retention: float | None
    metric: str
    accepted: bool = False
    reason: str = ""
    gain: float | None = None
    noise: float | None = None
    matrix: MatrixVerdict | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    hit_rate: float | None = None  # response-cache candidates: share of the workload's requests answered from it

    def row(self) -> dict[str, Any]:
        return {
            "candidate": self.name,
            "type": self.optimization_type,
            "throughput": round(self.trial.median_throughput, 1) if self.trial else None,
            "p99_ms": round(self.trial.median_p99, 2) if self.trial else None,
            "gain": None if self.gain is None else round(self.gain, 4),
            "spread": None if self.noise is None else round(self.noise, 4),
            "retention": None if self.retention is None else round(self.retention, 4),
            "cache_hit_rate": None if self.hit_rate is None else round(self.hit_rate, 4),
            "matrix_score": self.matrix.weighted_score if self.matrix else None,
            "verdict": "accepted" if self.accepted else "rejected",
            "reason": self.reason,
        }


def failed_candidate(name: str, optimization_type: str, params: dict[str, Any], metric: str, error: BaseException) -> CandidateResult:
    """A candidate whose build, load, evaluation or measurement raised: rejected with the cause."""
    reason = f"failed: {type(error).__name__}: {error}"
    return CandidateResult(name, optimization_type, params, None, None, None, metric, False, reason)


def validate(
    result: CandidateResult,
    baseline: Trial,
    policy: Optimization,
    sla_p99_ms: float,
    hardware_cost_ratio: float = 0.0,
) -> CandidateResult:
    """Accept only a candidate that keeps accuracy, meets the SLA, beats the baseline by more than the noise,
    and passes the decision matrix; every check is kept with its threshold and observed value."""
    if result.trial is None or result.retention is None:
        result.accepted = False
        result.reason = result.reason or "not measured"
        return result
    trial = result.trial
    gain = improvement.performance_improvement(baseline.median_throughput, trial.median_throughput)
    noise = max(baseline.spread, trial.spread)
    result.gain, result.noise = gain, noise
    threshold = policy.accuracy_retention_threshold
    checks = [
        {
            "check": "accuracy retention",
            "threshold": f">= {threshold}",
            "observed": round(result.retention, 4),
            "passed": result.retention >= threshold,
            "reason": f"{result.metric} retention {result.retention:.4f} vs threshold {threshold}",
        },
        {
            # The seed's "local optimization" pitfall: a throughput gain that breaks the latency SLA is no gain.
            "check": "P99 within SLA",
            "threshold": f"<= {sla_p99_ms} ms",
            "observed": round(trial.median_p99, 2),
            "passed": trial.median_p99 <= sla_p99_ms,
            "reason": f"median P99 {trial.median_p99:.1f} ms vs SLA {sla_p99_ms} ms",
        },
        {
            "check": "gain exceeds noise",
            "threshold": f"> spread {noise:.1%}",
            "observed": round(gain, 4),
            "passed": gain > noise,
            "reason": f"throughput {gain:+.1%} vs run-to-run spread {noise:.1%}",
        },
    ]
    result.matrix = score_candidate(
        CandidateEvidence(
            result.name,
            result.optimization_type,
            gain,
            result.retention,
            result.worst_case_retention,
            trial.p99_spread,
            hardware_cost_ratio,
        ),
        policy,
    )
    checks.append(
        {
            "check": "decision matrix",
            "threshold": "every factor meets its threshold",
            "observed": result.matrix.weighted_score,
            "passed": result.matrix.go,
            "reason": result.matrix.reason,
        }
    )
    result.checks = checks
    failed = [c for c in checks if not c["passed"]]
    result.accepted = not failed
    result.reason = "passed every check" if not failed else "; ".join(str(c["reason"]) for c in failed)
    return result


def fastest_passing(results: list[CandidateResult]) -> CandidateResult | None:
    """The accepted candidate with the highest median throughput (not the first that passed)."""
    accepted = [r for r in results if r.accepted and r.trial is not None]
    return max(accepted, key=lambda r: r.trial.median_throughput if r.trial else 0.0, default=None)


def marginal_gain_exhausted(previous_best: float, new_best: float, policy: Optimization) -> bool:
    """The seed's over-optimization pitfall: stop when a stage adds less than the policy's marginal gain."""
    if previous_best <= 0:
        return False
    return (new_best - previous_best) / previous_best < policy.marginal_gain_stop


def roi_figures(baseline_rps: float, final_rps: float, policy: Optimization, target_qps: float) -> dict[str, float]:
    """Cost per million requests before/after, cost saving rate, yearly benefit at the target load, and ROI."""
    cost_h = policy.hardware_cost_per_hour
    before = improvement.cost_per_million(baseline_rps, cost_h)
    after = improvement.cost_per_million(final_rps, cost_h)
    yearly_requests_m = target_qps * 3600 * 24 * 365 / 1_000_000
    benefit = (before - after) * yearly_requests_m
    investment = policy.investment_hours * policy.engineer_cost_per_hour
    return {
        "cost_per_million_before": round(before, 4),
        "cost_per_million_after": round(after, 4),
        "cost_saving_rate": round(improvement.cost_saving_rate(before, after), 4),
        "yearly_benefit_usd": round(benefit, 2),
        "investment_usd": round(investment, 2),
        "roi": round(improvement.roi(benefit, investment), 4) if investment > 0 else float("inf"),
        "performance_improvement": round(improvement.performance_improvement(baseline_rps, final_rps), 4),
    }


def render_report(
    model: str,
    baseline: dict[str, Any],
    bottleneck: str,
    results: list[CandidateResult],
    champion: CandidateResult | None,
    final: dict[str, Any],
    roi: dict[str, float],
    checklist: list[ChecklistItem],
) -> str:
    """The cycle's report as markdown: baseline, bottlenecks, each candidate's result and reason, outcome."""
    lines = [f"# Optimization cycle: {model}", ""]
    lines += ["## Baseline", ""] + [f"- {k}: {v}" for k, v in baseline.items()] + [""]
    lines += ["## Bottleneck analysis", "", bottleneck, ""]
    lines += ["## Pre-implementation checklist", "", "| item | ok | evidence |", "|---|---|---|"]
    lines += [f"| {c.item} | {'yes' if c.passed else 'NO'} | {c.evidence} |" for c in checklist] + [""]
    lines += [
        "## Candidates",
        "",
        "| candidate | type | throughput | P99 ms | gain | spread | retention | matrix | verdict | reason |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        row = r.row()
        lines.append(
            "| " + " | ".join("" if row[k] is None else str(row[k]) for k in row) + " |"
        )
    lines += ["", "## Outcome", ""]
    if champion is None:
        lines.append("No candidate passed: the previous champion keeps serving.")
    else:
        lines.append(f"Champion: **{champion.name}** ({champion.reason}).")
    lines += [""] + [f"- {k}: {v}" for k, v in final.items()]
    lines += ["", "## Improvement and ROI", ""] + [f"- {k}: {v}" for k, v in roi.items()]
    return "\n".join(lines) + "\n"
