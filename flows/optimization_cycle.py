"""The optimization cycle (seed 7.3): baseline -> bottlenecks (on the endpoint when it has one) -> plan, its two
levels in the order the dominant phase gives -> (apply, validate, keep or roll back) for each candidate -> promote ->
monitoring -> report. Orchestration only: the logic lives in tasks/optimize."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging.loggers import flow_run_logger

from flows.phase_gate import phase_gate
from flows.release import production_monitoring
from flows.risk_assessment import risk_assessment
from serving.app import PRODUCTION_APP
from serving.auth import client_key
from serving.client import InferopsClient
from serving.network import checked_url
from serving.zoo import get_model
from tasks.decision import Decision
from tasks.measure.bottlenecks import Breakdown
from tasks.measure.bottlenecks import render_markdown as render_breakdown
from tasks.measure.workload import Workload, read_workload
from tasks.monitoring.collect import MonitoringError, serves_on_gpu
from tasks.monitoring.rules import RefusedFile, ServedBaseline, reload_prometheus, render_rules, write_rules
from tasks.optimize import baseline as cycle_baseline
from tasks.optimize import report
from tasks.optimize.baseline import CycleBaseline
from tasks.optimize.candidates import Candidate, plan_candidates
from tasks.optimize.checklist import check_checklist, cycle_facts
from tasks.optimize.improvement import roi_figures
from tasks.optimize.order import PlanOrder, check_forced, measured_breakdown
from tasks.optimize.order import plan_order as decide_order
from tasks.optimize.placement import Placement, artifact_here, place_timing
from tasks.optimize.search import Budget, CycleSettings, SearchOutcome, evaluate_candidate, run_search
from tasks.optimize.serving_search import (
    KneeSearch,
    KneeTrial,
    ServingLevel,
    batch_wait_ms,
    config_of,
    confirm_champion,
    cycle_space,
    measure_config,
    remove_trial_apps,
    remove_trial_apps_on,
    search_serving_level,
    usage_sentence,
)
from tasks.optimize.trials import Measured, bottlenecks_in_process
from tasks.optimize.validation import CandidateResult
from tasks.policy import Policy, default_policy
from tasks.records import names, registry, runs
from tasks.release.freeze import frozen_reason
from tasks.release.rollout import RolloutRefused, rollout
from tasks.risk.tracking import Recorded, latest_assessment


@task(name="load-workload")
def load_workload(model: str, request_log: str | None) -> Workload | None:
    """The requests every candidate is timed on: the given request log, else the model's example inputs."""
    return read_workload(request_log, get_model(model).kind) if request_log else None


@task(name="open-cycle-run")
def open_cycle_run(model: str, workload: Workload | None) -> str:
    """The cycle's parent MLflow run; candidates, the gate and the report are recorded under it."""
    return runs.log_run(report.cycle_record(model, workload), finish=False)


@task(name="place-model-timing")
def place_model_timing(on_endpoint: bool, url: str | None) -> Placement:
    """Where the model level is timed: beside a replica of the app serving `url`, on its cluster, when the cycle
    measures the endpoint (a Ray task holding what a replica holds), else in this process."""
    where = (
        place_timing(url)
        if on_endpoint
        else Placement.here("no endpoint to stand beside: timed in this process")
    )
    get_run_logger().info("model level timed %s", where.reason)
    return where


@task(name="establish-baseline", task_run_name="baseline of {model}")
def establish_baseline(
    model: str,
    settings: CycleSettings,
    url: str | None,
    api_key: str | None,
    workload: Workload | None,
    where: Placement,
) -> CycleBaseline:
    """Measure what serves now (the registry's champion; the FP32 model on a first cycle) and the FP32 reference, at
    `where`: every candidate of the cycle is timed there too."""
    if url:
        with InferopsClient(url, api_key) as client:
            client.check_serves(model)  # an unreachable endpoint stops the cycle before anything is measured
    return cycle_baseline.establish(
        model, settings.threads, settings.batch, settings.repeats, settings.optimization, workload, where
    )


