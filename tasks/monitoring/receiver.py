"""The alert receiver: the webhook Alertmanager notifies (tasks/monitoring/alertmanager.py renders its URL and bearer
credential). Each firing alert whose rule names an action starts one run of the remediation deployment, once;
everything else is answered and left to a person. `inferops alerts receive` serves it (uvicorn)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tasks.monitoring.remediation import (
    AlertEvent,
    Ledger,
    NotificationRefused,
    actionable,
    authenticate,
    parse_notification,
    record_incident,
)

log = logging.getLogger(__name__)
REMEDIATION_DEPLOYMENT = "remediation/remediation-on-alert"
ALERTS_PATH = "/alerts"

Starter = Callable[[AlertEvent], Coroutine[Any, Any, str]]


def deployment_starter(deployment: str = REMEDIATION_DEPLOYMENT) -> Starter:
    """Start a run of the remediation deployment for an alert; Prefect's idempotency key (the alert firing's key)
    makes a second start of the same firing, from any receiver, return the first run instead of a new one."""

    async def start(event: AlertEvent) -> str:
        from prefect.deployments import arun_deployment

        run = await arun_deployment(
            deployment,
            parameters={"action": event.action, "model": event.model, "alert": event.as_dict()},
            timeout=0,
            as_subflow=False,
            idempotency_key=f"alert-{event.key}",
            flow_run_name=f"{event.action}-{event.model}-{event.alertname}",
            tags=["remediation", f"alert:{event.alertname}"],
        )
        return str(run.id)

    return start


def create_receiver(
    tokens: Sequence[str],
    start: Starter,
    ledger: Ledger | None = None,
    incidents: Any = None,
    alert_levels: dict[str, str] | None = None,
) -> Starlette:
    """The webhook app: POST /alerts (Alertmanager's payload, bearer-authenticated) and GET /healthz. Given an
    IncidentStore, every alert firing opens its incident (once) at the level of its severity (`alert_levels`), and
    an incident inferops mitigated is resolved when its alert resolves."""
    if not tokens:
        raise ValueError("the receiver needs a bearer token: give it the token file Alertmanager sends from")
    ledger = ledger or Ledger()

    def incident_of(event: AlertEvent) -> int | None:
        if incidents is None:
            return None
        try:  # the record must never stand between an alert and its remediation
            found = record_incident(event, incidents, alert_levels or {})
        except Exception as exc:
            log.error("incident of %s not recorded: %s", event.key, exc)
            return None
        return None if found is None else int(found.id)

    async def alerts(request: Request) -> JSONResponse:
        try:
            authenticate(request.headers.get("authorization"), tokens)
            events = parse_notification(await request.body())
        except NotificationRefused as exc:
            log.warning("notification refused (%s): %s", exc.status, exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        out: dict[str, list[dict[str, Any]]] = {"started": [], "already_handled": [], "ignored": []}
        loop = asyncio.get_running_loop()
        for event in events:
            reason = actionable(event)
            if reason is not None:
                out["ignored"].append(
                    {"alertname": event.alertname, "status": event.status, "reason": reason}
                )
                continue

            def run_sync(e: AlertEvent) -> str:
                return asyncio.run_coroutine_threadsafe(start(e), loop).result()

            try:
                # the ledger's lock is a file lock: held in a thread, while the start runs on this loop
                entry = await asyncio.to_thread(ledger.claim, event, run_sync)
            except Exception as exc:  # Alertmanager retries a delivery answered 5xx
                log.error("remediation of %s not started: %s", event.key, exc)
                return JSONResponse(
                    {**out, "error": f"remediation of {event.alertname} not started: {exc}"}, status_code=503
                )
            row = {
                "alertname": event.alertname,
                "action": event.action,
                "model": event.model,
                "key": event.key,
            }
            if entry is None:
                out["already_handled"].append(row)
            else:
                log.info(
                    "%s on %s: remediation run %s (%s)",
                    event.alertname,
                    event.model,
                    entry.flow_run,
                    event.action,
                )
                out["started"].append({**row, "flow_run": entry.flow_run})
        return JSONResponse(out)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route(ALERTS_PATH, alerts, methods=["POST"]), Route("/healthz", healthz)])
