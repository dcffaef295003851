"""Risk control while a new model takes traffic (seed 7.1.2): roll back, alert and freeze, or scale out."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.policy import RolloutRisk


@dataclass(frozen=True)
class Observation:
    """A window of live measurements of the serving model, compared with its recorded baseline."""

    p99_ms: float
    throughput_rps: float
    error_rate: float
    utilisation: float  # the busiest resource's utilisation, 0-1 (GPU where there is one, else CPU)


@dataclass(frozen=True)
class RiskAction:
    level: str  # high | medium | low
    action: str  # rollback | alert_and_freeze | scale_out
    observed: float
    threshold: float
    reason: str


def evaluate(baseline: Observation, current: Observation, policy: RolloutRisk) -> list[RiskAction]:
    """Every action the policy demands for this window, most severe first; empty when all is well."""
    if baseline.p99_ms <= 0 or baseline.throughput_rps <= 0:
        raise ValueError(
            f"baseline must have positive P99 and throughput to compare against, got "
            f"p99={baseline.p99_ms} ms, throughput={baseline.throughput_rps} req/s"
        )
    actions: list[RiskAction] = []
    latency_dev = (current.p99_ms - baseline.p99_ms) / baseline.p99_ms
    throughput_dev = (baseline.throughput_rps - current.throughput_rps) / baseline.throughput_rps
    deviation, what = max((latency_dev, "P99 latency"), (throughput_dev, "throughput"))
    if deviation >= policy.perf_deviation_rollback:
        actions.append(
            RiskAction(
                "high",
                "rollback",
                round(deviation, 4),
                policy.perf_deviation_rollback,
                f"{what} deviates {deviation:.0%} from baseline (>= {policy.perf_deviation_rollback:.0%}): "
                "roll back at once",
            )
        )
    if current.error_rate > policy.error_rate_alert:
        actions.append(
            RiskAction(
                "medium",
                "alert_and_freeze",
                current.error_rate,
                policy.error_rate_alert,
                f"error rate {current.error_rate:.2%} > {policy.error_rate_alert:.0%}: urgent fix, "
                "stop further changes",
            )
        )
    if current.utilisation > policy.utilisation_scale_out:
        actions.append(
            RiskAction(
                "low",
                "scale_out",
                current.utilisation,
                policy.utilisation_scale_out,
                f"utilisation {current.utilisation:.0%} > {policy.utilisation_scale_out:.0%}: add replicas",
            )
        )
    return actions
