"""The optimization cycle's report and records: the baseline as people read it, the markdown report, and the MLflow
runs of the cycle and of each candidate (built here as plain records, written by tasks/records/runs.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tasks.decision import Decision, decisions_markdown
from tasks.measure.workload import Workload
from tasks.optimize.baseline import CycleBaseline
from tasks.optimize.candidates import Candidate
from tasks.optimize.search import CycleSettings, SearchOutcome
from tasks.optimize.trials import Measured, Trial
from tasks.optimize.validation import CandidateResult
from tasks.records import names
from tasks.records.runs import RunRecord

if TYPE_CHECKING:
    from tasks.optimize.order import PlanOrder
    from tasks.optimize.serving_search import KneeTrial, ServingLevel


def summarize_baseline(baseline: CycleBaseline) -> dict[str, Any]:
    """The baseline as the report shows it: what served, how fast, how noisy, how accurate."""
    candidate, measured = baseline.candidate, baseline.measured
    return {
        "variant": candidate.variant,
        f"throughput (items/s, batch {candidate.batch})": round(measured.trial.median_throughput, 1),
        "p99 ms per batch": round(measured.trial.median_p99, 2),
        "spread": f"{measured.trial.spread:.1%}",
        measured.metric: round(measured.value, 4),
        "measured on": measured.details.get("measured_on", "this process"),
        "model level timed": baseline.where.reason if baseline.where else "in this process",
        "timed": timed_again_sentence(baseline),
        "timed at": _utc(measured.details.get("timed_at")),
    }


def _utc(epoch_s: float | None) -> str | None:
    if epoch_s is None:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def timed_again_sentence(baseline: CycleBaseline) -> str:
    """How the baseline's timing the candidates are judged against came about."""
    trial, first = baseline.measured.trial, baseline.first_trial
    if first is None:
        return "once, before the candidates"
    return (
        f"again right before the candidates: {trial.median_throughput:.1f} items/s (spread {trial.spread:.1%}); "
        f"first timed at {first.median_throughput:.1f} items/s, before the knee searches on the endpoint"
    )


def timed_again_record(baseline: CycleBaseline) -> RunRecord:
    """The baseline timed again, on the cycle's run: the figures the candidates are judged against, and the first."""
    trial, first = baseline.measured.trial, baseline.first_trial
    return RunRecord(
        f"cycle-{baseline.model}",
        names.OPTIMIZATION_EXPERIMENT,
        metrics={
            **_baseline_metrics(trial),
            "baseline_first_throughput": first.median_throughput if first else None,
        },
    )


def _baseline_metrics(trial: Trial) -> dict[str, float | None]:
    return {
        "baseline_throughput": trial.median_throughput,
        "baseline_p99_ms": trial.median_p99,
        "baseline_spread": trial.spread,
    }


def cycle_record(model: str, workload: Workload | None) -> RunRecord:
    """The cycle's parent run as it opens (one parent run per cycle, a nested run per candidate)."""
    record = RunRecord(
        f"cycle-{model}",
        names.OPTIMIZATION_EXPERIMENT,
        tags={names.TAG_MODEL: model, names.TAG_RETENTION_CLASS: names.OPTIMIZATION_PLANS},
    )
    if workload is not None:
        record.params = {"request_log": workload.source, "workload_requests": len(workload.requests)}
        record.metrics = {"workload_repeat_share": workload.repeat_share}
    return record


def baseline_record(
    model: str, baseline: CycleBaseline, settings: CycleSettings, plan: list[Candidate]
) -> RunRecord:
    """What the cycle measured before changing anything, and the plan it will try."""
    trial = baseline.measured.trial
    return RunRecord(
        f"cycle-{model}",
        names.OPTIMIZATION_EXPERIMENT,
        params={
            "baseline_variant": baseline.candidate.variant,
            "baseline_sha256": baseline.measured.sha256,
            "repeats": settings.repeats,
            "max_trials": settings.max_trials,
            "batch": settings.batch,
            "threads": settings.threads,
        },
        metrics=_baseline_metrics(trial),
        tags={names.TAG_MEASURED_ON: baseline.measured.details.get("measured_on", "this process")},
        dicts={"plan.json": {"plan": [c.params() | {"name": c.name} for c in plan]}},
    )


