"""The pre-implementation checklist (seed 7.3.9): every item backed by something the cycle measured or recorded;
a failed item stops the cycle before anything is applied."""

from __future__ import annotations

from tasks.decision import Decision
from tasks.measure.bottlenecks import Breakdown
from tasks.optimize.baseline import CycleBaseline
from tasks.optimize.candidates import CONTROL_STAGE, Candidate
from tasks.policy import Policy
from tasks.records.registry import VersionRef
from tasks.risk.tracking import Recorded


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
    risk: Recorded | None,
    frozen: str | None,
    champion: VersionRef | None,
    url: str | None,
    monitoring: tuple[bool, str] | None = None,
) -> dict[str, tuple[bool, str]]:
    """The evidence for each checklist item, from what the cycle measured and recorded so far."""
    trial = baseline.measured.trial
    # an A/A control (what serves now, measured again) is never promoted: the matrix never scores it
    controls = sum(1 for c in plan if c.stage == CONTROL_STAGE)
    scored = {c.optimization_type for c in plan if c.stage != CONTROL_STAGE}
    missing_types = sorted(scored - set(policy.optimization.scoring.by_type))
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
            f"{len(plan) - controls} candidates, each type scored by the decision matrix"
            + (f", and {controls} A/A control (what serves now, never promoted)" if controls else "")
            if plan and not missing_types
            else f"empty plan or types without matrix scores: {missing_types}",
        ),
        # the latest live assessment (flows/risk_assessment.py), recent enough and with no risk at high; an
        # error-rate alert froze changes (SPEC §2): nothing is applied
        "risk assessed": risk_fact(risk, policy.risk.live.max_age_days, frozen),
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


def risk_fact(risk: Recorded | None, max_age_days: float, frozen: str | None) -> tuple[bool, str]:
    """Met when the latest live risk assessment is at most `max_age_days` old, has no risk at high, and no
    rollout risk control froze changes."""
    freeze = f"; changes frozen by rollout risk control: {frozen}" if frozen else "; no change freeze"
    if risk is None:
        return False, "no live risk assessment recorded: run `inferops risk assess`" + freeze
    age = risk.age_days()
    said = (
        f"live risk assessment {risk.run_id[:8]} ({age:.1f} d old): overall {risk.overall_level}, at high: "
        f"{', '.join(risk.high) or 'none'}"
    )
    if age > max_age_days:
        return False, f"{said}; older than the policy's {max_age_days:g} d (risk.live.max_age_days)" + freeze
    return not risk.high and frozen is None, said + freeze
