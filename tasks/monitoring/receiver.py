"""The alert receiver: the webhook Alertmanager notifies (tasks/monitoring/alertmanager.py renders its URL and bearer
credential). Each firing alert whose rule names an action starts one run of the remediation deployment, once;
everything else is answered and left to a person. `inferops alerts receive` serves it (uvicorn)."""

from __future__ import annotations

import asyncio
import logging
import threading
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
START_TIMEOUT_S = 30.0  # a Prefect API that does not answer a run's creation in this long counts as down

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

    guard, in_flight = threading.Lock(), set()  # firings being started by this process right now

    def claim(event: AlertEvent) -> bool:
        """Whether this delivery starts the firing's run: not acted on (the ledger), not being started now."""
        with guard:
            if event.key in in_flight or ledger.seen(event):
                return False
            in_flight.add(event.key)
            return True

    async def alerts(request: Request) -> JSONResponse:
        try:
            authenticate(request.headers.get("authorization"), tokens)
            events = parse_notification(await request.body())
        except NotificationRefused as exc:
            log.warning("notification refused (%s): %s", exc.status, exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        out: dict[str, list[dict[str, Any]]] = {"started": [], "already_handled": [], "ignored": []}
        for event in events:
            incident = await asyncio.to_thread(incident_of, event)
            reason = actionable(event)
            if reason is not None:
                out["ignored"].append(
                    {
                        "alertname": event.alertname,
                        "status": event.status,
                        "reason": reason,
                        "incident": incident,
                    }
                )
                continue
            row = {
                "alertname": event.alertname,
                "action": event.action,
                "model": event.model,
                "key": event.key,
                "incident": incident,
            }
            if not await asyncio.to_thread(claim, event):
                out["already_handled"].append(row)
                continue
            # No lock is held while Prefect is asked: two receivers starting one firing get the same run back
            # (the idempotency key), and a Prefect that hangs costs this delivery START_TIMEOUT_S, not the others.
            try:
                flow_run = await asyncio.wait_for(start(event), START_TIMEOUT_S)
                await asyncio.to_thread(ledger.record, event, flow_run)
            except (
                Exception
            ) as exc:  # not recorded: Alertmanager retries a delivery answered 5xx, and that acts
                log.error("remediation of %s not started: %s: %s", event.key, type(exc).__name__, exc)
                return JSONResponse(
                    {
                        **out,
                        "error": f"remediation of {event.alertname} not started: {type(exc).__name__}: {exc}",
                    },
                    status_code=503,
                )
            finally:
                with guard:
                    in_flight.discard(event.key)
            log.info(
                "%s on %s: remediation run %s (%s)", event.alertname, event.model, flow_run, event.action
            )
            out["started"].append({**row, "flow_run": flow_run})
        return JSONResponse(out)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route(ALERTS_PATH, alerts, methods=["POST"]), Route("/healthz", healthz)])
