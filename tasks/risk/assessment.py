"""Risk assessment (seed 7.6): probability x impact matrix and the weighted, GPU-adjusted composite score."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.policy import Risk, RiskEntry


@dataclass(frozen=True)
class RiskScore:
    name: str
    matrix_score: float  # p x i x gpu_factor
    weighted_score: float  # p x i x w x gpu_factor
    level: str
    action: str


@dataclass(frozen=True)
class RiskAssessment:
    risks: list[RiskScore]
    composite: float  # sum of weighted scores
    overall_score: float  # composite normalised by the weights' sum: comparable to the matrix bands
    overall_level: str


_ACTIONS = {"high": "act now", "medium": "plan a response", "low": "accept, monitor"}


def band(score: float, policy: Risk) -> str:
    """Matrix band: low < medium threshold <= medium < high threshold <= high."""
    if score >= policy.matrix_bands["high"]:
        return "high"
    if score >= policy.matrix_bands["medium"]:
        return "medium"
    return "low"


def assess(policy: Risk, register: list[RiskEntry] | None = None) -> RiskAssessment:
    """Score every risk in the register (the policy's by default) and the overall level."""
    entries = register if register is not None else policy.risk_register
    if not entries:
        raise ValueError("risk register is empty: add entries under risk.risk_register in the policy")
    lo, hi = policy.gpu_factor_range
    scores = []
    for entry in entries:
        if not lo <= entry.gpu_factor <= hi:
            raise ValueError(f"risk {entry.name!r}: gpu_factor {entry.gpu_factor} outside [{lo}, {hi}]")
        matrix = entry.probability * entry.impact * entry.gpu_factor
        level = band(matrix, policy)
        scores.append(
            RiskScore(entry.name, round(matrix, 4), round(matrix * entry.weight, 4), level, _ACTIONS[level])
        )
    composite = sum(s.weighted_score for s in scores)
    weight_sum = sum(e.weight for e in entries)
    overall = composite / weight_sum
    return RiskAssessment(scores, round(composite, 4), round(overall, 4), band(overall, policy))
