"""Release to production (seed 7.1.2, 7.3.6): roll the live endpoint out to the new champion, watch it under its
real traffic plus a probe load, carry out the risk policy's actions (roll back, freeze, scale out), and benchmark the
release as production's new baseline. Orchestration only: the logic lives in tasks/release and tasks/measure."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.measurement import measurement_suite
from serving.app import PRODUCTION_APP
from serving.client import InferopsClient
from tasks.monitoring.collect import collect, serves_on_gpu
from tasks.policy import Policy, default_policy
from tasks.records import names, registry, runs
from tasks.release import checks as gate_checks
from tasks.release import tracking
from tasks.release.rollout import RolloutRefused, rollout
from tasks.release.rollout_risk import (
    Observation,
    apply_risk_action,
    confirmed,
    needs_another_window,
    rolled_back,
)


@task(name="roll-out", task_run_name="roll out {model} to {url}")
def roll_out(url: str, api_key: str | None, model: str, policy: Policy) -> dict[str, Any]:
    """The endpoint serves the champion's version with the knobs it was measured with, verified on every replica;
    a refused switch moves the registry back, so the registry never names what production does not serve."""
    target = registry.require_alias(model, registry.CHAMPION)
    knobs = registry.version_knobs(model, target.version, policy.serving.default_knobs())
    try:
        with InferopsClient(url, api_key) as client:
            rolled = rollout(client, model, target, knobs)
    except RolloutRefused as exc:
        registry.rollback(model, f"endpoint refused the switch: {exc}")
        raise
    if rolled.knobs_error:  # the champion serves; only its knobs are the old ones
        get_run_logger().warning("serving knobs not applied: %s", rolled.knobs_error)
    return {**rolled.as_dict(), "variant": target.variant}


@task(name="risk-window", task_run_name="risk window on {model} at {url}")
def risk_window(
    url: str, api_key: str | None, model: str, duration_s: float, baseline: Observation, policy: Policy
) -> list[Observation]:
    """A probe load at the target rate for the window, beside whatever traffic the endpoint already takes: what a
    user of the new champion sees, to compare with the gate's figures. A window that breaches the risk policy is
    followed by another (up to `rollout_risk.confirm_windows` more) until the breach clears or is confirmed."""
    gate = policy.rollout_gate
    windows: list[Observation] = []
    with InferopsClient(url, api_key) as client:
        while not windows or needs_another_window(baseline, windows, policy.rollout_risk):
            if windows:
                get_run_logger().info(
                    "risk window %d breached the policy: confirming with another", len(windows)
                )
            windows.append(
                gate_checks.observe(
                    client, model, rate_rps=gate.target_qps, duration_s=duration_s, sla_p99_ms=gate.sla_p99_ms
                )[0]
            )
    return windows


@task(name="risk-actions", task_run_name="risk actions on {model}")
def risk_actions(
    model: str,
    url: str,
    api_key: str | None,
    baseline: Observation,
    windows: list[Observation],
    run_id: str,
    policy: Policy,
) -> list[dict[str, Any]]:
    """Carry out every action the risk policy demands of all the windows on the watched endpoint; each is recorded."""
    with InferopsClient(url, api_key) as client:
        done = [
            apply_risk_action(
                a,
                model=model,
                client=client,
                run_id=run_id,
                target_utilisation=policy.capacity.target_utilisation,
                default_knobs=policy.serving.default_knobs(),
            )
            for a in confirmed(baseline, windows, policy.rollout_risk)
        ]
    runs.write(run_id, tracking.risk_record(baseline, windows, done))
    create_markdown_artifact(
        key=names.artifact_key("phase-gate", model, "risk"),
        markdown=tracking.risk_markdown(model, baseline, windows, done),
        description=f"rollout risk control on {url}",
    )
    return done


@task(name="check-monitoring", retries=1, retry_delay_seconds=10)
def production_monitoring(
    prometheus: str, url: str, api_key: str | None, model: str, policy: Policy
) -> tuple[bool, str]:
    """Whether Prometheus holds the series the policy requires of production (the gate's coverage minimum)."""
    report = collect(
        prometheus, PRODUCTION_APP, model, policy.monitoring, gpu=serves_on_gpu(url, api_key, model)
    )
    minimum = policy.rollout_gate.completion.monitoring_coverage_min
    return report.meets(minimum), report.sentence(minimum)


@flow(name="release", log_prints=True)
def release(
    model: str,
    url: str,
    api_key: str | None,
    baseline: Observation,
    run_id: str,
    risk_window_s: float,
    benchmark_duration_s: float | None = None,
    prometheus: str | None = None,
) -> dict[str, Any]:
    """Production serves the promoted champion, is watched for `risk_window_s` and rolled back on the seed's
    triggers; a release that stays is benchmarked and recorded as production's baseline. `prometheus`: the
    completion criterion "monitoring coverage" is measured there for the release that stays."""
    policy = default_policy()
    served = roll_out(url, api_key, model, policy)
    windows = risk_window(url, api_key, model, risk_window_s, baseline, policy)
    done = risk_actions(model, url, api_key, baseline, windows, run_id, policy)
    benchmark = None
    if not rolled_back(done):
        benchmark = measurement_suite(
            suite="benchmark",
            model=model,
            url=url,
            api_key=api_key,
            duration_s=benchmark_duration_s,
            variant=served["variant"],
            sha256=served["sha256"],
            baseline=names.release_baseline(model),
        )
    watched = None
    if prometheus and not rolled_back(done):
        ok, sentence = production_monitoring(prometheus, url, api_key, model, policy)
        watched = {"meets": ok, "sentence": sentence}
        if not ok:  # not the model's fault: it keeps serving, and the release says it is not complete
            get_run_logger().warning("release incomplete: %s", sentence)
    return tracking.release_outcome(url, served, windows, done, benchmark, watched)
