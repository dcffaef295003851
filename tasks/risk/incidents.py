"""Incident records (seed 7.6.5, SPEC §6): detect → assess → set level → notify → respond → locate → mitigate →
resolve → recover → post-mortem, each step timestamped and stored in a SQL database (SQLite in the data dir by
default, any SQLAlchemy URL such as a team's Postgres through INFEROPS_INCIDENTS_DB), and the figures the seed
targets computed from those records: MTTR, MTTA, availability and the share mitigated by an automatic action.

A step is taken only from the step before it (the allowed next step is named when one is refused), in one
transaction with the incident's state: a refused or failed step changes nothing stored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from serving.settings import get_settings
from tasks.policy import Risk

# The seed's flow, in order; `open` takes the first four at once (an alert is detected, assessed, levelled and its
# channels notified by the same hand), the others are one command each.
STEPS = (
    "detected",
    "assessed",
    "leveled",
    "notified",
    "responding",
    "located",
    "mitigated",
    "resolved",
    "recovered",
    "postmortem",
)
OPENING = STEPS[:4]
LEVELS = ("L1", "L2", "L3", "L4")
OUTAGE_LEVELS = ("L3", "L4")  # SPEC §6: service outage, system down — the time the service was not available
AUTOMATIC = "inferops"  # who a step was taken by when no person took it (the remediation flow)

_meta = sa.MetaData()
INCIDENTS = sa.Table(
    "inferops_incidents",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("level", sa.String(4), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("model", sa.String(200)),
    sa.Column("source", sa.String(300)),  # what detected it: an alert firing's key, a risk assessment's run
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column(
        "category", sa.String(100)
    ),  # seed 7.6.1's risk class (tasks/policy.py RISK_CATEGORIES), if known
    sa.UniqueConstraint("source", name="uq_incident_source"),  # one incident per alert firing
)
# Columns added after the table's first release: added to an older database when a store opens it.
_ADDED_COLUMNS = {"category": "VARCHAR(100)"}
ESCALATIONS = sa.Table(
    "inferops_incident_escalations",
    _meta,
    sa.Column("incident_id", sa.Integer, sa.ForeignKey("inferops_incidents.id"), primary_key=True),
    sa.Column("at", sa.Float, primary_key=True),
    sa.Column("from_level", sa.String(4), nullable=False),
    sa.Column("to_level", sa.String(4), nullable=False),
    sa.Column("by", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)
TRANSITIONS = sa.Table(
    "inferops_incident_steps",
    _meta,
    sa.Column("incident_id", sa.Integer, sa.ForeignKey("inferops_incidents.id"), primary_key=True),
    sa.Column("step", sa.String(20), primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("by", sa.String(200), nullable=False),
    sa.Column("note", sa.Text, nullable=False, default=""),
)


class IncidentError(ValueError):
    """A step refused or an incident not found: the message names the incident, the field and the allowed steps."""


@dataclass(frozen=True)
class Step:
    step: str
    at: float
    by: str
    note: str


@dataclass(frozen=True)
class Incident:
    id: int
    title: str
    level: str
    state: str
    model: str | None
    source: str | None
    opened_at: float
    steps: tuple[Step, ...] = field(default=())
    category: str | None = None
    escalations: tuple[tuple[float, str, str, str], ...] = ()  # (at, from level, to level, reason)

    def at(self, step: str) -> float | None:
        return next((s.at for s in self.steps if s.step == step), None)

    def by(self, step: str) -> str | None:
        return next((s.by for s in self.steps if s.step == step), None)

    def next_step(self) -> str | None:
        index = STEPS.index(self.state)
        return STEPS[index + 1] if index + 1 < len(STEPS) else None

    def row(self) -> dict[str, Any]:
        def minutes(a: str, b: str) -> float | None:
            start, end = self.at(a), self.at(b)
            return None if start is None or end is None else round((end - start) / 60, 2)

        return {
            "id": self.id,
            "level": self.level,
            "state": self.state,
            "title": self.title,
            "model": self.model or "",
            "category": self.category or "",
            "opened": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.opened_at)),
            "ack min": minutes("detected", "responding"),
            "repair min": minutes("detected", "resolved"),
            "mitigated by": self.by("mitigated") or "",
        }


def database_url() -> str:
    """INFEROPS_INCIDENTS_DB, else a SQLite file in the data dir."""
    given = os.environ.get("INFEROPS_INCIDENTS_DB", "").strip()
    if given:
        return given
    folder = get_settings().data_dir
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'incidents.db').resolve()}"


class IncidentStore:
    """The incident records in one SQL database (tables created on first use)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or database_url()
        self.engine = sa.create_engine(self.url)
        _meta.create_all(self.engine)
        have = {c["name"] for c in sa.inspect(self.engine).get_columns(INCIDENTS.name)}
        with self._tx() as conn:
            for name, kind in _ADDED_COLUMNS.items():
                if name not in have:
                    conn.execute(sa.text(f"ALTER TABLE {INCIDENTS.name} ADD COLUMN {name} {kind}"))

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn

    def open(
        self,
        title: str,
        level: str,
        *,
        model: str | None = None,
        source: str | None = None,
        category: str | None = None,
        detected_at: float | None = None,
        by: str = AUTOMATIC,
        note: str = "",
        at: float | None = None,
    ) -> Incident:
        """Record a new incident through its first four steps (detected at `detected_at`, the rest now); an
        incident already open for the same `source` (one alert firing) is returned instead of a second one."""
        if level not in LEVELS:
            raise IncidentError(
                f"level {level!r} is not one of {', '.join(LEVELS)} (SPEC §6 response levels)"
            )
        if not title or not title.strip():
            raise IncidentError("title is empty: say what happened, e.g. 'served P99 off its baseline'")
        now = time.time() if at is None else float(at)
        detected = now if detected_at is None else float(detected_at)
        if detected > max(now, time.time()) + 60 or detected > now:
            raise IncidentError(
                f"detected_at {detected} is after the incident was opened ({now}) or in the future: pass when the "
                "problem was detected"
            )
        if source:
            found = self.find_source(source)
            if found is not None:
                return found
        try:
            new_id = self._insert(title, level, model, source, category, detected, now, by, note)
        except sa.exc.IntegrityError:
            found = self.find_source(source) if source else None  # another receiver opened it a moment ago
            if found is None:
                raise
            return found
        return self.get(int(new_id))

    def _insert(
        self,
        title: str,
        level: str,
        model: str | None,
        source: str | None,
        category: str | None,
        detected: float,
        now: float,
        by: str,
        note: str,
    ) -> Any:
        with self._tx() as conn:
            inserted = conn.execute(
                INCIDENTS.insert().values(
                    title=title.strip(),
                    level=level,
                    state=OPENING[-1],
                    model=model,
                    source=source,
                    category=category,
                    opened_at=detected,
                )
            )
            assert inserted.inserted_primary_key is not None
            new_id = inserted.inserted_primary_key[0]
            for step in OPENING:
                conn.execute(
                    TRANSITIONS.insert().values(
                        incident_id=new_id,
                        step=step,
                        at=detected if step == "detected" else now,
                        by=by,
                        note=note if step == "detected" else "",
                    )
                )
        return new_id

    def advance(
        self, incident_id: int, step: str, *, by: str, note: str = "", at: float | None = None
    ) -> Incident:
        """Take `step` on an incident: only the step after its current one; refused steps change nothing."""
        if step not in STEPS:
            raise IncidentError(f"step {step!r} is not one of {', '.join(STEPS)}")
        if not by or not by.strip():
            raise IncidentError(
                "by is empty: name who takes the step (a person, or 'inferops' for the software)"
            )
        with self._tx() as conn:
            row = conn.execute(sa.select(INCIDENTS).where(INCIDENTS.c.id == incident_id)).mappings().first()
            if row is None:
                raise IncidentError(
                    f"incident {incident_id} does not exist: `inferops incident list` shows them"
                )
            current = row["state"]
            index = STEPS.index(current)
            allowed = STEPS[index + 1] if index + 1 < len(STEPS) else None
            if step != allowed:
                raise IncidentError(
                    f"incident {incident_id} is {current}: it cannot go to {step!r}; the next step is "
                    f"{allowed!r}"
                    if allowed
                    else f"incident {incident_id} is closed (post-mortem written)"
                )
            when = time.time() if at is None else float(at)
            last = conn.execute(
                sa.select(sa.func.max(TRANSITIONS.c.at)).where(TRANSITIONS.c.incident_id == incident_id)
            ).scalar_one()
            if last is not None and when < last:
                raise IncidentError(
                    f"incident {incident_id}: {step} at {when} is before its previous step ({last}): steps are in order"
                )
            conn.execute(
                TRANSITIONS.insert().values(
                    incident_id=incident_id, step=step, at=when, by=by.strip(), note=note
                )
            )
            conn.execute(INCIDENTS.update().where(INCIDENTS.c.id == incident_id).values(state=step))
        incident = self.get(incident_id)
        if step == "resolved":
            announce_resolved(incident)
        return incident

    def advance_to(
        self, incident_id: int, step: str, *, by: str, note: str = "", at: float | None = None
    ) -> Incident:
        """Take every step up to `step` (an automatic action responds, locates and mitigates at once)."""
        incident = self.get(incident_id)
        if STEPS.index(step) <= STEPS.index(incident.state):
            raise IncidentError(f"incident {incident_id} is {incident.state}, already at or past {step!r}")
        while incident.state != step:
            nxt = incident.next_step()
            assert nxt is not None
            incident = self.advance(incident_id, nxt, by=by, note=note if nxt == step else "", at=at)
        return incident

    def get(self, incident_id: int) -> Incident:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(INCIDENTS).where(INCIDENTS.c.id == incident_id)).mappings().first()
            if row is None:
                raise IncidentError(
                    f"incident {incident_id} does not exist: `inferops incident list` shows them"
                )
            steps = conn.execute(
                sa.select(TRANSITIONS)
                .where(TRANSITIONS.c.incident_id == incident_id)
                .order_by(TRANSITIONS.c.at)
            ).mappings()
            ordered = sorted(steps, key=lambda s: STEPS.index(s["step"]))
            raised = conn.execute(
                sa.select(ESCALATIONS)
                .where(ESCALATIONS.c.incident_id == incident_id)
                .order_by(ESCALATIONS.c.at)
            ).mappings()
            return Incident(
                row["id"],
                row["title"],
                row["level"],
                row["state"],
                row["model"],
                row["source"],
                row["opened_at"],
                tuple(Step(s["step"], s["at"], s["by"], s["note"]) for s in ordered),
                row["category"],
                tuple((e["at"], e["from_level"], e["to_level"], e["reason"]) for e in raised),
            )

    def escalate(
        self, incident_id: int, level: str, *, by: str, reason: str, at: float | None = None
    ) -> Incident:
        """Raise an open incident's level (SPEC §6 escalation), recorded with when, by whom and why; a level that
        is not higher, or an incident already resolved, is refused and nothing changes."""
        if level not in LEVELS:
            raise IncidentError(
                f"level {level!r} is not one of {', '.join(LEVELS)} (SPEC §6 response levels)"
            )
        if not reason.strip():
            raise IncidentError(
                "reason is empty: say why the incident escalates, e.g. 'unmitigated after 60 min'"
            )
        incident = self.get(incident_id)
        if STEPS.index(incident.state) >= STEPS.index("resolved"):
            raise IncidentError(
                f"incident {incident_id} is {incident.state}: a resolved incident does not escalate"
            )
        if LEVELS.index(level) <= LEVELS.index(incident.level):
            raise IncidentError(
                f"incident {incident_id} is at {incident.level}: escalating means a higher level than that, not {level}"
            )
        when = time.time() if at is None else float(at)
        with self._tx() as conn:
            conn.execute(
                ESCALATIONS.insert().values(
                    incident_id=incident_id,
                    at=when,
                    from_level=incident.level,
                    to_level=level,
                    by=by.strip() or AUTOMATIC,
                    reason=reason.strip(),
                )
            )
            conn.execute(INCIDENTS.update().where(INCIDENTS.c.id == incident_id).values(level=level))
        return self.get(incident_id)

    def open_incidents(self, source_prefix: str | None = None) -> list[Incident]:
        """Incidents not yet resolved, oldest first; only those whose source starts with `source_prefix` if given."""
        query = (
            sa.select(INCIDENTS.c.id)
            .where(INCIDENTS.c.state.in_(STEPS[: STEPS.index("resolved")]))
            .order_by(INCIDENTS.c.opened_at)
        )
        if source_prefix:
            query = query.where(INCIDENTS.c.source.startswith(source_prefix, autoescape=True))
        with self.engine.connect() as conn:
            ids = [int(i) for i in conn.execute(query).scalars()]
        return [self.get(i) for i in ids]

    def find_source(self, source: str) -> Incident | None:
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(INCIDENTS.c.id).where(INCIDENTS.c.source == source)).scalar()
        return None if found is None else self.get(int(found))

    def list(self, since: float | None = None) -> list[Incident]:
        query = sa.select(INCIDENTS.c.id).order_by(INCIDENTS.c.opened_at)
        if since is not None:
            query = query.where(INCIDENTS.c.opened_at >= since)
        with self.engine.connect() as conn:
            ids = [int(i) for i in conn.execute(query).scalars()]
        return [self.get(i) for i in ids]


