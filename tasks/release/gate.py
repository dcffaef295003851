"""The phased rollout gate's arithmetic (seed 7.1.1): item scores, minimums, weighted score, verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.decision import Decision, decisions_markdown, reasons
from tasks.policy import Policy, RolloutGate

# Failing checks quoted in an item's reason (the full evidence is in the checks table).
REASONS_QUOTED = 3


@dataclass(frozen=True)
class ItemResult:
    """One gate item as measured: the share of its applicable checks that passed, and every check."""

    item: str
    observed: float  # 0-1
    checks: list[Decision] = field(default_factory=list)


@dataclass(frozen=True)
class GateVerdict:
    """The gate's decision: every item held to its minimum, the weighted score, and why."""

    passed: bool
    weighted_score: float
    items: list[Decision]
    reason: str

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One dict per item (item, weight, minimum, observed, passed, reason), for tables and JSON."""
        return [
            {
                "item": d.name,
                "weight": d.extra["weight"],
                "minimum": d.threshold,
                "observed": d.observed,
                "passed": d.passed,
                "reason": d.reason,
            }
            for d in self.items
        ]


def decide(results: list[ItemResult], policy: RolloutGate) -> GateVerdict:
    """Pass only if every item meets its minimum; the weighted score is reported either way."""
    by_item = {r.item: r for r in results}
    missing = sorted(set(policy.items) - set(by_item))
    if missing:
        raise ValueError(f"gate items not measured: {', '.join(missing)} (every item must be measured)")
    items = []
    for name, rule in policy.items.items():
        result = by_item[name]
        ok = result.observed >= rule.minimum
        reason = "meets minimum" if ok else (reasons(result.checks, REASONS_QUOTED) or "below minimum")
        items.append(
            Decision(name, rule.minimum, round(result.observed, 4), ok, reason, {"weight": rule.weight})
        )
    weighted = sum(policy.items[r.item].weight * r.observed for r in results if r.item in policy.items)
    failed = [f"{d.name} {float(d.observed):.2%} < {float(d.threshold):.2%}" for d in items if not d.passed]
    reason = "every item meets its minimum" if not failed else "failed: " + ", ".join(failed)
    return GateVerdict(not failed, round(weighted, 4), items, reason)


def render_markdown(verdict: GateVerdict, title: str = "Phase gate") -> str:
    """The verdict as markdown: the weighted score, then each item's minimum, observed share, verdict and reason."""
    head = f"# {title}: {'PASS' if verdict.passed else 'FAIL'}\n\nWeighted score **{verdict.weighted_score:.2%}** — {verdict.reason}\n\n"
    return head + decisions_markdown(verdict.items)


@dataclass(frozen=True)
class GateSettings:
    """One gate run's durations and approval point: the policy's, with the caller's overrides applied once."""

    stability_s: float
    performance_s: float
    risk_window_s: float
    approval_timeout_s: int
    require_approval: bool

    @classmethod
    def resolve(
        cls,
        policy: Policy,
        *,
        stability_s: float | None = None,
        performance_s: float | None = None,
        risk_window_s: float | None = None,
        approval_timeout_s: int | None = None,
        require_approval: bool | None = None,
    ) -> GateSettings:
        gate = policy.rollout_gate
        return cls(
            stability_s if stability_s is not None else gate.stability_duration_s,
            performance_s if performance_s is not None else policy.test_suite.benchmark.duration_s,
            risk_window_s if risk_window_s is not None else gate.risk_window_s,
            approval_timeout_s if approval_timeout_s is not None else gate.approval_timeout_s,
            require_approval if require_approval is not None else gate.require_approval,
        )

    def params(self, model: str, url: str, alias: str, version: str | None, policy: Policy) -> dict[str, Any]:
        """What the gate's MLflow run records as its parameters."""
        return {
            "model": model,
            "url": url,
            "candidate_alias": alias,
            "candidate_version": version,
            "stability_duration_s": self.stability_s,
            "performance_duration_s": self.performance_s,
            "target_qps": policy.rollout_gate.target_qps,
            "sla_p99_ms": policy.rollout_gate.sla_p99_ms,
        }
