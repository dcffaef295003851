"""The records read back for people: optimization cycles (baseline vs champion, accuracy retention, ROI), their
candidates, phase-gate decisions, rollbacks, the registry's aliases and capacity plans, as the DataFrames and
figures the notebooks show. Reading only: nothing here writes to MLflow."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion

from serving.resolver import TAG_SHA256 as VERSION_SHA256
from serving.resolver import TAG_VARIANT as VERSION_VARIANT
from tasks.policy import default_policy
from tasks.records import names, registry
from tasks.records.runs import PARENT_TAG
from tasks.records.store import configure

# Artifact files the writers name inline (tasks/optimize/report.py and tasks/records/registry.py write the rollback
# record, tasks/capacity/tracking.py the plan's files); read back under the same names.
ROLLBACK_RECORD = "rollback_record.json"
PLAN_REPORT = "capacity_plan.md"
PLAN_TABLE = "plan_table.json"
BACKTEST_TABLE = "backtest.json"
PLAN_FIGURES = {
    "forecast.png": "history + forecast with its bands",
    "capacity_vs_demand.png": "demand vs each option's capacity",
}
# Run ids and sha256 digests shown in tables: enough to tell them apart and to search the UI with.
SHORT_ID = 8
SHORT_DIGEST = 16
NO_DATA = (
    "No {what} in {uri} yet: `make run` records an optimization cycle, a phase gate and a capacity plan (or point "
    "INFEROPS_MLFLOW_TRACKING_URI at the store that holds yours)."
)


def no_data(what: str) -> str:
    """The sentence a notebook prints where a table would be: what is missing, where it looked, what to run."""
    return NO_DATA.format(what=what, uri=configure())


def show(table: pd.DataFrame, what: str) -> pd.DataFrame | None:
    """`table` for the notebook to display, or None after printing that there is none and how to get some."""
    if table.empty:
        print(no_data(what))
        return None
    return table


def started(run: Run) -> str:
    return datetime.fromtimestamp(run.info.start_time / 1000).isoformat(sep=" ", timespec="seconds")


def experiment_runs(client: MlflowClient, experiment: str) -> list[Run]:
    """Every run of `experiment`, newest first; none when the experiment does not exist yet."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"]))


def retention_kept(retention_class: str | None) -> str:
    """How long the policy keeps a record of `retention_class` (policy history_retention_days)."""
    if not retention_class:
        return ""
    days = default_policy().history_retention_days.get(retention_class, "unknown")
    return "permanent" if days is None else f"{days} days" if isinstance(days, int) else str(days)


def _retention(tags: dict[str, str]) -> dict[str, str]:
    retention_class = tags.get(names.TAG_RETENTION_CLASS, "")
    return {"retention class": retention_class, "kept": retention_kept(retention_class)}


def artifact_bytes(client: MlflowClient, run_id: str, path: str) -> bytes | None:
    """One file at the top of a run's artifacts, or None when the run has no such file."""
    if path not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    with tempfile.TemporaryDirectory() as folder:
        return Path(client.download_artifacts(run_id, path, folder)).read_bytes()


def artifact_json(client: MlflowClient, run_id: str, path: str) -> dict[str, Any]:
    """A JSON artifact (a logged dict or table); empty when the run has no such file."""
    data = artifact_bytes(client, run_id, path)
    return json.loads(data) if data is not None else {}


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


# ---- optimization cycles ------------------------------------------------------------------------------------------

CYCLE_COLUMNS = [
    "started",
    "model",
    "status",
    "baseline",
    "baseline items/s",
    "baseline P99 ms",
    "champion",
    "version",
    "champion items/s",
    "champion P99 ms",
    "accuracy retention",
    "performance improvement",
    "ROI",
    "cost saving rate",
    "candidates measured",
    "retention class",
    "kept",
    "run",
]
CANDIDATE_COLUMNS = [
    "cycle",
    "model",
    "candidate",
    "stage",
    "verdict",
    "items/s",
    "P99 ms",
    "gain",
    "accuracy retention",
    "matrix score",
    "reason",
    "rollback",
    "retention class",
    "kept",
]
GATE_COLUMNS = [
    "started",
    "model",
    "version",
    "verdict",
    "weighted score",
    "reason",
    "decided by",
    "approved",
    "promoted",
    "risk actions",
    "cycle",
    "retention class",
    "kept",
    "run",
]
ROLLBACK_COLUMNS = [
    "at",
    "model",
    "kind",
    "rolled back",
    "restored",
    "reason",
    "retention class",
    "kept",
    "run",
]
REGISTRY_COLUMNS = [
    "model",
    "version",
    "aliases",
    "variant",
    "sha256",
    "created",
    "rolled back",
    "not promoted",
    "retention class",
    "kept",
]


