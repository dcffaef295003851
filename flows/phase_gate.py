"""Phased rollout gate (SPEC §1-§2): measure four gate items on a live endpoint, decide, ask for approval,
promote, then watch the new champion and roll back, freeze or recommend scale-out as the risk policy says.
Orchestration only: the logic lives in tasks/release."""

from __future__ import annotations

import json
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run

from flows.release import release, risk_actions, risk_window
from serving.auth import client_key
from serving.client import InferopsClient
from serving.network import checked_url
from tasks.measure.suites import progress_every
from tasks.policy import Policy, default_policy
from tasks.records import names, registry, runs
from tasks.release import approval, tracking
from tasks.release import checks as gate_checks
from tasks.release.approval import ApprovalDecision
from tasks.release.candidate_app import gated_endpoint
from tasks.release.freeze import frozen_reason
from tasks.release.gate import GateSettings, GateVerdict, ItemResult, decide, render_markdown
from tasks.release.rollout_risk import Observation

# How often the paused flow checks for a reviewer's answer (how long it waits is rollout_gate.approval_timeout_s).
APPROVAL_POLL_S = 2


@task(name="gate-functional", task_run_name="functional of {model}")
def functional_gate(url: str, api_key: str | None, model: str, policy: Policy) -> ItemResult:
    """Every served model, batch sizes 1/8/32, multi-model concurrency, model load rate."""
    with InferopsClient(url, api_key) as client:
        return gate_checks.functional_item(
            client, [model], model_load_rate_min=policy.rollout_gate.completion.model_load_rate_min
        )


@task(name="gate-performance", task_run_name="performance of {model}")
def performance_gate(
    url: str, api_key: str | None, model: str, duration_s: float, policy: Policy
) -> tuple[ItemResult, Observation]:
    """P99 < SLA at the target rate (open loop), throughput, GPU utilisation where a GPU exists."""
    with InferopsClient(url, api_key) as client:
        return gate_checks.performance_item(
            client,
            model,
            sla_p99_ms=policy.rollout_gate.sla_p99_ms,
            target_qps=policy.rollout_gate.target_qps,
            duration_s=duration_s,
            max_error_rate=policy.test_suite.max_error_rate,
            utilisation_ceiling=policy.rollout_risk.utilisation_scale_out,
            warmup_s=policy.rollout_gate.performance_warmup_s,
        )


@task(name="gate-stability", task_run_name="stability of {model}")
def stability_gate(
    url: str, api_key: str | None, model: str, duration_s: float, policy: Policy
) -> ItemResult:
    """Availability over a continuous run and memory-leak verdicts."""
    stability = policy.test_suite.stability
    with InferopsClient(url, api_key) as client:
        return gate_checks.stability_item(
            client,
            model,
            duration_s=duration_s,
            rate_rps=policy.rollout_gate.target_qps,
            availability_min=policy.rollout_gate.items["stability"].minimum,
            leak_slope_mb_per_h=stability.leak_slope_mb_per_h,
            leak_min_growth_mb=stability.leak_min_growth_mb,
            sla_p99_ms=policy.rollout_gate.sla_p99_ms,
            progress=progress_every(0.1, get_run_logger().info, f"stability soak of {model}"),
        )


@task(name="gate-security", task_run_name="security of {model}")
def security_gate(
    url: str,
    api_key: str | None,
    model: str,
    candidate: registry.VersionRef | None,
    alias: str,
    policy: Policy,
) -> ItemResult:
    """Served sha256 vs the registry, 401 without a key, hostile inputs, no model files over HTTP."""
    files, head = gate_checks.artifact_facts(model, candidate)
    source = f"registry {model}@{alias}" + (f" (version {candidate.version})" if candidate else "")
    with InferopsClient(url, api_key) as client:
        return gate_checks.security_item(
            client,
            [model],
            {model: (candidate.sha256 if candidate else None, source)},
            policy.endpoint,
            files=files,
            artifact_head=head,
        )


@task(name="gate-verdict")
def publish_verdict(
    model: str,
    results: list[ItemResult],
    candidate: registry.VersionRef | None,
    params: dict[str, Any],
    policy: Policy,
    parent_run_id: str | None,
) -> tuple[GateVerdict, str, str]:
    """Decide, then publish the Prefect table + markdown artifacts and an MLflow run; returns (verdict, report, run id)."""
    verdict = decide(results, policy.rollout_gate)
    title = tracking.gate_title(model, candidate)
    report = render_markdown(verdict, title=title) + "\n" + gate_checks.render_checks_markdown(results)
    create_table_artifact(
        key=names.artifact_key("phase-gate", model),
        table=verdict.rows,
        description=f"{title}: {'PASS' if verdict.passed else 'FAIL'} ({verdict.reason})",
    )
    create_markdown_artifact(
        key=names.artifact_key("phase-gate", model, "report"), markdown=report, description=title
    )
    run_id = runs.log_run(
        tracking.gate_record(model, verdict, results, candidate, params, report),
        parent_run_id=parent_run_id,
        finish=False,
    )
    return verdict, report, run_id


def ask_reviewer(
    model: str, version: str | None, verdict: GateVerdict, report: str, timeout_s: int
) -> ApprovalDecision:
    """Pause the flow run for a person's answer in the Prefect UI; silence until the timeout is a refusal."""
    form = approval.ApprovalInput.with_initial_data(
        description=approval.request_text(model, version, verdict, report), approve=False, comment=""
    )
    try:
        given = pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=APPROVAL_POLL_S)
    except FlowPauseTimeout:
        return approval.timed_out(model, version, verdict, timeout_s)
    return approval.from_input(model, version, verdict, given)


