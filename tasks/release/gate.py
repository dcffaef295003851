"""The phased rollout gate's arithmetic (seed 7.1.1): item scores, minimums, weighted score, verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.policy import RolloutGate


@dataclass(frozen=True)
class ItemResult:
    """One gate item as measured: the share of its checks that passed, and what each check saw."""

    item: str
    observed: float  # 0-1
    checks: list[dict[str, object]] = field(default_factory=list)


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    weighted_score: float
    rows: list[dict[str, object]]
    reason: str


def share_passed(checks: list[dict[str, object]]) -> float:
    """Fraction of checks whose `passed` is true; an item with no checks has measured nothing and scores 0."""
    if not checks:
        return 0.0
    return sum(1 for c in checks if c.get("passed")) / len(checks)


def decide(results: list[ItemResult], policy: RolloutGate) -> GateVerdict:
    """Pass only if every item meets its minimum; the weighted score is reported either way."""
    by_item = {r.item: r for r in results}
    missing = sorted(set(policy.items) - set(by_item))
    if missing:
        raise ValueError(f"gate items not measured: {', '.join(missing)} (every item must be measured)")
    rows: list[dict[str, object]] = []
    failed = []
    for name, rule in policy.items.items():
        result = by_item[name]
        ok = result.observed >= rule.minimum
        failing = [c for c in result.checks if not c.get("passed")]
        reason = (
            "meets minimum"
            if ok
            else "; ".join(str(c.get("reason") or c.get("check")) for c in failing[:3]) or "below minimum"
        )
        rows.append(
            {
                "item": name,
                "weight": rule.weight,
                "minimum": rule.minimum,
                "observed": round(result.observed, 4),
                "passed": ok,
                "reason": reason,
            }
        )
        if not ok:
            failed.append(f"{name} {result.observed:.2%} < {rule.minimum:.2%}")
    weighted = sum(policy.items[r.item].weight * r.observed for r in results if r.item in policy.items)
    passed = not failed
    reason = "every item meets its minimum" if passed else "failed: " + ", ".join(failed)
    return GateVerdict(passed, round(weighted, 4), rows, reason)


def render_markdown(verdict: GateVerdict, title: str = "Phase gate") -> str:
    """The verdict as a markdown table: threshold, observed value and reason for each item."""
    lines = [
        f"# {title}: {'PASS' if verdict.passed else 'FAIL'}",
        "",
        f"Weighted score **{verdict.weighted_score:.2%}** — {verdict.reason}",
        "",
        "| item | weight | minimum | observed | verdict | reason |",
        "|---|---|---|---|---|---|",
    ]
    for r in verdict.rows:
        lines.append(
            f"| {r['item']} | {float(r['weight']):.0%} | {float(r['minimum']):.1%} | "  # type: ignore[arg-type]
            f"{float(r['observed']):.2%} | {'pass' if r['passed'] else 'FAIL'} | {r['reason']} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines) + "\n"