def model_versions(client: MlflowClient, model: str) -> list[ModelVersion]:
    """Every version of `model` with its tags, newest first."""
    found = client.search_model_versions(f"name = '{model}'")
    return sorted(found, key=lambda mv: int(mv.version), reverse=True)


def champion_version(
    client: MlflowClient, model: str, sha256: str | None, since_ms: int
) -> registry.VersionRef | None:
    """The registry version a cycle registered for its champion: the first version of `model` with the
    champion's sha256 created since the cycle started (the cycle run itself does not name it)."""
    if not sha256:
        return None
    versions = [
        mv
        for mv in model_versions(client, model)
        if mv.tags.get(VERSION_SHA256) == sha256 and mv.creation_timestamp >= since_ms
    ]
    if not versions:
        return None
    first = min(versions, key=lambda mv: int(mv.version))
    return registry.VersionRef(
        model, str(first.version), sha256, first.tags.get(VERSION_VARIANT, ""), str(first.source)
    )


def cycle_row(client: MlflowClient, parent: Run, children: list[Run]) -> dict[str, Any]:
    """One cycle: what served before (the baseline) and after (its champion), the champion's accuracy retention
    and version, and the cycle's ROI figures."""
    tags, metrics, params = parent.data.tags, parent.data.metrics, parent.data.params
    model = tags.get(names.TAG_MODEL, "")
    champion = tags.get(names.TAG_CYCLE_CHAMPION, "")
    winner = next((c for c in children if c.info.run_name == champion), None)
    won = winner.data.metrics if winner else {}
    version = (
        champion_version(client, model, winner.data.tags.get(names.TAG_SHA256), parent.info.start_time)
        if winner
        else None
    )
    return {
        "started": started(parent),
        "model": model,
        "status": parent.info.status,
        "baseline": params.get("baseline_variant", ""),
        "baseline items/s": metrics.get("baseline_throughput"),
        "baseline P99 ms": metrics.get("baseline_p99_ms"),
        "champion": champion or "(cycle did not finish)",
        "version": version.version if version else "",
        "champion items/s": won.get("throughput_median"),
        "champion P99 ms": won.get("p99_ms_median"),
        "accuracy retention": won.get("retention"),
        "performance improvement": metrics.get("performance_improvement"),
        "ROI": metrics.get("roi"),
        "cost saving rate": metrics.get("cost_saving_rate"),
        "candidates measured": int(metrics["candidates_measured"])
        if "candidates_measured" in metrics
        else None,
        **_retention(tags),
        "run": parent.info.run_id[:SHORT_ID],
    }


def candidate_row(parent: Run, run: Run) -> dict[str, Any]:
    tags, metrics = run.data.tags, run.data.metrics
    return {
        "cycle": parent.info.run_id[:SHORT_ID],
        "model": tags.get(names.TAG_MODEL, ""),
        "candidate": run.info.run_name,
        "stage": run.data.params.get("stage", ""),
        "verdict": tags.get(names.TAG_VERDICT, ""),
        "items/s": metrics.get("throughput_median"),
        "P99 ms": metrics.get("p99_ms_median"),
        "gain": metrics.get("gain"),
        "accuracy retention": metrics.get("retention"),
        "matrix score": metrics.get("matrix_weighted_score"),
        "reason": tags.get(names.TAG_REASON, ""),
        "rollback": tags.get(names.TAG_ROLLBACK, ""),
        **_retention(tags),
    }