@task(name="measure-served-baseline", task_run_name="{baseline.candidate.variant} as served, on the endpoint")
def measure_served(
    baseline: CycleBaseline, settings: CycleSettings, policy: Policy, run_id: str
) -> KneeTrial:
    """What serves now (its variant and knobs) on a temporary app beside production, on the same cluster and ingress:
    its knee, where a request's time goes there and what its replicas use, recorded as the cycle's first serving
    trial (number 0). Production itself is never driven to its knee."""
    logger = get_run_logger()
    left = remove_trial_apps()  # a run killed before its cleanup ran
    if left:
        logger.warning("removed trial app(s) an earlier run left behind: %s", ", ".join(left))
    served = measure_config(
        baseline.model,
        baseline.candidate.variant,
        config_of(baseline.candidate.params(), batch_wait_ms(policy)),
        policy,
        KneeSearch.of(settings.optimization.serving_search),
        wait_removal=False,  # removed while the cycle goes on; the serving level waits for every trial app
    )
    runs.log_run(report.serving_trial_record(baseline.model, served), parent_run_id=run_id)
    logger.info(
        "served baseline %s on the endpoint: %s; %s",
        served.config.name,
        f"knee {served.knee_rps:.1f} req/s" if served.ok else f"failed: {served.reason}",
        usage_sentence(served),
    )
    return served


@task(
    name="time-baseline-again", task_run_name="{baseline.candidate.variant} timed again before the candidates"
)
def time_baseline_again(
    baseline: CycleBaseline, settings: CycleSettings, workload: Workload | None, run_id: str
) -> CycleBaseline:
    """What serves now timed again right before the candidates, after the knee searches on the endpoint: the
    candidates are judged against a baseline timed on the machine they are timed on."""
    again = cycle_baseline.timed_again(baseline, settings.repeats, settings.optimization, workload)
    runs.write(run_id, report.timed_again_record(again))
    get_run_logger().info("baseline %s timed %s", again.candidate.variant, report.timed_again_sentence(again))
    return again


@task(name="identify-bottlenecks")
def identify_bottlenecks(baseline: CycleBaseline, served: KneeTrial | None) -> tuple[Breakdown, str]:
    """Where a request's time goes for the served configuration, and where that was measured: on the endpoint near
    its knee (the served baseline's trial), else in process (tokenize / compute / load)."""
    return measured_breakdown(
        served,
        lambda: bottlenecks_in_process(
            baseline.model, baseline.candidate.variant, baseline.candidate.intra_op_threads
        ),
    )


@task(name="generate-plan")
def generate_plan(
    baseline: CycleBaseline, include: list[str] | None, settings: CycleSettings, run_id: str
) -> list[Candidate]:
    """Model-level candidates; knob stages (threads, batch) are planned on the best model once it is known."""
    plan = plan_candidates(baseline.model, baseline.candidate, include, baseline.on_gpu)
    runs.write(run_id, report.baseline_record(baseline.model, baseline, settings, plan))
    return plan


def assessed_risk(
    model: str, url: str | None, api_key: str | None, prometheus: str | None, policy: Policy
) -> Recorded | None:
    """The latest live risk assessment of `model`; when there is none or it is older than the policy allows, a
    fresh one first (the risk-assessment flow, on the endpoint and Prometheus the cycle was given). A fresh one
    that fails is logged and the checklist judges what is recorded."""
    latest = latest_assessment(model)
    if latest is not None and latest.age_days() <= policy.risk.live.max_age_days:
        return latest
    try:
        risk_assessment(model=model, url=url, api_key=api_key, prometheus=prometheus)
    except Exception as exc:  # recorded as the checklist's evidence: no fresh assessment, nothing applied
        get_run_logger().warning("risk assessment failed: %s: %s", type(exc).__name__, exc)
    return latest_assessment(model)


