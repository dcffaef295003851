"""`inferops incident`: the incident records (seed 7.6.5) — open, take the next step, list, show, and the figures."""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable

import typer

app = typer.Typer(
    no_args_is_help=True, help="Incident records: detect to post-mortem, MTTR and availability."
)

BY = typer.Option(None, help="who takes the step (default: this user)")
NOTE = typer.Option("", help="what was done or found")


def _fail(exc: Exception) -> None:
    from cli.render import console

    console().print(f"[red]error:[/red] {exc}", highlight=False)
    raise typer.Exit(2) from None


def _step(incident_id: int, step: str, by: str | None, note: str) -> None:
    from cli.render import console
    from tasks.risk.incidents import IncidentError, IncidentStore

    try:
        incident = IncidentStore().advance(incident_id, step, by=by or getpass.getuser(), note=note)
    except IncidentError as exc:
        _fail(exc)
        return
    nxt = incident.next_step()
    console().print(
        f"incident {incident.id} ({incident.level}) is {incident.state}"
        + (f"; next: {nxt}" if nxt else "; closed"),
        highlight=False,
    )


@app.command("open")
def open_(
    title: str = typer.Argument(..., help="what happened"),
    level: str = typer.Option(..., help="L1 info, L2 warning, L3 severe, L4 emergency (SPEC §6)"),
    model: str | None = typer.Option(None),
    by: str | None = BY,
    note: str = NOTE,
) -> None:
    """Record an incident: detected, assessed, levelled and notified now."""
    from cli.render import console
    from tasks.policy import default_policy
    from tasks.risk.incidents import IncidentError, IncidentStore

    try:
        incident = IncidentStore().open(title, level, model=model, by=by or getpass.getuser(), note=note)
    except IncidentError as exc:
        _fail(exc)
        return
    response = default_policy().risk.response_levels.get(level)
    within = f", respond within {response.respond_within_min:g} min ({response.team})" if response else ""
    console().print(f"incident {incident.id} opened at {level}{within}; next: responding", highlight=False)


# command -> (the step it takes, its help): one command per step after the opening four
STEP_COMMANDS = {
    "ack": ("responding", "Someone responds (MTTA ends here)."),
    "locate": ("located", "The cause is found."),
    "mitigate": ("mitigated", "The impact is stopped (a rollback, a freeze, more replicas)."),
    "resolve": ("resolved", "The cause is fixed (MTTR ends here)."),
    "recover": ("recovered", "The service is back to normal."),
    "postmortem": (
        "postmortem",
        "The post-mortem is written (pass where, in --note): the incident is closed.",
    ),
}


def _step_command(step: str, doc: str) -> Callable[..., None]:
    def command(incident_id: int, by: str | None = BY, note: str = NOTE) -> None:
        _step(incident_id, step, by, note)

    command.__doc__ = doc
    return command


for _name, (_step_name, _doc) in STEP_COMMANDS.items():
    app.command(_name)(_step_command(_step_name, _doc))


@app.command("list")
def list_(days: float = typer.Option(30.0, help="incidents opened in the last this many days")) -> None:
    """The incidents as a table, then MTTR, MTTA, availability and automation rate over the same days."""
    from cli.render import console, render_table
    from tasks.policy import default_policy
    from tasks.risk.incidents import IncidentError, IncidentStore, figures

    window = days * 86400
    try:
        every = IncidentStore().list()  # an outage opened before the window still counts inside it
        summary = figures(every, default_policy().risk, window)
        found = [i for i in every if i.opened_at >= time.time() - window]
    except IncidentError as exc:
        _fail(exc)
        return
    view = console()
    if found:
        view.print(render_table(f"incidents, last {days:g} days", [i.row() for i in found]))
    for sentence in summary.sentences():
        view.print(sentence, highlight=False)


@app.command("show")
def show(incident_id: int) -> None:
    """One incident, every step with when and by whom."""
    from cli.render import console, render_table
    from tasks.risk.incidents import IncidentError, IncidentStore

    try:
        incident = IncidentStore().get(incident_id)
    except IncidentError as exc:
        _fail(exc)
        return
    rows = [
        {
            "step": s.step,
            "at (UTC)": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.at)),
            "by": s.by,
            "note": s.note,
        }
        for s in incident.steps
    ]
    nxt = incident.next_step()
    console().print(
        render_table(f"incident {incident.id} ({incident.level}): {incident.title}", rows), highlight=False
    )
    console().print(f"state: {incident.state}" + (f"; next: {nxt}" if nxt else "; closed"), highlight=False)