def gate_row(run: Run) -> dict[str, Any]:
    """One phase gate: its verdict and why, who decided the release, whether it promoted, the risk actions."""
    tags, metrics = run.data.tags, run.data.metrics
    approval = names.TAG_APPROVAL_PREFIX
    verdict = tags.get(names.TAG_GATE_VERDICT, "")
    return {
        "started": started(run),
        "model": tags.get(names.TAG_MODEL, ""),
        "version": run.data.params.get("candidate_version", ""),
        "verdict": verdict.upper(),
        "weighted score": metrics.get("weighted_score"),
        "reason": tags.get(names.TAG_GATE_REASON, ""),
        "decided by": tags.get(f"{approval}decided_by", ""),
        "approved": tags.get(f"{approval}approved", ""),
        "promoted": tags.get(names.TAG_GATE_PROMOTED, "false"),
        "risk actions": tags.get(names.TAG_RISK_ACTIONS, ""),
        "cycle": tags.get(PARENT_TAG, "")[:SHORT_ID],  # empty for a gate run on its own
        **_retention(tags),
        "run": run.info.run_id[:SHORT_ID],
    }


def candidate_rollback_row(client: MlflowClient, run: Run) -> dict[str, Any]:
    """A rejected candidate: the served model and config stayed the baseline's (its rollback record says which)."""
    tags = run.data.tags
    record = artifact_json(client, run.info.run_id, ROLLBACK_RECORD)
    restored = record.get("restored_variant", "")
    if record.get("restored_version"):
        restored += f" (v{record['restored_version']})"
    at = record.get("at")
    return {
        "at": datetime.fromtimestamp(at).isoformat(sep=" ", timespec="seconds") if at else started(run),
        "model": tags.get(names.TAG_MODEL, ""),
        "kind": "candidate rejected",
        "rolled back": run.info.run_name,
        "restored": restored,
        "reason": record.get("reason") or tags.get(names.TAG_REASON, ""),
        **_retention(tags),
        "run": run.info.run_id[:SHORT_ID],
    }


def registry_rollback_row(client: MlflowClient, run: Run) -> dict[str, Any]:
    """`champion` moved back to `previous-champion` (after a release went wrong, or by hand)."""
    tags = run.data.tags
    record = artifact_json(client, run.info.run_id, ROLLBACK_RECORD)
    at = record.get("at")
    return {
        "at": datetime.fromtimestamp(at).isoformat(sep=" ", timespec="seconds") if at else started(run),
        "model": record.get("model") or tags.get(names.TAG_MODEL, ""),
        "kind": "registry rollback",
        "rolled back": f"v{record['from_version']}" if record.get("from_version") else "",
        "restored": f"v{record['to_version']}" if record.get("to_version") else "",
        "reason": record.get("reason", ""),
        **_retention(tags),
        "run": run.info.run_id[:SHORT_ID],
    }


def registry_rows(client: MlflowClient) -> list[dict[str, Any]]:
    """Every registered version with the aliases that point at it (the rollout state) and why it left service."""
    rows = []
    for model in client.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            aliases.setdefault(str(version), []).append(alias)
        for mv in model_versions(client, model.name):
            tags = mv.tags
            rows.append(
                {
                    "model": model.name,
                    "version": str(mv.version),
                    "aliases": ", ".join(sorted(aliases.get(str(mv.version), []))),
                    "variant": tags.get(VERSION_VARIANT, ""),
                    "sha256": tags.get(VERSION_SHA256, "")[:SHORT_DIGEST],
                    "created": datetime.fromtimestamp(mv.creation_timestamp / 1000).isoformat(
                        sep=" ", timespec="seconds"
                    ),
                    "rolled back": tags.get(names.VERSION_TAG_ROLLED_BACK, ""),
                    "not promoted": tags.get(names.VERSION_TAG_GATE, ""),
                    **_retention(tags),
                }
            )
    return rows