@task(name="pre-implementation-checklist")
def pre_checklist(
    baseline: CycleBaseline,
    bottleneck: Breakdown,
    plan: list[Candidate],
    policy: Policy,
    url: str | None,
    monitoring: tuple[bool, str] | None,
    risk: Recorded | None,
) -> list[Decision]:
    """Seed 7.3.9: every item backed by something this cycle measured or recorded; a failed item stops the flow."""
    champion = registry.alias_version(baseline.model, registry.CHAMPION)
    facts = cycle_facts(
        baseline,
        bottleneck,
        plan,
        policy,
        risk,
        frozen_reason(baseline.model),
        champion,
        url,
        monitoring,
    )
    return check_checklist(facts)


@task(name="apply-and-validate", task_run_name="{candidate.name}")
def apply_and_validate(
    candidate: Candidate,
    baseline: CycleBaseline,
    repeats: int,
    policy: Policy,
    run_id: str,
    workload: Workload | None,
    sla_on_endpoint: bool = False,
) -> tuple[CandidateResult, Measured | None]:
    """Build and measure one candidate, validate it against the baseline, record it; a rejected one is rolled back.
    `sla_on_endpoint`: the serving level went first and judges the P99 SLA on the endpoint."""
    result, measured = evaluate_candidate(candidate, baseline, repeats, policy, workload, sla_on_endpoint)
    runs.log_run(report.candidate_record(result, measured, baseline), parent_run_id=run_id)
    return result, measured


@task(name="search-serving-level", task_run_name="serving level of {params[variant]}")
def search_serving(
    model: str,
    params: dict[str, Any],
    settings: CycleSettings,
    policy: Policy,
    run_id: str,
    known: list[KneeTrial] | None = None,
    start_label: str = "the in-process choice",
    judges_sla: bool = False,
) -> ServingLevel:
    """The serving knobs of `params` (a variant and its knobs) searched on the endpoint: each configuration a
    temporary Ray Serve app beside production, scored by its knee, recorded as a nested run, removed however the
    trial ends. `known`: trials measured before (the served baseline), not measured again. `judges_sla`: the level
    goes first, and the champion's knee here is the SLA's verdict."""
    logger = get_run_logger()
    search = settings.optimization.serving_search
    wait_ms = batch_wait_ms(policy)
    space = cycle_space(
        config_of(params, wait_ms),
        settings.optimization.replica_options,
        settings.batch_options or settings.optimization.batch_options,
        settings.thread_options,
    )
    level = search_serving_level(
        model,
        params,
        space,
        policy,
        KneeSearch.of(search),
        max_trials=search.max_trials,
        max_minutes=search.max_minutes,
        wait_ms=wait_ms,
        known=known,
        start_label=start_label,
        judges_sla=judges_sla,
        say=logger.info,
        wait_removal=False,  # the cycle waits once, before its report (`trial_apps_gone`)
    )
    for trial in level.run.trials:
        if trial not in (known or []):  # a trial measured before (the served baseline) has its run already
            runs.log_run(report.serving_trial_record(model, trial), parent_run_id=run_id)
    publish_serving_trials(model, level)
    return level


@task(name="confirm-served-champion", task_run_name="{variant} with the serving level's knobs")
def confirm_serving(
    model: str, level: ServingLevel, variant: str, settings: CycleSettings, policy: Policy, run_id: str
) -> ServingLevel:
    """The model-level champion, another variant than the serving level searched, measured on the endpoint with the
    knobs it chose: the knee production will serve (one more trial)."""
    confirmed = confirm_champion(
        level, variant, policy, KneeSearch.of(settings.optimization.serving_search), wait_removal=False
    )
    if confirmed.confirmation is not None:
        runs.log_run(report.serving_trial_record(model, confirmed.confirmation), parent_run_id=run_id)
    publish_serving_trials(model, confirmed)
    return confirmed


def publish_serving_trials(model: str, level: ServingLevel) -> None:
    """The serving level's trials as a Prefect table artifact, its sentence in the log."""
    create_table_artifact(
        [t.row() for t in level.trials],
        key=names.artifact_key("serving-trials", model),
        description=level.sentence(),
    )
    get_run_logger().info(level.sentence())


