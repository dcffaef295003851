"""MLflow runs written from a plain record: what a run holds is built by the stage that measured it (a pure
function, testable without MLflow), and written here, through MLflow's client API with explicit parent runs, so
no task depends on a global "active run" (Prefect may run tasks in other threads).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

from tasks.records.names import (
    EXPERIMENT_RETENTION,
    RETENTION_CLASSES,
    TAG_PREFECT_FLOW_RUN,
    TAG_RETENTION_CLASS,
)
from tasks.records.store import configure, ensure_experiment

# MLflow refuses a tag value over MAX_TAG_VAL_LENGTH characters (a param over MAX_PARAM_VAL_LENGTH): longer reasons
# are cut, and the whole text goes into an artifact of the same run.
PARENT_TAG = "mlflow.parentRunId"


def clip_tag(value: object) -> str:
    return str(value)[:MAX_TAG_VAL_LENGTH]


def clip_param(value: object) -> str:
    return str(value)[:MAX_PARAM_VAL_LENGTH]


@dataclass
class RunRecord:
    """One MLflow run: tags, params, metrics and artifacts (text, JSON, tables, figures, local files)."""

    name: str
    experiment: str
    tags: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    dicts: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)  # file -> {column: values} or a DataFrame
    figures: dict[str, Any] = field(default_factory=dict)  # file -> matplotlib figure (closed once logged)
    files: dict[str, Path] = field(default_factory=dict)  # artifact folder -> local file
    failed: bool = False
    # seed 7.3.7: how long the run is kept (a key of policy history_retention_days); None: the class its
    # `inferops.retention_class` tag names, else its experiment's (names.EXPERIMENT_RETENTION)
    retention_class: str | None = None


class RetentionClassError(ValueError):
    """A run that would be written without a retention class the policy knows."""


def retention_class(record: RunRecord) -> str:
    """The class `record`'s run is kept as: its own, else its tag's, else its experiment's; refused if unknown."""
    tagged = record.tags.get(TAG_RETENTION_CLASS)
    if record.retention_class and tagged and tagged != record.retention_class:
        raise RetentionClassError(
            f"run record {record.name!r}: retention_class {record.retention_class!r} disagrees with its "
            f"{TAG_RETENTION_CLASS} tag {tagged!r}; set one of them"
        )
    chosen = record.retention_class or tagged or EXPERIMENT_RETENTION.get(record.experiment)
    if chosen is None:
        raise RetentionClassError(
            f"run record {record.name!r} of experiment {record.experiment!r} has no retention class: give it "
            f"retention_class= one of {', '.join(RETENTION_CLASSES)} (the keys of policy history_retention_days), "
            "or map the experiment in tasks/records/names.py EXPERIMENT_RETENTION"
        )
    if chosen not in RETENTION_CLASSES:
        raise RetentionClassError(
            f"run record {record.name!r} of experiment {record.experiment!r}: retention class {chosen!r} is not "
            f"one of {', '.join(RETENTION_CLASSES)} (the keys of policy history_retention_days); use one of them "
            "(a new class needs a key in policy.yaml history_retention_days and in names.RETENTION_CLASSES)"
        )
    return str(chosen)


def _client() -> MlflowClient:
    return MlflowClient(configure())


def finite_metrics(metrics: Mapping[str, float | None]) -> dict[str, float]:
    """The metrics MLflow can store: those that are set and finite."""
    out = {}
    for key, value in metrics.items():
        if value is None:
            continue
        number = float(value)
        if math.isfinite(number):
            out[key] = number
    return out


def write(run_id: str, record: RunRecord) -> None:
    """Add everything in `record` except its name and experiment to an existing run."""
    client = _client()
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in finite_metrics(record.metrics).items()],
        params=[Param(k, clip_param(v)) for k, v in record.params.items() if v is not None],
        tags=[RunTag(k, clip_tag(v)) for k, v in record.tags.items() if v is not None],
    )
    for file, text in record.texts.items():
        client.log_text(run_id, text, file)
    for file, payload in record.dicts.items():
        client.log_dict(run_id, payload, file)
    for file, table in record.tables.items():
        client.log_table(run_id, table, file)
    if record.figures:
        import matplotlib.pyplot as plt

        for file, figure in record.figures.items():
            client.log_figure(run_id, figure, file)
            plt.close(figure)
    for folder, path in record.files.items():
        client.log_artifact(run_id, str(path), artifact_path=folder or None)


def flow_run_tags() -> dict[str, str]:
    """The Prefect flow run writing this run, when there is one (`inferops status` links the two)."""
    from prefect.runtime import flow_run

    return {TAG_PREFECT_FLOW_RUN: str(flow_run.id)} if flow_run.id else {}


def log_run(record: RunRecord, *, parent_run_id: str | None = None, finish: bool = True) -> str:
    """Create the run (nested under `parent_run_id` when given) tagged with its retention class, write the record,
    and end it; returns its id."""
    kept_as = retention_class(record)  # refused before anything is written
    client = _client()
    experiment_id = ensure_experiment(record.experiment)
    tags = {TAG_RETENTION_CLASS: kept_as}
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id
    tags |= flow_run_tags()
    run = client.create_run(experiment_id, run_name=record.name, tags=tags)
    run_id = str(run.info.run_id)
    try:
        write(run_id, record)
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    if finish:
        client.set_terminated(run_id, "FAILED" if record.failed else "FINISHED")
    return run_id


def finish_run(run_id: str, failed: bool = False) -> None:
    _client().set_terminated(run_id, "FAILED" if failed else "FINISHED")


def end_open_runs(flow_run_id: str, status: str = "KILLED") -> list[str]:
    """End, as `status`, every run the Prefect flow run `flow_run_id` left RUNNING (a cancelled or crashed run
    never reaches the code that finishes them); returns their ids. Finished runs are left as they are."""
    client = _client()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    left = client.search_runs(
        experiments,
        filter_string=f"tags.`{TAG_PREFECT_FLOW_RUN}` = '{flow_run_id}' and attributes.status = 'RUNNING'",
    )
    for run in left:
        client.set_terminated(run.info.run_id, status)
    return [str(run.info.run_id) for run in left]
