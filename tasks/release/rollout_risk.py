"""Risk control while a new model takes traffic (seed 7.1.2): roll back, alert and freeze, or scale out."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from serving.client import InferopsClient, excerpt
from tasks.policy import RolloutRisk
from tasks.records import registry
from tasks.release.freeze import freeze
from tasks.release.rollout import RolloutRefused, rollout


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


def confirmed(baseline: Observation, windows: list[Observation], policy: RolloutRisk) -> list[RiskAction]:
    """The actions every one of `windows` demanded, with the latest window's figures. A trigger acts only on a
    breach that holds from one window to the next (Prometheus' `for:`, Argo Rollouts' consecutive failures): the
    P99 of a few seconds on a shared host moves by more than 50% between windows with nothing wrong."""
    if not windows:
        raise ValueError("no risk window was observed: watch the endpoint for at least one window")
    demanded = [evaluate(baseline, w, policy) for w in windows]
    holding = set.intersection(*({a.action for a in d} for d in demanded))
    return [a for a in demanded[-1] if a.action in holding]


def needs_another_window(baseline: Observation, windows: list[Observation], policy: RolloutRisk) -> bool:
    """Whether the breach seen so far still has to hold through another window before anything is done."""
    return len(windows) <= policy.confirm_windows and bool(confirmed(baseline, windows, policy))


# ---- carrying the actions out -----------------------------------------------------------------------------------


def scale_out_recommendation(observed: float, target_utilisation: float) -> dict[str, Any]:
    """How many times the current replicas bring utilisation back to the capacity plan's target."""
    factor = observed / target_utilisation if target_utilisation > 0 else float("inf")
    return {
        "observed_utilisation": observed,
        "target_utilisation": target_utilisation,
        "replica_factor": round(factor, 2),
        "advice": f"scale replicas by x{factor:.2f} (round up) to bring utilisation from {observed:.0%} "
        f"to the {target_utilisation:.0%} planning target",
    }


def apply_risk_action(
    action: RiskAction,
    *,
    model: str,
    client: InferopsClient,
    run_id: str | None,
    target_utilisation: float,
    default_knobs: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Carry out one `RiskAction` and return the record of what was done. A rollback returns the endpoint to the
    previous champion with the knobs it was measured with (`default_knobs` for a version no cycle measured)."""
    record: dict[str, Any] = {
        "level": action.level,
        "action": action.action,
        "observed": action.observed,
        "threshold": action.threshold,
        "reason": action.reason,
        "at": time.time(),
    }
    if action.action == "rollback":
        try:
            back = registry.rollback(model, action.reason)
        except registry.RegistryError as exc:
            record["done"] = False
            record["detail"] = str(exc)
            return record
        record["registry"] = asdict(back)
        target = registry.alias_version(model, registry.CHAMPION)
        try:
            if target is None:
                raise RolloutRefused(f"model {model!r} has no champion after the registry rollback")
            knobs = (
                registry.version_knobs(model, target.version, default_knobs)
                if default_knobs is not None
                else None
            )
            done = rollout(client, model, target, knobs, fall_back_to_server_rollback=True)
            record["endpoint"] = {"switched": True, "how": done.how, "detail": excerpt(str(done.detail))}
        except RolloutRefused as exc:
            record["endpoint"] = {"switched": False, "how": None, "detail": str(exc)}
        record["done"] = bool(record["endpoint"]["switched"])
    elif action.action == "alert_and_freeze":
        record["freeze"] = freeze(model, action.reason, run_id)
        record["alert"] = {"level": "medium", "type": "threshold", "message": action.reason}
        record["done"] = True
    elif action.action == "scale_out":
        record["recommendation"] = scale_out_recommendation(float(action.observed), target_utilisation)
        record["done"] = True
    return record


def rolled_back(actions: list[dict[str, Any]]) -> bool:
    """Whether the actions carried out include a rollback that reached the endpoint."""
    return any(a["action"] == "rollback" and a.get("done") for a in actions)