def log_verdict(model: str, verdict: GateVerdict) -> None:
    get_run_logger().info(
        "gate %s: %s (weighted %.2f%%)",
        model,
        "PASS" if verdict.passed else "FAIL",
        verdict.weighted_score * 100,
    )


@task(name="gate-decision")
def record_decision(decision: ApprovalDecision, run_id: str, model: str) -> None:
    """Approval decision on the gate's MLflow run (tags + JSON) and as a Prefect artifact."""
    runs.write(run_id, tracking.decision_record(decision))
    create_markdown_artifact(
        key=names.artifact_key("phase-gate", model, "decision"),
        markdown=tracking.decision_markdown(model, decision),
        description=f"promote={decision.promote} ({decision.decided_by})",
    )


@task(name="promote")
def promote_candidate(model: str, candidate_alias: str, run_id: str) -> dict[str, Any]:
    """challenger -> champion (the old champion becomes previous-champion); recorded on the gate run."""
    if candidate_alias == registry.CHAMPION:
        promotion: dict[str, Any] = {
            "model": model,
            "promoted": False,
            "reason": "candidate is already champion",
        }
    else:
        promotion = {**registry.promote(model), "promoted": True}
    runs.write(run_id, tracking.promotion_record(promotion))
    return promotion


@task(name="keep-champion")
def keep_champion(model: str, candidate_alias: str, candidate: registry.VersionRef | None, why: str) -> None:
    """A failed or rejected candidate is not promoted: drop its alias and tag the version with the reason."""
    if candidate is not None and candidate_alias != registry.CHAMPION:
        registry.reject_challenger(model, candidate.version, why)


@flow(name="phase-gate", log_prints=True)
def phase_gate(
    model: str = "minilm",
    url: str | None = None,
    candidate_alias: str = "challenger",
    production_url: str | None = None,
    stability_duration_s: float | None = None,
    require_approval: bool | None = None,
    api_key: str | None = None,
    performance_duration_s: float | None = None,
    risk_window_s: float | None = None,
    approval_timeout_s: int | None = None,
    benchmark_duration_s: float | None = None,
    parent_run_id: str | None = None,
    prometheus: str | None = None,
) -> dict[str, Any]:
    """Gate `model@candidate_alias` on its own temporary app (or the endpoint at `url` that already serves it); on a
    pass (and an approval, where the policy asks for one) promote it and release it to `production_url`: roll out,
    watch under production's traffic, roll back on the risk triggers, benchmark the release. Without a production
    URL the gated endpoint itself is watched. `parent_run_id`: nest the gate's MLflow run under it (the cycle).
    `prometheus`: where production's metrics are; the release's completion criterion "monitoring coverage" is
    measured there."""
    started = time.monotonic()
    url, production_url = checked_url(url, "url"), checked_url(production_url, "production_url")
    policy = default_policy()
    settings = GateSettings.resolve(
        policy,
        stability_s=stability_duration_s,
        performance_s=performance_duration_s,
        risk_window_s=risk_window_s,
        approval_timeout_s=approval_timeout_s,
        require_approval=require_approval,
    )
    if settings.require_approval:
        approval.require_pausable(model)  # before anything is measured or changed
    frozen = frozen_reason(model)
    candidate = registry.alias_version(model, candidate_alias)
    version = candidate.version if candidate else None
    api_key = client_key(api_key)
    promotion, done, released = None, [], None
    with gated_endpoint(model, candidate_alias, url, api_key, policy) as (url, key):
        functional = functional_gate(url, key, model, policy)
        performance, baseline = performance_gate(url, key, model, settings.performance_s, policy)
        stability = stability_gate(url, key, model, settings.stability_s, policy)
        security = security_gate(url, key, model, candidate, candidate_alias, policy)
        verdict, report, run_id = publish_verdict(
            model,
            [functional, performance, stability, security],
            candidate,
            settings.params(model, url, candidate_alias, version, policy),
            policy,
            parent_run_id,
        )
        log_verdict(model, verdict)
        decision = approval.preset_decision(model, version, verdict, frozen, settings.require_approval)
        if decision is None:
            decision = ask_reviewer(model, version, verdict, report, settings.approval_timeout_s)
        record_decision(decision, run_id, model)
        if not decision.promote or candidate is None:
            keep_champion(model, candidate_alias, candidate, approval.kept_reason(decision, verdict))
        else:
            promotion = promote_candidate(model, candidate_alias, run_id)
            if production_url is None:  # nothing to release to: the gated endpoint is the one watched
                windows = risk_window(url, key, model, settings.risk_window_s, baseline, policy)
                done = risk_actions(model, url, key, baseline, windows, run_id, policy)
    if promotion is not None and production_url is not None:
        released = release(
            model,
            production_url,
            api_key,
            baseline,
            run_id,
            settings.risk_window_s,
            benchmark_duration_s,
            checked_url(prometheus, "prometheus"),
        )
        done = released["risk_actions"]
    outcome = tracking.gate_outcome(
        model, url, verdict, decision, run_id, promotion, done, released, time.monotonic() - started
    )
    runs.write(run_id, runs.RunRecord("gate", names.GATE_EXPERIMENT, metrics={"wall_s": outcome["wall_s"]}))
    runs.finish_run(run_id)
    return outcome


if __name__ == "__main__":
    import sys

    # python -m flows.phase_gate [MODEL] [URL]: a quick gate run from a shell (stability 30 s, risk window 20 s)
    args = sys.argv[1:]
    result = phase_gate(
        model=args[0] if args else "minilm",
        url=args[1] if len(args) > 1 else None,
        stability_duration_s=30.0,
        risk_window_s=20.0,
    )
    print(json.dumps(result, indent=2, default=str))
