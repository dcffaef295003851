"""The optimization cycle (seed 7.3): baseline -> bottlenecks -> plan -> (apply, validate, keep or roll back)
for each candidate -> promote -> monitoring -> report. Orchestration only: the logic lives in tasks/."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import httpx
import mlflow
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.keys import slug
from serving.variants import list_variants
from tasks.measure.bottlenecks import Breakdown, breakdown
from tasks.measure.bottlenecks import render_markdown as render_breakdown
from tasks.measure.loadgen import auth_headers
from tasks.measure.workload import load_request_log, repeat_share
from tasks.optimize.cycle import (
    Candidate,
    Measured,
    inprocess_timing,
    knob_stage,
    knob_values,
    measure,
    model_stage,
    monitoring_rules,
    serving_knobs,
    summarize_baseline,
    write_monitoring,
)
from tasks.optimize.validation import (
    CandidateResult,
    ChecklistItem,
    check_checklist,
    failed_candidate,
    fastest_passing,
    marginal_gain_exhausted,
    render_report,
    roi_figures,
    validate,
)
from tasks.policy import Policy, default_policy
from tasks.records import registry
from tasks.records.store import ensure_experiment
from tasks.release.approval import frozen_reason
from tasks.release.endpoint_config import EndpointConfigError, apply_knobs
from tasks.risk.assessment import assess

EXPERIMENT = "inferops-optimization"


@dataclass(frozen=True)
class Workload:
    """A request log and the share of its requests that repeat an earlier one (an unbounded cache's hit rate)."""

    source: str
    requests: Any  # list[str] for text models, an array for tensor models
    repeat_share: float


@dataclass(frozen=True)
class Baseline:
    model: str
    candidate: Candidate
    measured: Measured
    reference_value: float
    version: str


@task(name="load-workload")
def load_workload(model: str, request_log: str | None) -> Workload | None:
    """The requests every candidate is timed on: the given request log, else the model's example inputs."""
    if request_log is None:
        return None
    from serving.zoo import get_model

    requests = load_request_log(request_log, get_model(model).kind)
    return Workload(request_log, requests, repeat_share(requests))


@task(name="establish-baseline")
def establish_baseline(
    model: str, threads: int, batch: int, repeats: int, url: str | None, api_key: str | None, workload: Workload | None
) -> Baseline:
    """Measure what serves now (the registry's champion; the FP32 model on a first cycle) and the FP32 reference."""
    if url:
        _preflight(url, model, api_key)
    variants = list_variants(model)
    reference_variant = "torch-fp32" if "torch-fp32" in variants else "onnx-fp32"
    champion = registry.alias_version(model, registry.CHAMPION)
    served = champion.variant if champion and champion.variant in variants else reference_variant
    requests = workload.requests if workload else None
    reference = measure(model, Candidate(reference_variant, reference_variant, "baseline", "baseline", threads, batch), 1, requests)
    # The baseline is what serves now: the champion with the knobs a previous cycle measured and applied.
    defaults = {"intra_op_threads": threads, "max_batch_size": batch, "num_replicas": 1, "cache_entries": 0}
    knobs = registry.serving_knobs(model, champion.version, defaults) if champion and served == champion.variant else defaults
    current = Candidate(served, served, "baseline", "baseline", knobs["intra_op_threads"], knobs["max_batch_size"],
                        knobs["num_replicas"], knobs["cache_entries"])  # fmt: skip
    measured = measure(model, current, repeats, requests)
    # First cycle: the FP32 model becomes the recorded champion, so there is always something to roll back to.
    champion = registry.ensure_champion(model, measured.path, {**measured.manifest, "variant": served})
    return Baseline(model, current, measured, reference.value, champion.version)


def _preflight(url: str, model: str, api_key: str | None) -> None:
    headers = auth_headers(api_key)
    try:
        response = httpx.get(f"{url.rstrip('/')}/v2/models/{model}", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"baseline: endpoint {url} is unreachable ({exc}); start it with `inferops serve`") from None
    if response.status_code != 200:
        raise RuntimeError(f"baseline: endpoint {url} does not serve model {model!r} (HTTP {response.status_code})")


@task(name="identify-bottlenecks")
def identify_bottlenecks(baseline: Baseline) -> Breakdown:
    """Where a request's time goes for the served configuration (tokenize / compute / load), in process."""
    timing = inprocess_timing(baseline.model, baseline.candidate.variant, baseline.candidate.intra_op_threads)
    server = {"tokenize": timing["tokenize_ms"], "compute": timing["compute_ms"]}
    return breakdown(timing["client_ms"], server, model_load_s=timing["model_load_s"])


@task(name="generate-plan")
def generate_plan(baseline: Baseline, include: list[str] | None) -> list[Candidate]:
    """Model-level candidates; knob stages (threads, batch) are planned on the best model once it is known."""
    plan = model_stage(baseline.model, baseline.candidate)
    if include is not None:
        unknown = sorted(set(include) - {c.variant for c in plan})
        if unknown:
            raise ValueError(f"candidates {unknown} are not available for {baseline.model}: choose from {[c.variant for c in plan]}")
        plan = [c for c in plan if c.variant in include]
    return plan


@task(name="pre-implementation-checklist")
def pre_checklist(baseline: Baseline, bottleneck: Breakdown, plan: list[Candidate], policy: Policy, url: str | None) -> list[ChecklistItem]:
    """Seed 7.3.9: every item backed by something this cycle measured or recorded; a failed item stops the flow."""
    risk = assess(policy.risk)
    frozen = frozen_reason(baseline.model)  # an error-rate alert froze changes (SPEC §2): nothing is applied
    champion = registry.alias_version(baseline.model, registry.CHAMPION)
    missing_types = sorted({c.optimization_type for c in plan} - set(policy.optimization.scoring.by_type))
    facts = {
        "baseline established": (
            baseline.measured.trial.median_throughput > 0,
            f"{baseline.candidate.variant}: {baseline.measured.trial.median_throughput:.1f} items/s over "
            f"{len(baseline.measured.trial.throughput)} repeats, {baseline.measured.metric} {baseline.measured.value:.4f}",
        ),
        "bottleneck analysis done": (
            bottleneck.dominant is not None,
            f"dominant: {bottleneck.dominant.label if bottleneck.dominant else 'none'} ({bottleneck.focus_area})",
        ),
        "plan reviewed": (
            bool(plan) and not missing_types,
            f"{len(plan)} candidates, each type scored by the decision matrix"
            if plan and not missing_types
            else f"empty plan or types without matrix scores: {missing_types}",
        ),
        "risk assessed": (
            risk.overall_level != "high" and frozen is None,
            f"risk register overall {risk.overall_score} ({risk.overall_level})"
            + (f"; changes frozen by rollout risk control: {frozen}" if frozen else "; no change freeze"),
        ),
        "rollback prepared": (
            champion is not None and bool(champion.sha256),
            f"champion v{champion.version} sha256 {champion.sha256[:12]}… recorded" if champion else "no champion recorded",
        ),
        "test environment ready": (
            baseline.reference_value > 0,
            f"evaluator {baseline.measured.metric} runs; FP32 reference {baseline.reference_value:.4f}",
        ),
        "monitoring configured": (
            True,
            f"endpoint {url} answers" if url else "in-process measurement (no endpoint given)",
        ),
    }
    return check_checklist(facts)


@task(name="apply-and-validate")
def apply_and_validate(
    candidate: Candidate, baseline: Baseline, repeats: int, policy: Policy, parent_run_id: str, workload: Workload | None
) -> tuple[CandidateResult, Measured | None]:
    """Build and measure one candidate, validate it against the baseline, record it; a rejected one is rolled back."""
    measured: Measured | None = None
    try:
        measured = measure(baseline.model, candidate, repeats, workload.requests if workload else None)
        retention = measured.value / baseline.reference_value
        worst = measured.worst_case
        result = CandidateResult(
            candidate.name, candidate.optimization_type, candidate.params(), measured.trial, retention, worst, measured.metric
        )
        result.hit_rate = measured.details.get("cache_hit_rate")
        result = validate(result, baseline.measured.trial, policy.optimization, policy.rollout_gate.sla_p99_ms)
    except Exception as exc:  # a crashing export, load or evaluator rejects this candidate, not the cycle
        result = failed_candidate(candidate.name, candidate.optimization_type, candidate.params(), baseline.measured.metric, exc)
    _log_candidate(result, measured, baseline, parent_run_id)
    return result, measured


def _log_candidate(result: CandidateResult, measured: Measured | None, baseline: Baseline, parent_run_id: str) -> None:
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(
        experiment_id,
        run_name=result.name,
        tags={
            "mlflow.parentRunId": parent_run_id,
            "inferops.model": baseline.model,
            "inferops.verdict": "accepted" if result.accepted else "rejected",
            "inferops.reason": result.reason[:4000],
            "inferops.retention_class": "performance_data",
        },
    )
    run_id = run.info.run_id
    for key, value in result.params.items():
        client.log_param(run_id, key, value)
    metrics: dict[str, float | None] = {
        "throughput_median": result.trial.median_throughput if result.trial else None,
        "p99_ms_median": result.trial.median_p99 if result.trial else None,
        "throughput_spread": result.trial.spread if result.trial else None,
        "gain": result.gain,
        "retention": result.retention,
        "worst_case_retention": result.worst_case_retention,
        "matrix_weighted_score": result.matrix.weighted_score if result.matrix else None,
        "cache_hit_rate": result.hit_rate,
    }
    if result.matrix:
        metrics.update({f"matrix_{f.factor}": f.score for f in result.matrix.factors})
    for key, value in metrics.items():
        if value is not None:
            client.log_metric(run_id, key, float(value))
    if measured is not None:
        client.set_tag(run_id, "inferops.sha256", measured.sha256)
        client.set_tag(run_id, "inferops.provider", measured.provider)
    client.log_dict(run_id, {"checks": result.checks, "row": result.row()}, "validation.json")
    if not result.accepted:
        # Candidates are measured beside the served model, so rolling back means the served model and config stay
        # the baseline's; the record says so (rollback records are kept 1 year).
        record = {
            "candidate": result.name,
            "reason": result.reason,
            "restored_variant": baseline.candidate.variant,
            "restored_sha256": baseline.measured.sha256,
            "restored_version": baseline.version,
            "at": time.time(),
        }
        client.log_dict(run_id, record, "rollback_record.json")
        client.set_tag(run_id, "inferops.rollback", "recorded")
    client.set_terminated(run_id, "FINISHED" if result.trial else "FAILED")


@task(name="register-challenger")
def register_challenger(model: str, winner: CandidateResult, measured: Measured) -> registry.VersionRef:
    """Register the winner with its sha256 and serving knobs, aliased `challenger`."""
    ref = registry.register(model, measured.path, {**measured.manifest, "variant": winner.params["variant"]})
    registry.set_serving_knobs(model, ref.version, winner.params)
    if winner.hit_rate is not None:
        mlflow.MlflowClient().set_model_version_tag(model, ref.version, "inferops.serve.cache_hit_rate", f"{winner.hit_rate:.4f}")
    return ref


@task(name="promote-champion")
def promote_champion(model: str) -> dict[str, Any]:
    """`challenger` becomes `champion`; the old champion becomes `previous-champion`."""
    return registry.promote(model)


@task(name="switch-endpoint", retries=2, retry_delay_seconds=5)
def switch_endpoint(url: str, model: str, api_key: str | None) -> dict[str, Any]:
    """Hot-switch the live endpoint to `models:/MODEL@champion`; a refused switch rolls the registry back.
    The replica that switches writes the model into the deployment's config (`propagation`), so all follow."""
    headers = auth_headers(api_key)
    response = httpx.post(
        f"{url.rstrip('/')}/admin/models/{model}/switch",
        json={"uri": f"models:/{model}@champion"},
        headers=headers,
        timeout=300,
    )
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200:
        registry.rollback(model, f"endpoint refused the switch: HTTP {response.status_code} {body}")
        raise RuntimeError(f"endpoint {url} refused to switch {model} to the champion: {body or response.text[:200]}")
    return body


@task(name="apply-serving-knobs")
def apply_serving_knobs(url: str, model: str, api_key: str | None, knobs: dict[str, int], sha256: str) -> dict[str, Any]:
    """Serve the champion as it was measured: threads, batch, replicas and cache on every replica, each of them
    serving the champion's sha256 (a replica that kept another model fails this, and the knobs are put back)."""
    return apply_knobs(url, model, api_key, knobs, expect_sha256=sha256)


@task(name="set-up-monitoring")
def set_up_monitoring(model: str, sha256: str, p99_ms: float, policy: Policy) -> str:
    """Alert rules for latency, GPU temperature and accuracy of the new champion, written for Prometheus."""
    path = write_monitoring(model, monitoring_rules(model, sha256, p99_ms, policy))
    mlflow.log_artifact(str(path), artifact_path="monitoring")
    return str(path)


@flow(name="optimization-cycle", log_prints=True)
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
    request_log: str | None = None,
    gate: bool = False,
    gate_stability_s: float = 20.0,
    gate_performance_s: float | None = None,
    gate_risk_window_s: float | None = None,
    require_approval: bool | None = None,
) -> dict[str, Any]:
    """Find the fastest configuration that keeps accuracy, prove it with measurements, promote it, report it."""
    logger = get_run_logger()
    policy = default_policy()
    opt = policy.optimization
    if replica_options:
        opt = opt.model_copy(update={"replica_options": list(replica_options)})
    repeats = repeats or opt.repeats
    max_trials = max_trials or opt.max_trials
    deadline = time.monotonic() + 60 * (max_minutes or opt.max_minutes)
    api_key = api_key or os.environ.get("INFEROPS_API_KEY")
    started = time.monotonic()

    workload = load_workload(model, request_log)  # a bad request log stops the cycle before anything is recorded
    experiment_id = ensure_experiment(EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"cycle-{model}") as parent:
        mlflow.set_tags({"inferops.model": model, "inferops.retention_class": "optimization_plans"})
        if workload is not None:
            mlflow.log_params({"request_log": workload.source, "workload_requests": len(workload.requests)})
            mlflow.log_metric("workload_repeat_share", workload.repeat_share)
        base = establish_baseline(model, threads, batch, repeats, url, api_key, workload)
        mlflow.log_params({"baseline_variant": base.candidate.variant, "baseline_sha256": base.measured.sha256,
                           "repeats": repeats, "max_trials": max_trials, "batch": batch, "threads": threads})  # fmt: skip
        mlflow.log_metrics({"baseline_throughput": base.measured.trial.median_throughput,
                            "baseline_p99_ms": base.measured.trial.median_p99,
                            "baseline_spread": base.measured.trial.spread})  # fmt: skip
        bottleneck = identify_bottlenecks(base)
        plan = generate_plan(base, candidates)
        checklist = pre_checklist(base, bottleneck, plan, policy, url)
        mlflow.log_dict({"plan": [c.params() | {"name": c.name} for c in plan]}, "plan.json")

        results: list[CandidateResult] = []
        measured_by_name: dict[str, Measured] = {}

        def run_stage(stage_plan: list[Candidate]) -> None:
            for cand in stage_plan:
                if len(results) >= max_trials or time.monotonic() > deadline:
                    results.append(replace(failed_candidate(cand.name, cand.optimization_type, cand.params(),
                                                            base.measured.metric, RuntimeError("search budget spent")),
                                           reason="skipped: search budget (trials or time) spent"))  # fmt: skip
                    continue
                logger.info("candidate %s (%s)", cand.name, cand.stage)
                result, measured = apply_and_validate(cand, base, repeats, policy, parent.info.run_id, workload)
                logger.info("  -> %s: %s", "accepted" if result.accepted else "rejected", result.reason)
                results.append(result)
                if measured is not None:
                    measured_by_name[cand.name] = measured

        run_stage(plan)
        stop_reason = "every stage searched"
        best = fastest_passing(results)
        best_candidate = next((c for c in plan if best and c.name == best.name), base.candidate)
        previous_best = base.measured.trial.median_throughput
        stages = [
            ("parallelization", knob_values("parallelization", thread_options, opt)),
            ("batching", knob_values("batching", batch_options, opt)),
        ]
        if workload is not None:
            stages.append(("caching", knob_values("caching", cache_options, opt)))
        else:
            stop_reason = "caching not measured: no request log (a cache's hit rate is the workload's)"
        for stage, values in stages:
            current = fastest_passing(results)
            current_rps = current.trial.median_throughput if current and current.trial else previous_best
            # The marginal-gain stop guards compute knobs against over-tuning; a cache's gain comes from the
            # workload's repeats, not from the compute knobs, so the caching stage is always measured.
            if (current is not None and stage == "batching"
                    and marginal_gain_exhausted(previous_best, current_rps, opt)):  # fmt: skip
                stop_reason = f"batching skipped: parallelization added < {opt.marginal_gain_stop:.0%}"
                continue
            previous_best = current_rps
            stage_plan = knob_stage(best_candidate, stage, values)
            run_stage(stage_plan)
            winner = fastest_passing(results)
            if winner is not None:
                best_candidate = next((c for c in plan + stage_plan if c.name == winner.name), best_candidate)

        champion = fastest_passing(results)
        final: dict[str, Any] = {"search": stop_reason, "candidates_measured": sum(1 for r in results if r.trial)}
        promotion: dict[str, Any] | None = None
        if champion is not None and champion.trial is not None:
            register_challenger(model, champion, measured_by_name[champion.name])
            if gate:
                # The phase gate serves the challenger on its own app, measures it, asks for approval if the
                # policy says so, and promotes it only when every gate item passes.
                from flows.phase_gate import phase_gate

                gated = phase_gate(model=model, candidate_alias=registry.CHALLENGER, stability_duration_s=gate_stability_s,
                                   performance_duration_s=gate_performance_s, risk_window_s=gate_risk_window_s,
                                   require_approval=require_approval, api_key=api_key)  # fmt: skip
                final["gate"] = {"passed": gated["passed"], "weighted_score": gated["weighted_score"],
                                 "reason": gated["reason"], "rows": gated["rows"]}  # fmt: skip
                promotion = gated.get("promotion")
            else:
                promotion = promote_champion(model)
        if promotion and champion is not None and champion.trial is not None:
            final["champion"] = champion.name
            final["champion_throughput"] = round(champion.trial.median_throughput, 1)
            final["champion_p99_ms"] = round(champion.trial.median_p99, 2)
            if url:
                final["endpoint"] = switch_endpoint(url, model, api_key)
                knobs = serving_knobs(champion.params)
                try:
                    final["serving_knobs"] = apply_serving_knobs(url, model, api_key, knobs,
                                                                 measured_by_name[champion.name].sha256)  # fmt: skip
                except EndpointConfigError as exc:  # the champion serves; only its knobs are the defaults
                    logger.warning("serving knobs not applied: %s", exc)
                    final["serving_knobs"] = {"knobs": knobs, "error": str(exc)}
            rules = set_up_monitoring(model, measured_by_name[champion.name].sha256, champion.trial.median_p99, policy)
            final["monitoring_rules"] = rules
            final_rps = champion.trial.median_throughput
        else:
            registry.discard_challenger(model)
            final["champion"] = f"unchanged ({base.candidate.variant})"
            final_rps = base.measured.trial.median_throughput
        roi = roi_figures(base.measured.trial.median_throughput, final_rps, opt, policy.rollout_gate.target_qps)
        mlflow.log_metrics({k: v for k, v in roi.items() if v != float("inf")})
        mlflow.log_metric("candidates_measured", final["candidates_measured"])
        baseline_summary = summarize_baseline(base.candidate, base.measured)
        report = render_report(
            model, baseline_summary, render_breakdown(bottleneck), results, champion, final, roi, checklist
        )
        mlflow.log_text(report, "report.md")
        mlflow.log_dict({"candidates": [r.row() for r in results]}, "candidates.json")
        create_markdown_artifact(report, key=f"optimization-report-{slug(model)}", description="optimization cycle report")
        if results:
            create_table_artifact([r.row() for r in results], key=f"optimization-candidates-{slug(model)}")
        wall = time.monotonic() - started
        mlflow.log_metric("wall_s", wall)
        return {
            "model": model,
            "baseline": baseline_summary,
            "results": [r.row() for r in results],
            "champion": champion.name if promotion and champion else None,
            "promotion": promotion,
            "final": final,
            "roi": roi,
            "bottleneck": bottleneck.focus_area,
            "mlflow_run_id": parent.info.run_id,
            "wall_s": round(wall, 1),
        }


if __name__ == "__main__":
    print(json.dumps(optimization_cycle(), indent=2, default=str))