def candidate_record(
    result: CandidateResult, measured: Measured | None, baseline: CycleBaseline
) -> RunRecord:
    """One candidate's nested run: its measurements, every check, and the rollback record when it was rejected."""
    trial = result.trial
    record = RunRecord(
        result.name,
        names.OPTIMIZATION_EXPERIMENT,
        tags={
            names.TAG_MODEL: baseline.model,
            names.TAG_VERDICT: "accepted" if result.accepted else "rejected",
            names.TAG_REASON: result.reason,
            names.TAG_RETENTION_CLASS: names.PERFORMANCE_DATA,
        },
        params=dict(result.params),
        metrics={
            "throughput_median": trial.median_throughput if trial else None,
            "p99_ms_median": trial.median_p99 if trial else None,
            "throughput_spread": trial.spread if trial else None,
            "gain": result.gain,
            "retention": result.retention,
            "worst_case_retention": result.worst_case_retention,
            "matrix_weighted_score": result.matrix.weighted_score if result.matrix else None,
            "cache_hit_rate": result.hit_rate,
            **({f"matrix_{f.factor}": f.score for f in result.matrix.factors} if result.matrix else {}),
        },
        dicts={"validation.json": {"checks": [c.as_dict() for c in result.checks], "row": result.row()}},
        failed=trial is None,
    )
    if measured is not None:
        record.tags |= {
            names.TAG_SHA256: measured.sha256,
            names.TAG_PROVIDER: measured.provider,
            names.TAG_MEASURED_ON: measured.details.get("measured_on"),
        }
    if not result.accepted:
        # Candidates are measured beside the served model, so rolling back means the served model and config stay
        # the baseline's; the record says so (rollback records are kept 1 year).
        record.dicts["rollback_record.json"] = {
            "candidate": result.name,
            "reason": result.reason,
            "restored_variant": baseline.candidate.variant,
            "restored_sha256": baseline.measured.sha256,
            "restored_version": baseline.version,
            "at": time.time(),
        }
        record.tags[names.TAG_ROLLBACK] = "recorded"
    return record


# Which of the seed's expected-gain claims (policy optimization.expected_gain) an optimization type falls under.
SEED_GAIN_CLAIM = {
    "fp16": "fp16_batching",
    "batching": "fp16_batching",
    "quantization": "int8_pruning_distillation",
    "static_quantization": "int8_pruning_distillation",
}


def seed_expectation(optimization_type: str, expected_gain: dict[str, tuple[float, float]]) -> str:
    """The seed's claimed gain range for an optimization type ("+50% to +200%"), or "" when it claims none."""
    claim = expected_gain.get(SEED_GAIN_CLAIM.get(optimization_type, ""))
    return f"{claim[0]:+.0%} to {claim[1]:+.0%}" if claim else ""


