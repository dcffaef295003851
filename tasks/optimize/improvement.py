"""The seed's improvement formulas (7.3.4), each a one-liner with its guard against division by zero."""

from __future__ import annotations


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
