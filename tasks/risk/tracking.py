"""The records a risk assessment reads and writes in MLflow: the assessment itself (inputs, evidence, scores, the
heat map), the latest one for a model (the cycle's checklist, the next assessment's change column), and what it
reads from other stages' runs: the P99 production was watched at after its last release, the latest capacity plan."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from tasks.policy import Risk
from tasks.records import names
from tasks.records.browse import artifact_json
from tasks.records.runs import RunRecord
from tasks.records.status import latest_run
from tasks.records.store import configure
from tasks.risk.assessment import LiveAssessment, evidence_rows, heat_map, table_rows

RUN_NAME = "risk-assessment"
ASSESSMENT_FILE = "assessment.json"


def _slug(name: str) -> str:
    return names.slug(name).replace("-", "_")


def assessment_record(assessment: LiveAssessment, policy: Risk, previous: dict[str, Any] | None) -> RunRecord:
    return RunRecord(
        f"{RUN_NAME}-{assessment.model}",
        names.RISK_EXPERIMENT,
        tags={
            names.TAG_KIND: "risk-assessment",
            names.TAG_MODEL: assessment.model,
            names.TAG_RISK_LEVEL: assessment.overall_level,
            names.TAG_RISK_HIGH: ", ".join(r.name for r in assessment.high()) or "none",
        },
        params={"gpu_factor": assessment.gpu.factor, "gpu_source": assessment.gpu.note[:250]},
        metrics={
            "composite": assessment.composite,
            **{f"score.{_slug(r.name)}": r.matrix_score for r in assessment.risks},
            **{f"probability.{_slug(r.name)}": float(r.probability) for r in assessment.risks},
        },
        dicts={ASSESSMENT_FILE: assessment.as_dict()},
        tables={
            "risks.json": pd.DataFrame(table_rows(assessment, previous)),
            "evidence.json": pd.DataFrame(evidence_rows(assessment)),
        },
        figures={"risk_heat_map.png": heat_map(assessment, policy)},
    )


@dataclass(frozen=True)
class Recorded:
    """The latest assessment of a model as MLflow holds it."""

    run_id: str
    at: float
    overall_level: str
    high: list[str]
    assessment: dict[str, Any]

    def age_days(self, now: float | None = None) -> float:
        return ((time.time() if now is None else now) - self.at) / 86400


def latest_assessment(model: str) -> Recorded | None:
    client = MlflowClient(configure())
    run = latest_run(client, names.RISK_EXPERIMENT, model)
    if run is None:
        return None
    data = artifact_json(client, run.info.run_id, ASSESSMENT_FILE)
    high = run.data.tags.get(names.TAG_RISK_HIGH, "none")
    return Recorded(
        run.info.run_id,
        run.info.start_time / 1000.0,
        run.data.tags.get(names.TAG_RISK_LEVEL, "?"),
        [] if high == "none" else high.split(", "),
        data,
    )


def released_p99(model: str) -> tuple[float | None, str]:
    """The P99 production was watched at in its last release's risk window (the gate's run), and what it was."""
    client = MlflowClient(configure())
    run = latest_run(client, names.GATE_EXPERIMENT, model, " AND metrics.`risk.current.p99_ms` > 0")
    if run is None:
        return None, "no release of this model has been watched yet (inferops gate)"
    p99 = run.data.metrics["risk.current.p99_ms"]
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(run.info.start_time / 1000))
    return float(p99), f"the release watched {when} (run {run.info.run_id[:8]})"


def latest_plan(model: str) -> tuple[float | None, float | None, int | None, str, str]:
    """(forecast demand, knee, current units, where, confidence) of the latest capacity plan of `model`."""
    client = MlflowClient(configure())
    run = latest_run(client, names.CAPACITY_EXPERIMENT, model)
    if run is None:
        return None, None, None, "no capacity plan of this model yet (inferops capacity plan)", "-"
    m, p = run.data.metrics, run.data.params
    demand, units = m.get("demand_rps"), m.get("current_units")
    knee = float(p["knee_rps"]) if p.get("knee_rps") else None
    where = f"capacity plan {run.info.run_id[:8]} ({run.data.tags.get(names.TAG_HISTORY, '?')})"
    level = p.get("confidence", "?")
    return (
        demand,
        knee,
        int(units) if units else None,
        where,
        f"{float(level):.0%}" if level != "?" else level,
    )
