"""The seed's decision matrix (7.3.5): measured data -> 1-10 scores -> weighted score and go/no-go."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.policy import SEED_RETENTION_FLOOR, Optimization


@dataclass(frozen=True)
class CandidateEvidence:
    """What was measured for one candidate, against the current baseline."""

    name: str
    optimization_type: str
    throughput_gain: float  # performance improvement ratio, (after - before) / before
    retention: float  # accuracy retention vs the baseline (evaluator's metric)
    worst_case_retention: float | None = None  # e.g. minimum cosine for an embedding model
    p99_spread: float = 0.0  # relative run-to-run spread of P99 (max - min) / median
    hardware_cost_ratio: float = (
        0.0  # extra hardware cost per request / the baseline's (improvement.hardware_cost_ratio)
    )


@dataclass(frozen=True)
class FactorScore:
    factor: str
    score: float
    weight: float
    threshold: float
    direction: str
    passed: bool
    evidence: str


@dataclass(frozen=True)
class MatrixVerdict:
    candidate: str
    factors: list[FactorScore]
    weighted_score: float
    go: bool
    reason: str
    rows: list[dict[str, object]] = field(default_factory=list)


def _clip(value: float) -> float:
    return round(min(10.0, max(1.0, value)), 2)


def score_candidate(evidence: CandidateEvidence, policy: Optimization) -> MatrixVerdict:
    """Score the five factors from measurements; go only if every factor meets its threshold."""
    scoring = policy.scoring
    if evidence.optimization_type not in scoring.by_type:
        known = ", ".join(sorted(scoring.by_type))
        raise ValueError(
            f"candidate {evidence.name!r}: optimization type {evidence.optimization_type!r} has no base scores "
            f"in policy optimization.scoring.by_type (known: {known})"
        )
    base = scoring.by_type[evidence.optimization_type]
    floor = SEED_RETENTION_FLOOR
    worst = evidence.worst_case_retention if evidence.worst_case_retention is not None else evidence.retention
    raw = {
        "performance_gain": (
            1 + 9 * max(0.0, evidence.throughput_gain) / scoring.gain_for_full_score,
            f"throughput gain {evidence.throughput_gain:+.1%}",
        ),
        # retention 1.0 scores 10; the seed's loosest floor scores 1.
        "accuracy_impact": (
            10 - 9 * max(0.0, 1 - evidence.retention) / (1 - floor),
            f"retention {evidence.retention:.4f} (floor {floor})",
        ),
        "implementation_cost": (
            base.cost + scoring.hardware_cost_weight * max(0.0, evidence.hardware_cost_ratio),
            f"base {base.cost} for {evidence.optimization_type}, hardware cost {evidence.hardware_cost_ratio:+.0%}",
        ),
        "technical_risk": (
            base.risk
            + scoring.spread_risk_weight * max(0.0, evidence.p99_spread)
            + scoring.fidelity_risk_weight * max(0.0, 1 - worst) / 10,
            f"base {base.risk}, P99 spread {evidence.p99_spread:.1%}, worst-case retention {worst:.4f}",
        ),
        "implementation_difficulty": (
            base.difficulty,
            f"base {base.difficulty} for {evidence.optimization_type}",
        ),
    }
    factors = []
    for name, rule in policy.decision_matrix.items():
        value, why = raw[name]
        score = _clip(value)
        passed = score > rule.threshold if rule.direction == "above" else score < rule.threshold
        factors.append(FactorScore(name, score, rule.weight, rule.threshold, rule.direction, passed, why))
    # "below" factors are costs: a low score is good, so they count as (11 - score) in the weighted total.
    weighted = sum(f.weight * (f.score if f.direction == "above" else 11 - f.score) for f in factors)
    failed = [f for f in factors if not f.passed]
    go = not failed
    reason = (
        "every factor meets its threshold"
        if go
        else "; ".join(
            f"{f.factor} {f.score} not {'>' if f.direction == 'above' else '<'} {f.threshold} ({f.evidence})"
            for f in failed
        )
    )
    rows: list[dict[str, object]] = [
        {
            "factor": f.factor,
            "score": f.score,
            "weight": f.weight,
            "threshold": f"{'>' if f.direction == 'above' else '<'} {f.threshold}",
            "pass": f.passed,
            "evidence": f.evidence,
        }
        for f in factors
    ]
    return MatrixVerdict(evidence.name, factors, round(weighted, 3), go, reason, rows)