def render_report(
    model: str,
    baseline: dict[str, Any],
    bottleneck: str,
    results: list[CandidateResult],
    champion: CandidateResult | None,
    final: dict[str, Any],
    roi: dict[str, float],
    checklist: list[Decision],
    expected_gain: dict[str, tuple[float, float]] | None = None,
    serving: ServingLevel | None = None,
    order: PlanOrder | None = None,
) -> str:
    """The cycle's report as markdown: baseline, bottlenecks and the plan order they drove, each candidate's result
    and reason (its measured gain beside the seed's expected range for its type, policy
    optimization.expected_gain), the serving level, outcome."""
    lines = [f"# Optimization cycle: {model}", ""]
    lines += ["## Baseline", ""] + [f"- {k}: {v}" for k, v in baseline.items()] + [""]
    lines += ["## Bottleneck analysis", "", bottleneck, ""]
    if order is not None:
        lines += [f"**Plan order:** {order.reason}. The breakdown was measured {order.source}.", ""]
    lines += ["## Pre-implementation checklist", "", decisions_markdown(checklist)]
    lines += [
        "## Candidates",
        "",
        "| candidate | type | throughput | P99 ms | gain | seed's expected gain | spread | retention | cache hit rate "
        "| matrix | verdict | reason | measured on |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        row = r.row()
        cells = ["" if row[k] is None else str(row[k]) for k in row]
        cells.insert(list(row).index("gain") + 1, seed_expectation(r.optimization_type, expected_gain or {}))
        lines.append("| " + " | ".join(cells) + " |")
    if serving is not None:
        lines += ["", "## Serving level (on the endpoint)", "", serving_markdown(serving)]
    lines += ["", "## Outcome", ""]
    refused = (final.get("refusal") or "") if champion is None else ""
    if refused:
        lines.append(f"Nothing promoted: {refused}. The previous champion keeps serving.")
    elif champion is None:
        lines.append("No candidate passed: the previous champion keeps serving.")
    else:
        lines.append(f"Champion: **{champion.name}** ({champion.reason}).")
    lines += [""] + [f"- {k}: {v}" for k, v in final.items() if k != "serving_level"]
    lines += ["", "## Improvement and ROI", ""] + [f"- {k}: {v}" for k, v in roi.items()]
    return "\n".join(lines) + "\n"


def serving_trial_record(model: str, trial: KneeTrial) -> RunRecord:
    """One serving-level trial's nested run: its configuration, knee, P99 there, and why it stopped or failed."""
    c = trial.config
    return RunRecord(
        f"serving-{trial.number}-{c.name}",
        names.OPTIMIZATION_EXPERIMENT,
        tags={
            names.TAG_MODEL: model,
            names.TAG_VERDICT: trial.status,
            names.TAG_REASON: trial.reason,
            names.TAG_RETENTION_CLASS: names.PERFORMANCE_DATA,
        },
        params={
            "variant": trial.variant,
            "stage": "serving",
            "replicas": c.replicas,
            "intra_op_threads": c.threads,
            "batch": c.max_batch,
            "batch_wait_ms": c.wait_ms,
            "cache_entries": c.cache_entries,
        },
        metrics={
            "knee_rps": trial.knee_rps,
            "p99_ms_at_knee": trial.p99_ms,
            "error_rate_at_knee": trial.error_rate,
            "cpus": float(c.cpus),
            "seconds": trial.seconds,
            **trial.phases,
            **trial.usage,
        },
        failed=not trial.ok,
    )


def serving_markdown(level: ServingLevel) -> str:
    """The serving level's sentence and every trial: configuration, knee, P99 there, CPUs held, why it stopped."""
    lines = [
        level.sentence(),
        "",
        f"Search: {level.run.method}, {level.run.stop_reason}, {level.run.seconds:.0f} s.",
        "",
    ]
    rows = [t.row() for t in level.trials]
    if rows:
        lines += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for row in rows:
        lines.append("| " + " | ".join("" if v is None else str(v) for v in row.values()) + " |")
    return "\n".join(lines) + "\n"


def gated_release(gated: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """What a gated cycle changed: the gate's promotion (None when it kept the champion, or when production rolled
    the release back) and what the endpoint serves, as `final_state` takes them."""
    release = gated.get("release")
    if release is None:
        return gated["promotion"], None
    served = release["served"]
    knobs = (
        {"knobs": served["knobs"], "error": served["knobs_error"]}
        if served["knobs_error"]
        else served["knobs_applied"]
    )
    endpoint = {"url": release["url"], "version": served["version"], "sha256": served["sha256"]}
    state = {"endpoint": endpoint, "serving_knobs": knobs, "risk_window": release["risk_window"]}
    return (None if release["rolled_back"] else gated["promotion"]), state


def final_state(
    outcome: SearchOutcome,
    baseline: CycleBaseline,
    promotion: dict[str, Any] | None,
    gate: dict[str, Any] | None,
    served: dict[str, Any] | None,
    monitoring_rules: str | None,
) -> dict[str, Any]:
    """What the cycle ended with: how the search stopped, the gate's verdict, the champion and where it serves."""
    final: dict[str, Any] = {
        "search": outcome.stop_reason,
        "candidates_measured": outcome.candidates_measured,
    }
    if gate is not None:
        final["gate"] = {
            k: gate[k]
            for k in (
                "model",
                "url",
                "passed",
                "weighted_score",
                "reason",
                "rows",
                "decision",
                "promotion",
                "risk_actions",
                "release",
                "mlflow_run_id",
            )
        }
    if outcome.serving is not None:
        final["serving_level"] = outcome.serving.record()
    champion = outcome.champion
    if promotion and champion is not None and champion.trial is not None:
        final["champion"] = champion.name
        final["champion_throughput"] = round(champion.trial.median_throughput, 1)
        final["champion_p99_ms"] = round(champion.trial.median_p99, 2)
        final.update(served or {})
        if monitoring_rules:
            final["monitoring_rules"] = monitoring_rules
    elif gate is not None and (gate.get("release") or {}).get("rolled_back"):
        final["champion"] = f"unchanged ({baseline.candidate.variant}): production rolled the release back"
    else:
        final["champion"] = f"unchanged ({baseline.candidate.variant})"
    if outcome.refusal:
        final["refusal"] = outcome.refusal
    return final


def final_throughput(outcome: SearchOutcome, baseline: CycleBaseline, promoted: bool) -> float:
    """Throughput after the cycle: the promoted champion's, else the baseline's (nothing changed)."""
    champion = outcome.champion
    if promoted and champion is not None and champion.trial is not None:
        return champion.trial.median_throughput
    return baseline.measured.trial.median_throughput


def final_replicas(outcome: SearchOutcome, baseline: CycleBaseline, promoted: bool) -> int:
    """Replicas after the cycle: the promoted champion's, else the baseline's."""
    champion = outcome.champion
    if promoted and champion is not None:
        return int(champion.params.get("replicas", baseline.candidate.replicas))
    return baseline.candidate.replicas


def summary_record(
    model: str,
    outcome: SearchOutcome,
    roi: dict[str, float],
    report: str,
    wall_s: float,
    final: dict[str, Any],
) -> RunRecord:
    """What the parent run gets at the end: what it ended serving, ROI, the report, every candidate's row."""
    return RunRecord(
        f"cycle-{model}",
        names.OPTIMIZATION_EXPERIMENT,
        tags={names.TAG_CYCLE_CHAMPION: final.get("champion")},
        metrics={**roi, "candidates_measured": outcome.candidates_measured, "wall_s": wall_s},
        texts={"report.md": report},
        dicts={"candidates.json": {"candidates": [r.row() for r in outcome.results]}},
    )


def cycle_output(
    model: str,
    baseline: CycleBaseline,
    bottleneck_focus: str,
    outcome: SearchOutcome,
    final: dict[str, Any],
    promotion: dict[str, Any] | None,
    roi: dict[str, float],
    run_id: str,
    wall_s: float,
    checklist: list[Decision] | None = None,
    order: PlanOrder | None = None,
    served_baseline: KneeTrial | None = None,
) -> dict[str, Any]:
    """The flow's return value (what the CLI prints and scripts read). `served_baseline`: what served before the
    cycle, measured on the endpoint (its knee on a trial app beside production), when the cycle had one."""
    champion = outcome.champion
    return {
        "model": model,
        "baseline": summarize_baseline(baseline),
        "results": [r.row() for r in outcome.results],
        "champion": champion.name if promotion and champion else None,
        "promotion": promotion,
        "final": final,
        "roi": roi,
        "bottleneck": bottleneck_focus,
        "plan_order": order.record() if order else None,
        "mlflow_run_id": run_id,
        "wall_s": round(wall_s, 1),
        "checklist": {d.name: d.reason for d in checklist or []},
        "served_baseline": served_baseline.row() if served_baseline is not None else None,
        "serving": {
            "sentence": outcome.serving.sentence(),
            "trials": [t.row() for t in outcome.serving.trials],
        }
        if outcome.serving is not None
        else None,
    }