RESOLVED_EVENT = "inferops.incident.resolved"  # prefect.yaml's risk-assessment deployment is triggered by it


def announce_resolved(incident: Incident) -> None:
    """Tell the Prefect server an incident was resolved (a Prefect event; its trigger runs the risk assessment of
    the incident's model). Only where a Prefect server is configured: the ephemeral API has no automations."""
    if not os.environ.get("PREFECT_API_URL", "").strip():
        return
    from prefect.events import emit_event

    emit_event(
        RESOLVED_EVENT,
        resource={
            "prefect.resource.id": f"inferops.incident.{incident.id}",
            "inferops.level": incident.level,
        },
        payload={"model": incident.model or "", "title": incident.title, "category": incident.category or ""},
    )


# ---- the figures ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncidentFigures:
    """MTTR, MTTA (minutes), availability and automation rate over a window, beside the seed's targets."""

    window_s: float
    incidents: int
    resolved: int
    mttr_min: float | None
    mtta_min: float | None
    availability: float
    automation_rate: float | None
    mttr_target_min: float
    availability_target: float

    def sentences(self) -> list[str]:
        out = [f"{self.incidents} incident(s) in {self.window_s / 86400:.1f} days, {self.resolved} resolved"]
        if self.mttr_min is not None:
            meets = "meets" if self.mttr_min < self.mttr_target_min else "misses"
            out.append(f"MTTR {self.mttr_min:.1f} min ({meets} the < {self.mttr_target_min:g} min target)")
        if self.mtta_min is not None:
            out.append(f"MTTA {self.mtta_min:.1f} min")
        meets = "meets" if self.availability > self.availability_target else "misses"
        out.append(
            f"availability {self.availability:.4%} ({meets} the > {self.availability_target:.2%} target)"
        )
        if self.automation_rate is not None:
            out.append(f"{self.automation_rate:.0%} mitigated by an automatic action")
        return out


