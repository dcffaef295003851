"""The pre-implementation checklist (seed 7.3.9): every item backed by something the cycle measured or recorded;
a failed item stops the cycle before anything is applied."""

from __future__ import annotations

from tasks.decision import Decision
from tasks.measure.bottlenecks import Breakdown
from tasks.optimize.baseline import CycleBaseline
from tasks.optimize.candidates import Candidate
from tasks.policy import Policy
from tasks.records.registry import VersionRef
from tasks.risk.assessment import RiskAssessment


class ChecklistFailed(RuntimeError):
    """A pre-implementation checklist item (seed 7.3.9) is not met: nothing is applied."""


CHECKLIST_ITEMS = (
    "baseline established",
    "bottleneck analysis done",
    "plan reviewed",
    "risk assessed",
    "rollback prepared",
    "test environment ready",
    "monitoring configured",
)


def check_checklist(facts: dict[str, tuple[bool, str]]) -> list[Decision]:
    """Every seed 7.3.9 item must be backed by a fact the flow gathered; the first missing or false one stops."""
    items = []
    for name in CHECKLIST_ITEMS:
        ok, evidence = facts.get(name, (False, "not checked by the flow"))
        items.append(Decision(name, "met before anything is applied", None, ok, evidence))
    failed = [i for i in items if not i.passed]
    if failed:
        first = failed[0]
        raise ChecklistFailed(f"pre-implementation checklist: '{first.name}' is not met: {first.reason}")
    return items


def cycle_facts(
    baseline: CycleBaseline,
    bottleneck: Breakdown,
    plan: list[Candidate],
    policy: Policy,
    risk: RiskAssessment,
    frozen: str | None,
    champion: VersionRef | None,
    url: str | None,
    monitoring: tuple[bool, str] | None = None,
) -> dict[str, tuple[bool, str]]:
    """The evidence for each checklist item, from what the cycle measured and recorded so far."""
    trial = baseline.measured.trial
    missing_types = sorted({c.optimization_type for c in plan} - set(policy.optimization.scoring.by_type))
    return {
        "baseline established": (
            trial.median_throughput > 0,
            f"{baseline.candidate.variant}: {trial.median_throughput:.1f} items/s over {len(trial.throughput)} repeats, "
            f"{baseline.measured.metric} {baseline.measured.value:.4f}",
        ),
        "bottleneck analysis done": (
            bottleneck.dominant is not None,
            f"dominant: {bottleneck.dominant.label if bottleneck.dominant else 'none'} ({bottleneck.focus_area})",
        ),
        "plan reviewed": (
            bool(plan) and not missing_types,
            f"{len(plan)} candidates, each type scored by the decision matrix"
            if plan and not missing_types
            else f"empty plan or types without matrix scores: {missing_types}",
        ),
        # an error-rate alert froze changes (SPEC §2): nothing is applied
        "risk assessed": (
            risk.overall_level != "high" and frozen is None,
            f"risk register overall {risk.overall_score} ({risk.overall_level})"
            + (f"; changes frozen by rollout risk control: {frozen}" if frozen else "; no change freeze"),
        ),
        "rollback prepared": (
            champion is not None and bool(champion.sha256),
            f"champion v{champion.version} sha256 {champion.sha256[:12]}… recorded"
            if champion
            else "no champion recorded",
        ),
        "test environment ready": (
            baseline.reference_value > 0,
            f"evaluator {baseline.measured.metric} runs; FP32 reference {baseline.reference_value:.4f}",
        ),
        # measured where a Prometheus is given (the weekly deployment passes one): production's coverage of the
        # series the policy requires; a cycle run by hand without one says it did not measure
        "monitoring configured": monitoring
        or (
            True,
            f"not measured: no Prometheus given (endpoint {url} answers; pass prometheus=<url> to measure)"
            if url
            else "in-process measurement: no endpoint to monitor",
        ),
    }
