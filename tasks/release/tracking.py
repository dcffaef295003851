"""What the gate records, as plain records and markdown: the gate run (items, every check, the report), the
release decision, the promotion, and the rollout risk window that follows it."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from tasks.decision import markdown_table
from tasks.records import names
from tasks.records.registry import VersionRef
from tasks.records.runs import RunRecord
from tasks.release.approval import ApprovalDecision
from tasks.release.gate import GateVerdict, ItemResult
from tasks.release.rollout_risk import Observation, rolled_back


def gate_title(model: str, candidate: VersionRef | None) -> str:
    return f"Phase gate {model}" + (f" v{candidate.version}" if candidate else "")


def gate_record(
    model: str,
    verdict: GateVerdict,
    results: list[ItemResult],
    candidate: VersionRef | None,
    params: dict[str, Any],
    report: str,
) -> RunRecord:
    """The gate's MLflow run: the verdict as tags, each item's observed share and minimum, every check."""
    record = RunRecord(
        f"gate-{model}" + (f"-v{candidate.version}" if candidate else ""),
        names.GATE_EXPERIMENT,
        tags={
            names.TAG_KIND: "gate",
            names.TAG_MODEL: model,
            names.TAG_GATE_VERDICT: "pass" if verdict.passed else "fail",
            names.TAG_GATE_REASON: verdict.reason,
            names.TAG_SHA256: candidate.sha256 if candidate else "",
            names.TAG_RETENTION_CLASS: names.IMPLEMENTATION_LOGS,
        },
        params={k: v for k, v in params.items() if v is not None},
        metrics={"weighted_score": verdict.weighted_score, "passed": float(verdict.passed)},
        tables={"gate_items.json": {k: [str(r[k]) for r in verdict.rows] for k in verdict.rows[0]}},
        dicts={
            "gate_checks.json": {
                r.item: {"observed": r.observed, "checks": [c.as_dict() for c in r.checks]} for r in results
            }
        },
        texts={"gate_report.md": report},
    )
    for item in verdict.items:
        record.metrics[f"{item.name}.observed"] = float(item.observed)
        record.metrics[f"{item.name}.minimum"] = float(item.threshold)
        record.tags[names.gate_item_reason_tag(item.name)] = item.reason
    return record


def decision_record(decision: ApprovalDecision) -> RunRecord:
    """Who decided whether the candidate may be promoted, as tags to filter by and a JSON artifact."""
    tags = {
        f"{names.TAG_APPROVAL_PREFIX}approved": str(decision.approved).lower(),
        f"{names.TAG_APPROVAL_PREFIX}decided_by": decision.decided_by,
        f"{names.TAG_APPROVAL_PREFIX}promote": str(decision.promote).lower(),
        f"{names.TAG_APPROVAL_PREFIX}comment": decision.comment,
    }
    return RunRecord(
        "decision", names.GATE_EXPERIMENT, tags=tags, dicts={"approval_decision.json": decision.as_dict()}
    )


def decision_markdown(model: str, decision: ApprovalDecision) -> str:
    return f"# Release decision: {model}\n\n```json\n{json.dumps(decision.as_dict(), indent=2)}\n```\n"


def promotion_record(promotion: dict[str, Any]) -> RunRecord:
    return RunRecord(
        "promotion",
        names.GATE_EXPERIMENT,
        tags={names.TAG_GATE_PROMOTED: str(promotion["promoted"]).lower()},
        dicts={"promotion.json": promotion},
    )


def risk_record(
    baseline: Observation, windows: list[Observation], actions: list[dict[str, Any]]
) -> RunRecord:
    """The live windows after promotion beside the gate's baseline, and every action the risk policy demanded of
    all of them (the metrics are the last window's)."""
    return RunRecord(
        "risk-window",
        names.GATE_EXPERIMENT,
        tags={names.TAG_RISK_ACTIONS: ",".join(a["action"] for a in actions) or "none"},
        metrics={
            **{f"risk.current.{k}": v for k, v in asdict(windows[-1]).items()},
            "risk.windows": float(len(windows)),
        },
        dicts={
            "risk_actions.json": {
                "baseline": asdict(baseline),
                "current": asdict(windows[-1]),
                "windows": [asdict(w) for w in windows],
                "actions": actions,
            }
        },
    )


def risk_markdown(
    model: str, baseline: Observation, windows: list[Observation], actions: list[dict[str, Any]]
) -> str:
    seen = "; ".join(
        f"window {i}: P99 {w.p99_ms:.1f} ms, {w.throughput_rps:.1f} req/s, errors {w.error_rate:.2%}, "
        f"utilisation {w.utilisation:.0%}"
        for i, w in enumerate(windows, 1)
    )
    head = (
        f"# Rollout risk control: {model}\n\n"
        f"Baseline (gate): P99 {baseline.p99_ms:.1f} ms, {baseline.throughput_rps:.1f} req/s; {seen}\n\n"
    )
    if len(windows) > 1 and not actions:
        head += "The first window's breach did not hold in the next: nothing was done.\n\n"
    columns = ("level", "action", "threshold", "observed", "done", "reason")
    rows = [{c: r.get(c) for c in columns} for r in actions] or [
        {
            "level": "-",
            "action": "none",
            "threshold": "-",
            "observed": "-",
            "done": "-",
            "reason": "every figure within the risk policy",
        }
    ]
    return head + markdown_table(rows)


def gate_outcome(
    model: str,
    url: str,
    verdict: GateVerdict,
    decision: ApprovalDecision,
    run_id: str,
    promotion: dict[str, Any] | None,
    risk_actions: list[dict[str, Any]],
    release: dict[str, Any] | None,
    wall_s: float,
) -> dict[str, Any]:
    """The gate flow's return value; `release` is what production became, when the gate released to it."""
    return {
        "model": model,
        "url": url,
        "passed": verdict.passed,
        "weighted_score": verdict.weighted_score,
        "rows": verdict.rows,
        "reason": verdict.reason,
        "decision": decision.as_dict(),
        "mlflow_run_id": run_id,
        "promotion": promotion,
        "risk_actions": risk_actions,
        "release": release,
        "wall_s": round(wall_s, 1),
    }


def release_outcome(
    url: str,
    served: dict[str, Any],
    windows: list[Observation],
    actions: list[dict[str, Any]],
    benchmark: dict[str, Any] | None,
    monitoring: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The release flow's return value: what production serves, how its risk window went, its new baseline, and
    (given Prometheus) whether the completion criterion "monitoring coverage" holds for it."""
    return {
        "url": url,
        "served": {
            k: served[k]
            for k in ("version", "sha256", "variant", "how", "knobs", "knobs_applied", "knobs_error")
        },
        "risk_window": asdict(windows[-1]),
        "risk_windows": len(windows),
        "risk_actions": actions,
        "rolled_back": rolled_back(actions),
        "benchmark": benchmark,
        "monitoring": monitoring,
    }
