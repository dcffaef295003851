"""Where things stand, read back from the records: per model what the registry calls champion and how it serves,
what an endpoint actually serves, and the latest cycle, gate and capacity plan with their verdicts and links."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run

from serving.client import InferopsClient
from tasks.records import names, registry
from tasks.records.store import configure

# Where a person browses the records by default: `mlflow ui` and `prefect server start` on their default ports.
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
DEFAULT_PREFECT_UI = "http://127.0.0.1:4200"


@dataclass
class LatestRun:
    """The newest run of one kind for a model: its verdict in a sentence and where to look."""

    kind: str
    name: str
    verdict: str
    started: str
    mlflow_url: str
    prefect_url: str | None


@dataclass
class ModelStatus:
    model: str
    champion: dict[str, Any] | None
    previous: dict[str, Any] | None
    challenger: dict[str, Any] | None
    knobs: dict[str, int]
    endpoint: dict[str, Any] | None = None
    latest: list[LatestRun] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ui_urls(tracking_uri: str) -> tuple[str, str]:
    """The MLflow and Prefect UIs to link to: a tracking server's own address, else the local defaults."""
    mlflow_ui = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else DEFAULT_MLFLOW_UI
    prefect_ui = os.environ.get("PREFECT_UI_URL", DEFAULT_PREFECT_UI).rstrip("/")
    return mlflow_ui, prefect_ui


def registered_models() -> list[str]:
    return sorted(m.name for m in MlflowClient(configure()).search_registered_models())


# Experiment, the verdict tag a run of that kind carries, and how to say it.
KINDS = {
    "optimization cycle": (names.OPTIMIZATION_EXPERIMENT, names.TAG_CYCLE_CHAMPION, "ended serving {}"),
    "phase gate": (names.GATE_EXPERIMENT, names.TAG_GATE_VERDICT, "{}"),
    "capacity plan": (names.CAPACITY_EXPERIMENT, names.TAG_RECOMMENDATION, "recommends {}"),
    "stress knee": (names.BENCH_EXPERIMENT, names.TAG_SUITE, "{}"),
}


def latest_run(client: MlflowClient, experiment: str, model: str, extra_filter: str = "") -> Run | None:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    query = f"tags.`{names.TAG_MODEL}` = '{model}' AND attributes.status = 'FINISHED'" + extra_filter
    runs = client.search_runs(
        [found.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0] if runs else None


def _latest(client: MlflowClient, model: str, mlflow_ui: str, prefect_ui: str) -> list[LatestRun]:
    out = []
    for kind, (experiment, tag, say) in KINDS.items():
        extra = (
            f" AND tags.`{names.TAG_SUITE}` = 'stress'"
            if kind == "stress knee"
            else f" AND tags.`{tag}` != ''"
        )
        run = latest_run(client, experiment, model, extra)
        if run is None:
            continue
        verdict = say.format(run.data.tags.get(tag, "?"))
        if kind == "stress knee":
            verdict = f"{run.data.metrics.get('knee_rps', 0.0):.1f} req/s at P99 <= {run.data.params.get('sla_p99_ms', '?')} ms"
        elif kind == "phase gate":
            verdict = f"{verdict.upper()}: {run.data.tags.get(names.TAG_GATE_REASON, '')}"
        flow_run = run.data.tags.get(names.TAG_PREFECT_FLOW_RUN)
        out.append(
            LatestRun(
                kind,
                run.info.run_name or run.info.run_id,
                verdict,
                datetime.fromtimestamp(run.info.start_time / 1000).isoformat(sep=" ", timespec="seconds"),
                f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?{names.ML_VIEW}",
                f"{prefect_ui}/runs/flow-run/{flow_run}" if flow_run else None,
            )
        )
    return out


def endpoint_view(
    url: str, api_key: str | None, model: str, champion: registry.VersionRef | None
) -> dict[str, Any]:
    """What the endpoint serves for `model`, and whether that is the registry's champion."""
    with InferopsClient(url, api_key) as client:
        try:
            meta = client.metadata(model)
        except Exception as exc:  # noqa: BLE001 - status reports an unreachable endpoint, it does not fail on it
            return {"url": url, "health": f"unreachable or refused: {type(exc).__name__}: {exc}"}
        ready = client.live()
    matches = champion is not None and meta.get("sha256") == champion.sha256
    return {
        "url": url,
        "health": "live" if ready else "not live",
        "variant": meta.get("variant"),
        "sha256": str(meta.get("sha256", ""))[:12],
        "serves the champion": "yes" if matches else "NO",
        "replica": meta.get("replica"),
    }


def model_status(
    model: str, defaults: dict[str, int], url: str | None = None, api_key: str | None = None
) -> ModelStatus:
    """One model: the registry's aliases, the champion's knobs, the endpoint's view, the latest runs."""
    client = MlflowClient(configure())
    champion = registry.alias_version(model, registry.CHAMPION)
    status = ModelStatus(
        model,
        asdict(champion) if champion else None,
        _as_dict(registry.alias_version(model, registry.PREVIOUS)),
        _as_dict(registry.alias_version(model, registry.CHALLENGER)),
        registry.version_knobs(model, champion.version if champion else None, defaults),
    )
    if url:
        status.endpoint = endpoint_view(url, api_key, model, champion)
    mlflow_ui, prefect_ui = ui_urls(configure())
    status.latest = _latest(client, model, mlflow_ui, prefect_ui)
    return status


def _as_dict(ref: registry.VersionRef | None) -> dict[str, Any] | None:
    return asdict(ref) if ref else None
