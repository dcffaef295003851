"""The seed's improvement formulas (7.3.4), each a one-liner with its guard against division by zero, and the
cycle's cost and ROI figures built from them."""

from __future__ import annotations

from tasks.policy import Optimization


def _require_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0 to compute a ratio, got {value}")


def performance_improvement(before: float, after: float) -> float:
    """(after - before) / before: +1.0 means twice the throughput."""
    _require_positive("before", before)
    return (after - before) / before


def efficiency_gain(before_efficiency: float, after_efficiency: float) -> float:
    _require_positive("before_efficiency", before_efficiency)
    return after_efficiency / before_efficiency


def cost_saving_rate(cost_before: float, cost_after: float) -> float:
    _require_positive("cost_before", cost_before)
    return (cost_before - cost_after) / cost_before


def roi(benefit: float, investment: float) -> float:
    _require_positive("investment", investment)
    return (benefit - investment) / investment


def gpu_utilisation_improvement(before: float, after: float) -> float:
    _require_positive("before", before)
    return (after - before) / before


def accuracy_retention(accuracy_before: float, accuracy_after: float) -> float:
    _require_positive("accuracy_before", accuracy_before)
    return accuracy_after / accuracy_before


def cost_per_million(throughput_rps: float, cost_per_hour: float) -> float:
    """Serving cost of one million requests at a sustained throughput on hardware billed per hour."""
    _require_positive("throughput_rps", throughput_rps)
    return cost_per_hour / (throughput_rps * 3600.0) * 1_000_000


def hourly_cost(replicas: int, policy: Optimization) -> float:
    """What a configuration's hardware costs per hour: its replicas x policy optimization.hardware_cost_per_hour."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1 to price a configuration, got {replicas}")
    return replicas * policy.hardware_cost_per_hour


def hardware_cost_ratio(
    replicas: int, baseline_replicas: int, throughput_rps: float, baseline_throughput_rps: float
) -> float:
    """Extra hardware cost per request of a candidate over the baseline (each priced at the replicas it holds, at
    its measured throughput): 2 replicas serving what 1 served is +1.0; 2 replicas serving twice as much, 0."""
    if baseline_replicas < 1:
        raise ValueError(f"baseline replicas must be >= 1, got {baseline_replicas}")
    _require_positive("throughput_rps", throughput_rps)
    _require_positive("baseline_throughput_rps", baseline_throughput_rps)
    return (replicas / baseline_replicas) * (baseline_throughput_rps / throughput_rps) - 1.0


def roi_figures(
    baseline_rps: float,
    final_rps: float,
    policy: Optimization,
    target_qps: float,
    *,
    replicas_before: int = 1,
    replicas_after: int = 1,
) -> dict[str, float]:
    """Cost per million requests before/after (each configuration priced at the replicas it holds), cost saving
    rate, yearly benefit at the target load, and ROI."""
    before = cost_per_million(baseline_rps, hourly_cost(replicas_before, policy))
    after = cost_per_million(final_rps, hourly_cost(replicas_after, policy))
    yearly_requests_m = target_qps * 3600 * 24 * 365 / 1_000_000
    benefit = (before - after) * yearly_requests_m
    investment = policy.investment_hours * policy.engineer_cost_per_hour
    return {
        "cost_per_million_before": round(before, 4),
        "cost_per_million_after": round(after, 4),
        "cost_saving_rate": round(cost_saving_rate(before, after), 4),
        "yearly_benefit_usd": round(benefit, 2),
        "investment_usd": round(investment, 2),
        "roi": round(roi(benefit, investment), 4) if investment > 0 else float("inf"),
        "performance_improvement": round(performance_improvement(baseline_rps, final_rps), 4),
        "replicas_before": replicas_before,
        "replicas_after": replicas_after,
    }
