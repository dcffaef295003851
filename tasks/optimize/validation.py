"""Validating a measured candidate against the baseline (accuracy, SLA, noise, decision matrix), and choosing among them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.decision import Decision, all_passed, reasons
from tasks.optimize import improvement
from tasks.optimize.candidates import knobs_of
from tasks.optimize.decision_matrix import CandidateEvidence, MatrixVerdict, score_candidate
from tasks.optimize.trials import Trial
from tasks.policy import Optimization


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
    checks: list[Decision] = field(default_factory=list)
    hit_rate: float | None = (
        None  # response-cache candidates: share of the workload's requests answered from it
    )
    control: bool = False  # what serves now measured again (an A/A check of the measurement), never promoted
    measured_on: str | None = None  # the host (a Ray node beside production) and device the figures came from

    def serving_knobs(self) -> dict[str, int]:
        """The knobs the live deployment needs to serve this candidate as it was measured."""
        return knobs_of(self.params)

    @property
    def median_p99_ms(self) -> float:
        return self.trial.median_p99 if self.trial else float("nan")

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
            "verdict": "A/A control" if self.control else "accepted" if self.accepted else "rejected",
            "reason": self.reason,
            "measured_on": self.measured_on,
        }


def failed_candidate(
    name: str, optimization_type: str, params: dict[str, Any], metric: str, error: BaseException
) -> CandidateResult:
    """A candidate whose build, load, evaluation or measurement raised: rejected with the cause."""
    reason = f"failed: {type(error).__name__}: {error}"
    return CandidateResult(name, optimization_type, params, None, None, None, metric, False, reason)


def validate(
    result: CandidateResult,
    baseline: Trial,
    policy: Optimization,
    sla_p99_ms: float,
    hardware_cost_ratio: float = 0.0,
    sla_on_endpoint: bool = False,
) -> CandidateResult:
    """Accept only a candidate that keeps accuracy, meets the SLA, beats the baseline by more than the noise,
    and passes the decision matrix; every check is kept with its threshold and observed value.
    `sla_on_endpoint`: the serving level chose the knobs on the endpoint (it went first), where the SLA is judged
    per request at the knee; the in-process P99, per batch call of the chosen batch size, is recorded, not judged."""
    if result.trial is None or result.retention is None:
        result.accepted = False
        result.reason = result.reason or "not measured"
        return result
    trial = result.trial
    gain, noise = _gain_and_noise(result, baseline)
    threshold = policy.accuracy_retention_threshold
    checks = [
        Decision(
            "accuracy retention",
            f">= {threshold}",
            round(result.retention, 4),
            result.retention >= threshold,
            f"{result.metric} retention {result.retention:.4f} vs threshold {threshold}",
        ),
        # The seed's "local optimization" pitfall: a throughput gain that breaks the latency SLA is no gain.
        sla_check(trial, sla_p99_ms, sla_on_endpoint),
        Decision(
            "gain exceeds noise",
            f"> spread {noise:.1%}",
            round(gain, 4),
            gain > noise,
            f"throughput {gain:+.1%} vs run-to-run spread {noise:.1%}",
        ),
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
        Decision(
            "decision matrix",
            "every factor meets its threshold",
            result.matrix.weighted_score,
            result.matrix.go,
            result.matrix.reason,
        )
    )
    result.checks = checks
    result.accepted = all_passed(checks)
    result.reason = "passed every check" if result.accepted else reasons(checks)
    return result


def _gain_and_noise(result: CandidateResult, baseline: Trial) -> tuple[float, float]:
    """The candidate's throughput gain over the baseline and the run-to-run spread it must beat (kept on it)."""
    assert result.trial is not None
    gain = improvement.performance_improvement(baseline.median_throughput, result.trial.median_throughput)
    result.gain, result.noise = gain, max(baseline.spread, result.trial.spread)
    return gain, result.noise


def control_verdict(result: CandidateResult, baseline: Trial, floor: float = 0.0) -> CandidateResult:
    """What serves now, measured again as a candidate (an A/A check): never promoted. Measured like for like, its
    gain over the baseline is the measurement's own error and lies within the run-to-run spread; outside it, the
    baseline and the candidates are not measured alike (a warm cache against cold ones, another load). `floor`: the
    smallest difference the cycle acts on (policy `optimization.marginal_gain_stop`): on a quiet machine the repeats
    agree within 1%, closer than two separate measurements of one configuration do, and a gap under the floor
    changes no decision."""
    result.control, result.accepted = True, False
    if result.trial is None:
        result.reason = result.reason or "not measured"
        return result
    gain, noise = _gain_and_noise(result, baseline)
    tolerance, within = aa_tolerance(gain, noise, floor)
    floored = f" (floor {floor:.0%}, the smallest gain the search acts on)" if tolerance > noise else ""
    result.checks = [
        Decision(
            "A/A control",
            f"|gain| <= {tolerance:.1%}",
            round(gain, 4),
            within,
            f"throughput {gain:+.1%} vs run-to-run spread {noise:.1%}{floored}: "
            + ("like for like" if within else "a measurement mismatch"),
        )
    ]
    result.reason = f"what serves now, measured again as a candidate (A/A control, never promoted): {result.checks[0].reason}"
    return result


def aa_tolerance(gain: float, noise: float, floor: float) -> tuple[float, bool]:
    """How far an A/A control's gain may lie from zero (the run-to-run spread, at least `floor`), and whether it does."""
    tolerance = max(noise, floor)
    return tolerance, abs(gain) <= tolerance


def sla_check(trial: Trial, sla_p99_ms: float, on_endpoint: bool) -> Decision:
    """The P99 SLA in process, or, when the endpoint judges it (`on_endpoint`), the in-process figure recorded beside
    where the judgement is made: a P99 per batch call of 32 requests is no request's latency."""
    if on_endpoint:
        return Decision(
            "P99 within SLA",
            f"<= {sla_p99_ms} ms per request, on the endpoint",
            round(trial.median_p99, 2),
            None,  # not judged here: the serving level's knee is the verdict
            f"judged on the endpoint at the champion's knee (in process: median P99 {trial.median_p99:.1f} ms per "
            "batch call, not per request)",
        )
    return Decision(
        "P99 within SLA",
        f"<= {sla_p99_ms} ms",
        round(trial.median_p99, 2),
        trial.median_p99 <= sla_p99_ms,
        f"median P99 {trial.median_p99:.1f} ms vs SLA {sla_p99_ms} ms",
    )


def fastest_passing(results: list[CandidateResult]) -> CandidateResult | None:
    """The accepted candidate with the highest median throughput (not the first that passed)."""
    accepted = [r for r in results if r.accepted and r.trial is not None]
    return max(accepted, key=lambda r: r.trial.median_throughput if r.trial else 0.0, default=None)


def marginal_gain_exhausted(previous_best: float, new_best: float, policy: Optimization) -> bool:
    """The seed's over-optimization pitfall: stop when a stage adds less than the policy's marginal gain."""
    if previous_best <= 0:
        return False
    return (new_best - previous_best) / previous_best < policy.marginal_gain_stop