@task(name="trial-apps-gone")
def trial_apps_gone() -> None:
    """Wait until every trial app the serving level removed is gone (their removals ran while the cycle measured)."""
    remove_trial_apps()


@task(name="register-challenger", task_run_name="register {winner.name}")
def register_challenger(
    model: str, winner: CandidateResult, measured: Measured, where: Placement | None
) -> registry.VersionRef:
    """Register the winner with its sha256 and serving knobs, aliased `challenger` (its file brought here from the
    node it was timed on when that node is another host)."""
    return registry.register_candidate(
        model,
        artifact_here(measured, where).path,
        {**measured.manifest, "variant": winner.params["variant"]},
        winner.params,
        winner.hit_rate,
    )


@task(name="promote-champion")
def promote_champion(model: str) -> dict[str, Any]:
    """`challenger` becomes `champion`; the old champion becomes `previous-champion`."""
    return registry.promote(model)


@task(name="switch-endpoint")
def switch_endpoint(url: str, model: str, api_key: str | None, knobs: dict[str, int]) -> dict[str, Any]:
    """Roll the live endpoint out to the new champion's version, served with the knobs it was measured with on every
    replica, each verified on the champion's sha256; a refused switch rolls the registry back."""
    try:
        with InferopsClient(url, api_key) as client:
            rolled = rollout(client, model, registry.require_alias(model, registry.CHAMPION), knobs)
    except RolloutRefused as exc:
        registry.rollback(model, f"endpoint refused the switch: {exc}")
        raise
    if rolled.knobs_error:  # the champion serves; only its knobs are the old ones
        get_run_logger().warning("serving knobs not applied: %s", rolled.knobs_error)
    knobs_state = (
        {"knobs": knobs, "error": rolled.knobs_error} if rolled.knobs_error else rolled.knobs_applied
    )
    return {"endpoint": rolled.detail, "serving_knobs": knobs_state}


@task(name="set-up-monitoring")
def set_up_monitoring(
    model: str,
    served: dict[str, Any] | None,
    policy: Policy,
    run_id: str,
    prometheus: str | None = None,
    url: str | None = None,
    api_key: str | None = None,
) -> str:
    """The alert rules of production with the new champion (the four types of SPEC §4), its latency baseline the
    P99 production served in the release's risk window, written for Prometheus once promtool passes them and (given
    `prometheus`) once every series they read is there."""
    window = (served or {}).get("risk_window") or {}
    if not window.get("p99_ms") or not window.get("throughput_rps"):
        return (
            "not written: no served baseline (the rules judge latency against what production serves, which a "
            "gated release measures in its risk window: run with gate=True and a url)"
        )
    baseline = ServedBaseline(
        float(window["p99_ms"]), float(window["throughput_rps"]), "the release's risk window on production"
    )
    try:
        gpu = serves_on_gpu(url, api_key, model) if url else False
        rendered = render_rules(PRODUCTION_APP, model, baseline, policy, gpu=gpu)
        path = write_rules(PRODUCTION_APP, model, rendered, prometheus=prometheus, gpu=gpu)
    except (RefusedFile, MonitoringError) as exc:
        return f"not written: {exc}"
    runs.write(
        run_id, runs.RunRecord("monitoring", names.OPTIMIZATION_EXPERIMENT, files={"monitoring": path})
    )
    if prometheus:
        get_run_logger().info(reload_prometheus(prometheus))
    return str(path)


