"""Risk assessment (seed 7.6): probability x impact matrix and the weighted, GPU-adjusted composite score."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from tasks.policy import Risk, RiskEntry
from tasks.risk.evidence import GpuHealth, Signal


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


# ---- the live assessment ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssessedRisk:
    """One risk of a live assessment: its inputs with their sources, its scores and level."""

    name: str
    category: str | None
    prior: int  # the register's probability
    probability: int
    probability_source: str  # "static (register)" or the signal that set it
    impact: int
    weight: float  # normalised: the register's weights divided by their sum
    gpu_factor: float
    matrix_score: float
    weighted_score: float
    level: str
    action: str
    evidence: list[Signal]

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "evidence"},
            "evidence": [s.as_dict() for s in self.evidence],
        }


@dataclass(frozen=True)
class LiveAssessment:
    model: str
    at: float
    risks: list[AssessedRisk]
    composite: float  # Σ p·i·w·f with w normalised: on the matrix's scale
    overall_level: str
    gpu: GpuHealth
    impact_note: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "at": self.at,
            "composite": self.composite,
            "overall_level": self.overall_level,
            "gpu": self.gpu.as_dict(),
            "impact_note": self.impact_note,
            "risks": [r.as_dict() for r in self.risks],
        }

    def high(self) -> list[AssessedRisk]:
        return [r for r in self.risks if r.level == "high"]


def live_probability(entry: RiskEntry, evidence: list[Signal]) -> tuple[int, str]:
    """The register's probability is the team's prior for the month; live evidence raises it when the service shows
    the risk happening (now or often), and never lowers it: a quiet hour is no evidence against a monthly risk."""
    measured = [s for s in evidence if s.probability is not None]
    top = max(measured, key=lambda s: s.probability or 0, default=None)
    if top is None or (top.probability or 0) <= entry.probability:
        return entry.probability, "static (register)"
    return int(top.probability or entry.probability), f"live: {top.kind} ({top.note})"


def assess_live(
    model: str,
    policy: Risk,
    evidence: dict[str, list[Signal]],
    gpu: GpuHealth,
    affected_share: float = 1.0,
    impact_note: str = "the model takes all of its endpoint's traffic",
    at: float | None = None,
) -> LiveAssessment:
    """Score every register risk on its live inputs: probability from `evidence[name]` (see `live_probability`),
    impact = the register's scaled by the affected share of traffic (at least 1), weight normalised, the GPU factor
    from health; the same matrix and bands as `assess` (the seed's example is its static case)."""
    import time

    if not 0 < affected_share <= 1:
        raise ValueError(
            f"affected_share {affected_share} must be in (0, 1]: the share of traffic a risk hits"
        )
    lo, hi = policy.gpu_factor_range
    if not lo <= gpu.factor <= hi:
        raise ValueError(f"GPU factor {gpu.factor} outside [{lo}, {hi}] ({gpu.note})")
    entries = policy.risk_register
    if not entries:
        raise ValueError("risk register is empty: add entries under risk.risk_register in the policy")
    total = sum(e.weight for e in entries)
    live, chosen = [], []
    for entry in entries:
        p, why = live_probability(entry, evidence.get(entry.name, []))
        impact = max(1, min(5, math.ceil(entry.impact * affected_share - 1e-9)))
        live.append(
            entry.model_copy(
                update={
                    "probability": p,
                    "impact": impact,
                    "weight": entry.weight / total,
                    "gpu_factor": gpu.factor,
                }
            )
        )
        chosen.append(why)
    scored = assess(policy, live)
    risks = [
        AssessedRisk(
            e.name,
            e.category,
            original.probability,
            e.probability,
            why,
            e.impact,
            round(e.weight, 4),
            e.gpu_factor,
            s.matrix_score,
            s.weighted_score,
            s.level,
            s.action,
            evidence.get(e.name, []),
        )
        for e, original, why, s in zip(live, entries, chosen, scored.risks, strict=True)
    ]
    return LiveAssessment(
        model,
        time.time() if at is None else at,
        risks,
        scored.composite,
        band(scored.composite, policy),
        gpu,
        impact_note,
    )


def changes(current: LiveAssessment, previous: dict[str, Any] | None) -> dict[str, str]:
    """Each risk's change against the previous assessment's record (`LiveAssessment.as_dict`), in words."""
    before = {r["name"]: r for r in (previous or {}).get("risks", [])}
    out = {}
    for r in current.risks:
        was = before.get(r.name)
        if was is None:
            out[r.name] = "new"
            continue
        delta = r.matrix_score - float(was["matrix_score"])
        moved = f"{was['level']} -> {r.level}" if was["level"] != r.level else r.level
        out[r.name] = f"{moved} ({delta:+.2f})" if abs(delta) > 1e-9 else f"{moved} (unchanged)"
    return out


def table_rows(assessment: LiveAssessment, previous: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per risk: inputs, the evidence that set the probability, scores, level and change."""
    moved = changes(assessment, previous)
    return [
        {
            "risk": r.name,
            "p": r.probability,
            "i": r.impact,
            "w": r.weight,
            "f": r.gpu_factor,
            "p x i x f": r.matrix_score,
            "score": r.weighted_score,
            "level": r.level,
            "probability from": r.probability_source,
            "change": moved[r.name],
        }
        for r in assessment.risks
    ]


def evidence_rows(assessment: LiveAssessment) -> list[dict[str, Any]]:
    return [
        {
            "risk": r.name,
            "signal": s.kind,
            "probability": "-" if s.probability is None else s.probability,
            "figure": s.note,
            "source": s.source,
            "window": s.window,
        }
        for r in assessment.risks
        for s in r.evidence
    ]


def sentence(assessment: LiveAssessment) -> str:
    high = ", ".join(r.name for r in assessment.high()) or "none"
    return (
        f"{assessment.model}: overall {assessment.composite:g} ({assessment.overall_level}); at high: {high}; "
        f"GPU factor {assessment.gpu.factor:g} ({assessment.gpu.note})"
    )


def heat_map(assessment: LiveAssessment, policy: Risk) -> Any:
    """The 5 x 5 matrix (impact across, probability up), each cell coloured by its band, each risk in its cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    bands = {"low": 0, "medium": 1, "high": 2}
    grid = [[bands[band(p * i, policy)] for i in range(1, 6)] for p in range(1, 6)]
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    ax.imshow(
        grid,
        origin="lower",
        cmap=ListedColormap(["#a6d96a", "#fdae61", "#d7191c"]),
        extent=(0.5, 5.5, 0.5, 5.5),
    )
    placed: dict[tuple[int, int], int] = {}
    for r in assessment.risks:
        cell = (r.impact, r.probability)
        k = placed.get(cell, 0)
        placed[cell] = k + 1
        ax.text(
            r.impact,
            r.probability + 0.3 - 0.22 * k,
            f"{r.name} ({r.matrix_score:g})",
            ha="center",
            va="center",
            fontsize=7,
        )
    ax.set_xticks(range(1, 6))
    ax.set_yticks(range(1, 6))
    ax.set_xlabel("impact")
    ax.set_ylabel("probability")
    ax.set_title(
        f"{assessment.model}: risk matrix, overall {assessment.composite:g} ({assessment.overall_level})"
    )
    fig.tight_layout()
    return fig
