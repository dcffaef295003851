"""Automatic remediation (AIOps L5): one alert firing, carried out as SPEC §2 says (roll back, freeze, or recommend a
scale-out) and recorded in MLflow and as a Prefect artifact beside the alert that caused it. The alert receiver
(`inferops alerts receive`) starts a run of the `remediation-on-alert` deployment per firing; orchestration only."""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from serving.client import InferopsClient
from serving.network import required_url
from tasks.monitoring.remediation import event_from, mitigated_incident, remediation_markdown, risk_action
from tasks.policy import default_policy
from tasks.records import names, runs
from tasks.release.rollout_risk import apply_risk_action
from tasks.risk.incidents import IncidentStore


@task(name="open-record")
def open_record(alert: dict[str, Any], action: str, model: str) -> str:
    """The MLflow run of this action, opened before anything changes (a freeze names it)."""
    event = event_from(alert)
    kept_as = names.ROLLBACK_RECORDS if action == "rollback" else names.IMPLEMENTATION_LOGS
    return runs.log_run(
        runs.RunRecord(
            f"remediation-{action}-{model}",
            names.REMEDIATION_EXPERIMENT,
            tags={
                names.TAG_KIND: "remediation",
                names.TAG_MODEL: model,
                names.TAG_ALERT: event.alertname,
                names.TAG_ALERT_KEY: event.key,
                names.TAG_RISK_ACTIONS: action,
            },
            dicts={"alert.json": event.as_dict()},
            retention_class=kept_as,
        ),
        finish=False,
    )


@task(name="carry-out", task_run_name="{action} {model}")
def carry_out(
    alert: dict[str, Any], action: str, model: str, url: str, api_key: str | None, run_id: str
) -> dict[str, Any]:
    """The action on the live endpoint and the registry (tasks/release/rollout_risk.py, as the release's own)."""
    event = event_from(alert)
    if event.action != action or event.model != model:
        raise ValueError(
            f"action {action!r} / model {model!r} are not the alert's ({event.action!r} / {event.model!r}): the "
            "receiver passes the alert's own labels"
        )
    policy = default_policy()
    with InferopsClient(url, api_key) as client:
        return apply_risk_action(
            risk_action(event),
            model=model,
            client=client,
            run_id=run_id,
            target_utilisation=policy.capacity.target_utilisation,
            default_knobs=policy.serving.default_knobs(),
        )


@task(name="record-incident")
def mitigate_incident(alert: dict[str, Any], done: dict[str, Any]) -> int | None:
    """The alert's incident, mitigated by inferops (opened first if the receiver had not): MTTR and the
    automation rate come from these records."""
    if not done.get("done"):
        return None
    try:  # the action is done whatever happens to its record: a record that fails is said, not a failed run
        incident = mitigated_incident(
            event_from(alert),
            IncidentStore(),
            default_policy().risk.alert_levels,
            f"{done['action']}: {done['reason']}",
        )
    except Exception as exc:
        get_run_logger().warning("incident not recorded: %s: %s", type(exc).__name__, exc)
        return None
    return int(incident.id)


@task(name="close-record")
def close_record(run_id: str, alert: dict[str, Any], done: dict[str, Any]) -> None:
    event = event_from(alert)
    runs.write(
        run_id,
        runs.RunRecord(
            "",
            "",
            tags={names.TAG_VERDICT: "done" if done.get("done") else "not done"},
            dicts={"remediation.json": done},
        ),
    )
    runs.finish_run(run_id, failed=not done.get("done"))
    create_markdown_artifact(
        key=names.artifact_key("remediation", event.model),
        markdown=remediation_markdown(event, done),
        description=f"{done.get('action')} on {event.model} for {event.alertname}",
    )


@flow(name="remediation", log_prints=True)
def remediation(
    action: str, model: str, alert: dict[str, Any], url: str | None = None, api_key: str | None = None
) -> dict[str, Any]:
    """Carry out what one alert firing asks (`alert`: as the receiver passes it) on the endpoint at `url`."""
    url = required_url(url or "", "url")
    run_id = open_record(alert, action, model)
    done: dict[str, Any] = {"action": action, "done": False, "reason": "not carried out"}
    incident = None
    try:
        done = carry_out(alert, action, model, url, api_key, run_id)
        incident = mitigate_incident(alert, done)
    except Exception as exc:  # the MLflow run says so, and is closed as failed, whatever stopped the action
        done = {**done, "done": False, "detail": f"{type(exc).__name__}: {exc}"}
        raise
    finally:
        close_record(run_id, alert, {**done, "incident": incident})
    say = get_run_logger().info
    say(f"{action} on {model}: {'done' if done.get('done') else 'NOT done'} ({done.get('reason')})")
    if not done.get("done"):
        raise RuntimeError(f"{action} on {model} was not carried out: {json.dumps(done, default=str)[:800]}")
    return {**done, "mlflow_run": run_id, "incident": incident}