@dataclass
class CycleRecords:
    """Everything the optimization-cycles notebook shows, one DataFrame per table, newest first."""

    uri: str
    cycles: pd.DataFrame
    candidates: pd.DataFrame
    gates: pd.DataFrame
    rollbacks: pd.DataFrame
    registry: pd.DataFrame
    retention_threshold: float = field(
        default_factory=lambda: default_policy().optimization.accuracy_retention_threshold
    )

    def headline(self) -> str:
        """One sentence: how many cycles of which models the store holds, or that it holds none."""
        if self.cycles.empty:
            return no_data("optimization cycles")
        models = ", ".join(sorted(set(self.cycles["model"])))
        return (
            f"{len(self.cycles)} optimization cycle(s) of {models}, {len(self.gates)} phase gate(s) and "
            f"{len(self.rollbacks)} rollback record(s) in {self.uri}"
        )


def read_cycles(client: MlflowClient | None = None) -> CycleRecords:
    """Read the cycles (parent runs) with their candidates (nested runs), the gates, the rollbacks and the registry."""
    uri = configure()
    client = client or MlflowClient(uri)
    runs = experiment_runs(client, names.OPTIMIZATION_EXPERIMENT)
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    children: dict[str, list[Run]] = {}
    for run in runs:
        if PARENT_TAG in run.data.tags:
            children.setdefault(run.data.tags[PARENT_TAG], []).append(run)
    candidates = [
        (parent, run) for parent in parents for run in reversed(children.get(parent.info.run_id, []))
    ]
    rollbacks = [
        candidate_rollback_row(client, run) for _, run in candidates if run.data.tags.get(names.TAG_ROLLBACK)
    ]
    rollbacks += [
        registry_rollback_row(client, run)
        for run in experiment_runs(client, names.REGISTRY_EXPERIMENT)
        if run.data.tags.get(names.TAG_KIND) == "rollback"
    ]
    gates = [
        gate_row(run)
        for run in experiment_runs(client, names.GATE_EXPERIMENT)
        if run.data.tags.get(names.TAG_GATE_VERDICT)
    ]
    return CycleRecords(
        uri,
        _frame([cycle_row(client, p, children.get(p.info.run_id, [])) for p in parents], CYCLE_COLUMNS),
        _frame([candidate_row(parent, run) for parent, run in candidates], CANDIDATE_COLUMNS),
        _frame(gates, GATE_COLUMNS),
        _frame(sorted(rollbacks, key=lambda r: r["at"], reverse=True), ROLLBACK_COLUMNS),
        _frame(registry_rows(client), REGISTRY_COLUMNS),
    )


def plot_cycles(records: CycleRecords) -> Any:
    """Baseline vs champion throughput per cycle, and every candidate's throughput gain against its accuracy
    retention beside the policy's threshold; None when there is no cycle to plot."""
    if records.cycles.empty:
        return None
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4), layout="constrained")
    bars, scatter = figure.subplots(1, 2)
    cycles = records.cycles.iloc[::-1]  # oldest first, left to right
    labels = [f"{m}\n{s}" for m, s in zip(cycles["model"], cycles["started"], strict=True)]
    x = range(len(cycles))
    bars.bar([i - 0.2 for i in x], cycles["baseline items/s"].astype(float), 0.4, label="baseline")
    bars.bar([i + 0.2 for i in x], cycles["champion items/s"].astype(float), 0.4, label="champion")
    bars.set_xticks(list(x), labels, fontsize=7)
    bars.set_ylabel("items/s (median)")
    bars.set_title("baseline vs champion per cycle")
    bars.legend(fontsize=8)
    candidates = records.candidates.dropna(subset=["accuracy retention", "gain"])
    for verdict, marker in (("accepted", "o"), ("rejected", "x")):
        chosen = candidates[candidates["verdict"] == verdict]
        scatter.scatter(chosen["accuracy retention"], chosen["gain"], marker=marker, label=verdict)
        for _, row in chosen.iterrows():
            scatter.annotate(row["candidate"], (row["accuracy retention"], row["gain"]), fontsize=7)
    scatter.axvline(
        records.retention_threshold,
        color="tab:red",
        ls="--",
        label=f"threshold {records.retention_threshold}",
    )
    scatter.set_xlabel("accuracy retention")
    scatter.set_ylabel("throughput gain vs baseline (+1 = 2x)")
    scatter.set_title("candidates")
    scatter.legend(fontsize=8)
    return figure


# ---- capacity plans -------------------------------------------------------------------------------------------

