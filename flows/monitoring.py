"""Watching production (seed 7.4) as one flow: read the four monitoring layers of a deployment from Prometheus,
publish them with their coverage, and (in watch mode) keep doing so every interval until the watch ends."""

from __future__ import annotations

import json
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from serving.network import required_url
from tasks.monitoring.collect import LayerReport, collect, render_markdown
from tasks.policy import default_policy
from tasks.records.names import artifact_key
from tasks.risk.incidents import IncidentStore
from tasks.risk.response import escalate_due


@task(name="collect-layers", retries=2, retry_delay_seconds=5)
def collect_layers(prometheus: str, app: str, model: str, gpu: bool) -> LayerReport:
    """Every metric the policy requires per layer, read from Prometheus, with whether its series exists."""
    return collect(prometheus, app, model, default_policy().monitoring, gpu=gpu)


@task(name="publish-layers")
def publish(report: LayerReport) -> dict[str, Any]:
    minimum = default_policy().rollout_gate.completion.monitoring_coverage_min
    create_markdown_artifact(
        key=artifact_key("monitoring", report.model),
        markdown=render_markdown(report, minimum),
        description=report.sentence(minimum),
    )
    return {
        "app": report.app,
        "model": report.model,
        "coverage": report.coverage(),
        "meets_minimum": report.meets(minimum),
        "by_layer": {layer: report.coverage(layer) for layer in report.layers()},
        "missing": [f"{r.layer}/{r.metric}" for r in report.missing],
        "readings": [r.row() for r in report.readings],
    }


@task(name="escalate-incidents")
def escalate_incidents() -> list[dict[str, Any]]:
    """Open incidents unmitigated past their level's escalation time move up a level (SPEC §6: L2 after 1 h),
    checked at every collection so an escalation is at most one interval late."""
    raised = escalate_due(IncidentStore(), default_policy().risk)
    for incident in raised:
        get_run_logger().warning(
            "incident %s escalated to %s: %s", incident.id, incident.level, incident.escalations[-1][3]
        )
    return [incident.row() for incident in raised]


@flow(name="monitoring", log_prints=True)
def monitoring(
    prometheus: str | None = None,
    app: str = "inferops",
    model: str = "minilm",
    gpu: bool = False,
    watch_s: float = 0.0,
    interval_s: float = 60.0,
) -> dict[str, Any]:
    """Collect the four layers of `app` once (`watch_s` 0), or every `interval_s` for `watch_s` seconds; returns the
    last collection. `gpu`: the replicas run on GPUs, so their GPU series are required too."""
    prometheus = required_url(prometheus or "", "prometheus")
    say = get_run_logger().info
    deadline = time.monotonic() + max(0.0, watch_s)
    while True:
        out = publish(collect_layers(prometheus, app, model, gpu))
        out["escalated"] = escalate_incidents()
        say(
            f"{app}: monitoring coverage {out['coverage']:.0%}"
            if out["coverage"] is not None
            else f"{app}: no required series applicable"
        )
        if time.monotonic() + interval_s > deadline:
            return out
        time.sleep(interval_s)


if __name__ == "__main__":
    print(json.dumps(monitoring(prometheus="http://127.0.0.1:9090"), indent=2, default=str))