@task(name="publish-report")
def publish_report(
    model: str,
    base: CycleBaseline,
    bottleneck: Breakdown,
    checklist: list[Decision],
    outcome: SearchOutcome,
    promotion: dict[str, Any] | None,
    final: dict[str, Any],
    policy: Policy,
    run_id: str,
    started: float,
    order: PlanOrder | None = None,
    served_base: KneeTrial | None = None,
) -> dict[str, Any]:
    """ROI, the markdown report and every candidate's row: on the parent run and as Prefect artifacts."""
    final_rps = report.final_throughput(outcome, base, promotion is not None)
    roi = roi_figures(
        base.measured.trial.median_throughput,
        final_rps,
        policy.optimization,
        policy.rollout_gate.target_qps,
        replicas_before=base.candidate.replicas,
        replicas_after=report.final_replicas(outcome, base, promotion is not None),
    )
    text = report.render_report(
        model,
        report.summarize_baseline(base),
        render_breakdown(bottleneck),
        outcome.results,
        outcome.champion,
        final,
        roi,
        checklist,
        policy.optimization.expected_gain,
        outcome.serving,
        order,
    )
    wall_s = time.monotonic() - started
    runs.write(run_id, report.summary_record(model, outcome, roi, text, wall_s, final))
    runs.finish_run(run_id)
    create_markdown_artifact(
        text, key=names.artifact_key("optimization-report", model), description="optimization cycle report"
    )
    if outcome.results:
        create_table_artifact(
            [r.row() for r in outcome.results], key=names.artifact_key("optimization-candidates", model)
        )
    return report.cycle_output(
        model,
        base,
        bottleneck.focus_area,
        outcome,
        final,
        promotion,
        roi,
        run_id,
        wall_s,
        checklist,
        order,
        served_base,
    )


def left_behind(flow: Any, flow_run: Any, state: Any) -> None:
    """A cancelled run (the Prefect UI's Cancel) or a crashed one (a killed process): whatever trial app its cleanup
    never reached is removed from the cluster (RAY_ADDRESS, as the worker runs it), and the MLflow runs it left
    RUNNING end as KILLED. Production is not touched: nothing was switched before the gate released it."""
    logger = flow_run_logger(flow_run, flow)  # no run context where the worker runs the hook
    removed = remove_trial_apps_on(os.environ.get("RAY_ADDRESS"))
    ended = runs.end_open_runs(str(flow_run.id), "KILLED")
    logger.warning(
        "%s: removed %s; ended as KILLED %s",
        state.name,
        ", ".join(removed) or "no trial app",
        ", ".join(ended) or "no MLflow run",
    )