PLAN_COLUMNS = [
    "started",
    "model",
    "recommendation",
    "strategy",
    "scenario",
    "confidence",
    "monthly cost",
    "forecaster",
    "validation",
    "history",
    "retention class",
    "kept",
    "run",
]


def plan_row(run: Run) -> dict[str, Any]:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    return {
        "started": started(run),
        "model": tags.get(names.TAG_MODEL, ""),
        "recommendation": tags.get(names.TAG_RECOMMENDATION, ""),
        "strategy": tags.get(names.TAG_STRATEGY, ""),
        "scenario": params.get("scenario", ""),
        "confidence": params.get("confidence", ""),
        "monthly cost": metrics.get("monthly_cost"),
        "forecaster": tags.get(names.TAG_FORECASTER, ""),
        "validation": tags.get(names.TAG_VALIDATION, ""),
        "history": tags.get(names.TAG_HISTORY, ""),
        **_retention(tags),
        "run": run.info.run_id[:SHORT_ID],
    }


@dataclass
class CapacityPlan:
    """One capacity plan as its MLflow run holds it: the summary, the report, the tables and the plot images."""

    uri: str
    summary: pd.Series
    report: str
    plan_table: pd.DataFrame
    backtest: pd.DataFrame
    figures: dict[str, bytes]  # artifact file -> PNG

    def options(self) -> pd.DataFrame:
        """Each option at the plan's scenario and confidence: its rate per unit, the units it needs, its monthly
        cost, and which one the plan recommends."""
        table = self.plan_table
        if table.empty:
            return pd.DataFrame()
        scenario, confidence = self.summary["scenario"], float(self.summary["confidence"])
        chosen = table[(table["scenario"] == scenario) & ((table["level"] - confidence).abs() < 1e-9)]
        # the run's recommendation tag reads `<units>x<option>` (tasks/capacity/tracking.py)
        recommended = str(self.summary["recommendation"]).split("x", 1)[-1]
        out = chosen[["option", "label", "unit_rps", "units", "monthly_cost"]].copy()
        out["recommended"] = out["option"] == recommended
        return out.sort_values("monthly_cost").reset_index(drop=True)

    def units_by_scenario(self) -> pd.DataFrame:
        """Units each option needs under every scenario and confidence level: one row each, a column per option."""
        if self.plan_table.empty:
            return pd.DataFrame()
        units = self.plan_table.pivot_table(index=["scenario", "level"], columns="option", values="units")
        return units.reset_index().rename_axis(columns=None)


def read_plans(client: MlflowClient | None = None) -> pd.DataFrame:
    """Every capacity plan recorded, newest first."""
    client = client or MlflowClient(configure())
    return _frame([plan_row(r) for r in experiment_runs(client, names.CAPACITY_EXPERIMENT)], PLAN_COLUMNS)


def artifact_table(client: MlflowClient, run_id: str, path: str) -> pd.DataFrame:
    """A table logged with `log_table` (MLflow's split orientation); empty when the run has no such file."""
    payload = artifact_json(client, run_id, path)
    return pd.DataFrame(payload.get("data", []), columns=payload.get("columns"))


def read_plan(model: str | None = None, client: MlflowClient | None = None) -> CapacityPlan | None:
    """The newest finished capacity plan (of `model`, when given), read back from its run; None when there is none."""
    uri = configure()
    client = client or MlflowClient(uri)
    runs = [
        r
        for r in experiment_runs(client, names.CAPACITY_EXPERIMENT)
        if r.info.status == "FINISHED" and (model is None or r.data.tags.get(names.TAG_MODEL) == model)
    ]
    if not runs:
        return None
    run = runs[0]
    run_id = run.info.run_id
    figures = {name: artifact_bytes(client, run_id, name) for name in PLAN_FIGURES}
    report = artifact_bytes(client, run_id, PLAN_REPORT)
    return CapacityPlan(
        uri,
        pd.Series(plan_row(run)),
        report.decode("utf-8") if report is not None else "",
        artifact_table(client, run_id, PLAN_TABLE),
        artifact_table(client, run_id, BACKTEST_TABLE),
        {name: png for name, png in figures.items() if png is not None},
    )