def figures(
    incidents: Sequence[Incident], policy: Risk, window_s: float, now: float | None = None
) -> IncidentFigures:
    """The seed's figures from the records, over the `window_s` before `now`: MTTR = mean detected → resolved of
    the incidents opened in the window and resolved, MTTA = mean detected → responding, availability = 1 − the time
    an L3/L4 incident was open (detected → recovered, or → resolved when no recovery was recorded, or until now),
    overlapping incidents counted once and those opened before the window counted from its start, automation rate =
    share of the window's mitigated incidents mitigated by inferops."""
    if not window_s > 0:
        raise IncidentError(f"window_s must be positive, got {window_s!r}: pass the period the figures cover")
    now = time.time() if now is None else now
    start = now - window_s
    opened = [i for i in incidents if start <= i.opened_at <= now]

    def mean_minutes(a: str, b: str) -> float | None:
        spans = [
            (i.at(b) or 0) - (i.at(a) or 0) for i in opened if i.at(a) is not None and i.at(b) is not None
        ]
        return round(sum(spans) / len(spans) / 60, 2) if spans else None

    outages = sorted(
        (max(i.at("detected") or i.opened_at, start), min(i.at("recovered") or i.at("resolved") or now, now))
        for i in incidents
        if i.level in OUTAGE_LEVELS
    )
    down, reached = 0.0, start
    for began, ended in outages:  # merged: two incidents of one outage are one outage
        began = max(began, reached)
        if ended > began:
            down += ended - began
            reached = ended
    mitigated = [i for i in opened if i.at("mitigated") is not None]
    automated = [i for i in mitigated if i.by("mitigated") == AUTOMATIC]
    return IncidentFigures(
        window_s=window_s,
        incidents=len(opened),
        resolved=sum(1 for i in opened if i.at("resolved") is not None),
        mttr_min=mean_minutes("detected", "resolved"),
        mtta_min=mean_minutes("detected", "responding"),
        availability=max(0.0, 1.0 - down / window_s),
        automation_rate=round(len(automated) / len(mitigated), 4) if mitigated else None,
        mttr_target_min=policy.mttr_target_min,
        availability_target=policy.availability_target,
    )