@flow(name="optimization-cycle", log_prints=True, on_cancellation=[left_behind], on_crashed=[left_behind])
def optimization_cycle(
    model: str = "minilm",
    url: str | None = None,
    api_key: str | None = None,
    candidates: list[str] | None = None,
    repeats: int | None = None,
    max_trials: int | None = None,
    max_minutes: float | None = None,
    threads: int = 1,
    batch: int = 8,
    thread_options: list[int] | None = None,
    batch_options: list[int] | None = None,
    replica_options: list[int] | None = None,
    cache_options: list[int] | None = None,
    serving_trials: int | None = None,
    plan_order: str = "auto",
    request_log: str | None = None,
    gate: bool = False,
    gate_stability_s: float = 20.0,
    gate_performance_s: float | None = None,
    gate_risk_window_s: float | None = None,
    gate_benchmark_s: float | None = None,
    require_approval: bool | None = None,
    prometheus: str | None = None,
) -> dict[str, Any]:
    """Find the fastest configuration that keeps accuracy, prove it with measurements, promote it, report it.
    `prometheus`: where production's metrics are; the checklist then measures that production is monitored.
    `serving_trials`: the serving level's trial budget on the endpoint (policy optimization.serving_search; 0: off,
    the in-process knobs are served); it runs only with a `url`, and then what serves now is measured on the
    endpoint first: where its requests' time goes orders the two levels (`plan_order`: auto; serving or model to
    put one first whatever the breakdown says)."""
    started = time.monotonic()
    policy = default_policy()
    settings = CycleSettings.resolve(
        policy.optimization,
        threads=threads,
        batch=batch,
        repeats=repeats,
        max_trials=max_trials,
        max_minutes=max_minutes,
        thread_options=thread_options,
        batch_options=batch_options,
        replica_options=replica_options,
        cache_options=cache_options,
        serving_trials=serving_trials,
    )
    url, api_key = checked_url(url, "url"), client_key(api_key)
    prometheus = checked_url(prometheus, "prometheus")
    on_endpoint = bool(url and settings.optimization.serving_search.max_trials)
    check_forced(plan_order, on_endpoint)  # before anything is measured or recorded
    # a bad request log stops the cycle before anything is recorded
    workload = load_workload(model, request_log)
    # before the baseline: the assessment's probe load must not fall between the baseline and the candidates
    risk = assessed_risk(model, url, api_key, prometheus, policy)
    run_id = open_cycle_run(model, workload)
    base = establish_baseline(model, settings, url, api_key, workload, place_model_timing(on_endpoint, url))
    served_base = measure_served(base, settings, policy, run_id) if on_endpoint else None
    bottleneck, measured_at = identify_bottlenecks(base, served_base)
    order = decide_order(bottleneck, measured_at, plan_order, on_endpoint)
    get_run_logger().info("plan order: %s", order.reason)
    plan = generate_plan(base, candidates, settings, run_id)
    watched = production_monitoring(prometheus, url, api_key, model, policy) if prometheus and url else None
    checklist = pre_checklist(base, bottleneck, plan, policy, url, watched, risk)

    level = None
    if on_endpoint and order.serving_first:  # the serving path dominates: its knobs first, on what serves now
        known = [served_base] if served_base is not None and served_base.ok else []
        level = search_serving(
            model,
            base.candidate.params(),
            settings,
            policy,
            run_id,
            known,
            "what serves now",
            judges_sla=True,
        )

    def trial(candidate: Candidate) -> tuple[CandidateResult, Measured | None]:
        return apply_and_validate(
            candidate, base, settings.repeats, policy, run_id, workload, sla_on_endpoint=level is not None
        )

    if on_endpoint:  # knee searches ran since the baseline was timed: time it again beside the candidates
        base = time_baseline_again(base, settings, workload, run_id)
    budget = Budget.start(settings.max_trials, settings.max_minutes)
    outcome = run_search(plan, base, settings, workload, trial, budget, get_run_logger().info, level)
    best = outcome.model_champion
    if best is not None and on_endpoint:
        outcome.serving = (
            search_serving(model, best.params, settings, policy, run_id)
            if level is None
            else confirm_serving(model, level, str(best.params["variant"]), settings, policy, run_id)
        )
    champion, promotion, gated, served, rules = outcome.champion, None, None, None, None
    if champion is not None:
        register_challenger(model, champion, outcome.measured[champion.name], base.where)
        if gate:  # served on its own app beside production, approved if the policy says so, released to `url`
            gated = phase_gate(
                model=model,
                candidate_alias=registry.CHALLENGER,
                production_url=url,
                stability_duration_s=gate_stability_s,
                performance_duration_s=gate_performance_s,
                risk_window_s=gate_risk_window_s,
                benchmark_duration_s=gate_benchmark_s,
                require_approval=policy.rollout_gate.cycle_require_approval
                if require_approval is None
                else require_approval,
                api_key=api_key,
                parent_run_id=run_id,
                prometheus=prometheus,
            )
            promotion, served = report.gated_release(gated)
        else:
            promotion = promote_champion(model)
            served = switch_endpoint(url, model, api_key, champion.serving_knobs()) if url else None
    if promotion and champion is not None:
        rules = set_up_monitoring(model, served, policy, run_id, prometheus, url, api_key)
    else:
        registry.discard_challenger(model)
    if on_endpoint:
        trial_apps_gone()
    final = report.final_state(outcome, base, promotion, gated, served, rules)
    return publish_report(
        model,
        base,
        bottleneck,
        checklist,
        outcome,
        promotion,
        final,
        policy,
        run_id,
        started,
        order,
        served_base,
    )


if __name__ == "__main__":
    print(json.dumps(optimization_cycle(), indent=2, default=str))
