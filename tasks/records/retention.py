"""History retention (seed 7.3.7): which MLflow runs have outlived their class's retention, and their purge.

A plan is read from the store (every run of every experiment, nested runs included) against policy
`history_retention_days`; the purge deletes what the plan lists, each run's artifacts first and then the run itself,
for good. What is never deleted, and is listed as kept with the reason: a run that backs a registered model version
that still exists (the `champion`, `previous-champion` and `challenger` aliases point at such versions), a run still
running, and a run with no (or an unknown) retention class, so nothing is lost silently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

from tasks.decision import markdown_table
from tasks.records import names
from tasks.records.runs import RunRecord
from tasks.records.store import configure

T = TypeVar("T")
STILL_RUNNING = ("RUNNING", "SCHEDULED")  # MLflow run statuses of a run that may still be written to
DAY_S = 86_400


@dataclass(frozen=True)
class RunEntry:
    """One run as the plan sees it, and why it is deleted or kept."""

    run_id: str
    name: str
    experiment: str
    retention_class: str | None  # the run's `inferops.retention_class` tag (None: it has none)
    started: datetime | None
    age_days: float | None
    status: str
    reason: str

    def row(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "name": self.name,
            "experiment": self.experiment,
            "class": self.retention_class or "-",
            "started": self.started.strftime("%Y-%m-%d %H:%M UTC") if self.started else "-",
            "age (days)": f"{self.age_days:.0f}" if self.age_days is not None else "-",
            "reason": self.reason,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "name": self.name,
            "experiment": self.experiment,
            "retention_class": self.retention_class,
            "started": self.started.isoformat() if self.started else None,
            "age_days": None if self.age_days is None else round(self.age_days, 2),
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ClassPlan:
    """One retention class: its days, the cut-off, what expired and is deleted or kept, and how many are within."""

    retention_class: str
    days: int | None  # None: permanent
    cutoff: datetime | None  # runs started before it have expired
    delete: tuple[RunEntry, ...] = ()
    kept: tuple[RunEntry, ...] = ()  # expired, but kept for the reason each gives
    within: int = 0  # runs still inside their retention (every run of a permanent class)

    @property
    def retention(self) -> str:
        return "permanent" if self.days is None else f"{self.days} days"


@dataclass(frozen=True)
class RetentionPlan:
    now: datetime
    tracking_uri: str
    classes: tuple[ClassPlan, ...]
    unclassified: tuple[RunEntry, ...]  # no class tag, or one the policy does not know: never deleted

    @property
    def delete(self) -> tuple[RunEntry, ...]:
        return tuple(e for c in self.classes for e in c.delete)

    @property
    def kept(self) -> tuple[RunEntry, ...]:
        return tuple(e for c in self.classes for e in c.kept) + self.unclassified

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "tracking_uri": self.tracking_uri,
            "classes": [
                {
                    "retention_class": c.retention_class,
                    "days": c.days,
                    "cutoff": c.cutoff.isoformat() if c.cutoff else None,
                    "delete": [e.as_dict() for e in c.delete],
                    "kept": [e.as_dict() for e in c.kept],
                    "within": c.within,
                }
                for c in self.classes
            ],
            "unclassified": [e.as_dict() for e in self.unclassified],
        }


@dataclass(frozen=True)
class PurgeFailure:
    entry: RunEntry
    step: str  # "artifacts": nothing of the run was deleted; "run": its artifacts are gone, its record is not
    error: str


@dataclass(frozen=True)
class PurgeResult:
    plan: RetentionPlan
    deleted: tuple[RunEntry, ...] = ()  # artifacts and run gone for good
    soft_deleted: tuple[
        RunEntry, ...
    ] = ()  # artifacts gone, run marked deleted (the store cannot hard-delete)
    skipped: tuple[RunEntry, ...] = ()  # a model version was registered on the run after the plan was made
    failed: tuple[PurgeFailure, ...] = ()
    store_note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "deleted": [e.as_dict() for e in self.deleted],
            "soft_deleted": [e.as_dict() for e in self.soft_deleted],
            "skipped": [e.as_dict() for e in self.skipped],
            "failed": [{**f.entry.as_dict(), "step": f.step, "error": f.error} for f in self.failed],
            "store_note": self.store_note,
        }


class PurgeError(RuntimeError):
    """Some runs of a purge could not be deleted; the others were. Carries the whole result."""

    def __init__(self, result: PurgeResult) -> None:
        self.result = result
        runs = "; ".join(
            f"{f.entry.run_id} ({f.entry.name}, {f.entry.experiment}) at the {f.step} step: {f.error}"
            for f in result.failed
        )
        super().__init__(
            f"{len(result.failed)} of {len(result.plan.delete)} expired runs could not be deleted: {runs}. "
            "Each is intact apart from what its step says; fix the cause and run the purge again (it retries them)"
        )


# ---- reading the store -----------------------------------------------------------------------------------------


def _paged(fetch: Callable[[str | None], Any]) -> list[Any]:
    """Every item of an MLflow search, page after page."""
    items: list[Any] = []
    token: str | None = None
    while True:
        page = fetch(token)
        items.extend(page)
        token = page.token
        if not token:
            return items


def find_runs(client: MlflowClient) -> list[tuple[Run, str]]:
    """Every active run of every active experiment (nested runs are runs like any other), with its experiment."""
    experiments = {
        e.experiment_id: e.name
        for e in _paged(lambda t: client.search_experiments(view_type=ViewType.ACTIVE_ONLY, page_token=t))
    }
    if not experiments:
        return []
    runs = _paged(
        lambda t: client.search_runs(
            list(experiments), run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=t
        )
    )
    return [(run, experiments.get(run.info.experiment_id, run.info.experiment_id)) for run in runs]


@dataclass(frozen=True)
class Protection:
    """The model versions that still exist: by the run they were created from, and by their artifact source."""

    by_run: dict[str, str] = field(default_factory=dict)
    by_source: tuple[tuple[str, str], ...] = ()

    def reason(self, run: Run) -> str | None:
        if run.info.run_id in self.by_run:
            return self.by_run[run.info.run_id]
        root = str(run.info.artifact_uri or "").rstrip("/")
        for source, why in self.by_source:
            if root and (source == root or source.startswith(root + "/")):
                return why
        return None


def model_versions(client: MlflowClient) -> Protection:
    """What every existing model version rests on; its aliases (champion, previous-champion, challenger) named."""
    aliases: dict[tuple[str, str], list[str]] = {}
    for model in _paged(lambda t: client.search_registered_models(page_token=t)):
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault((model.name, str(version)), []).append(alias)
    by_run: dict[str, list[str]] = {}
    by_source = []
    for mv in _paged(lambda t: client.search_model_versions(page_token=t)):
        held = sorted(aliases.get((mv.name, str(mv.version)), []))
        why = f"backs model version {mv.name} v{mv.version}" + (f" ({', '.join(held)})" if held else "")
        source = str(mv.source or "")
        runs = {mv.run_id} if mv.run_id else set()
        if source.startswith("runs:/"):
            runs.add(source.removeprefix("runs:/").split("/")[0])
        elif source:
            by_source.append((source.rstrip("/"), why))
        for run_id in runs:
            by_run.setdefault(run_id, []).append(why)
    return Protection({r: "; ".join(whys) for r, whys in by_run.items()}, tuple(by_source))


# ---- the plan --------------------------------------------------------------------------------------------------


def _entry(run: Run, experiment: str, now: datetime, reason: str) -> RunEntry:
    started = None
    age = None
    if run.info.start_time:
        started = datetime.fromtimestamp(run.info.start_time / 1000, tz=UTC)
        age = (now - started).total_seconds() / DAY_S
    return RunEntry(
        run.info.run_id,
        run.info.run_name or "",
        experiment,
        run.data.tags.get(names.TAG_RETENTION_CLASS),
        started,
        age,
        str(run.info.status),
        reason,
    )


def _checked_now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError(
            f"now={now.isoformat()} has no time zone: pass an aware datetime, e.g. with tzinfo=UTC"
        )
    return now


def plan_for(
    runs: Iterable[tuple[Run, str]],
    days: Mapping[str, int | None],
    protection: Protection,
    now: datetime,
    tracking_uri: str,
) -> RetentionPlan:
    """Sort runs into expired-and-deleted, expired-but-kept, within retention and unclassified (pure)."""
    for name, value in days.items():
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ValueError(
                f"history_retention_days.{name} = {value!r}: give a whole number of days >= 1, or null (permanent)"
            )
    cutoffs = {c: None if d is None else now - timedelta(days=d) for c, d in days.items()}
    delete: dict[str, list[RunEntry]] = {c: [] for c in days}
    kept: dict[str, list[RunEntry]] = {c: [] for c in days}
    within = dict.fromkeys(days, 0)
    unclassified = []
    for run, experiment in runs:
        cls = run.data.tags.get(names.TAG_RETENTION_CLASS)
        if cls is None:
            unclassified.append(_entry(run, experiment, now, "no retention class tag: never deleted"))
            continue
        if cls not in days:
            unclassified.append(
                _entry(
                    run,
                    experiment,
                    now,
                    f"class {cls!r} is not in policy history_retention_days ({', '.join(days)}): never deleted",
                )
            )
            continue
        cutoff = cutoffs[cls]
        started = run.info.start_time
        if cutoff is None or not started or started >= cutoff.timestamp() * 1000:
            within[cls] += 1
            continue
        why = protection.reason(run)
        if why is not None:
            kept[cls].append(_entry(run, experiment, now, why))
        elif run.info.status in STILL_RUNNING:
            kept[cls].append(_entry(run, experiment, now, f"still {run.info.status.lower()}"))
        else:
            entry = _entry(run, experiment, now, "")
            age = math.floor(entry.age_days or 0)
            delete[cls].append(replace(entry, reason=f"{age} days old, past its {days[cls]} days"))
    by_age = lambda e: e.started or now  # noqa: E731 - oldest first
    classes = tuple(
        ClassPlan(
            c,
            days[c],
            cutoffs[c],
            tuple(sorted(delete[c], key=by_age)),
            tuple(sorted(kept[c], key=by_age)),
            within[c],
        )
        for c in days
    )
    return RetentionPlan(now, tracking_uri, classes, tuple(sorted(unclassified, key=by_age)))


def build_plan(
    days: Mapping[str, int | None], now: datetime | None = None, tracking_uri: str | None = None
) -> RetentionPlan:
    """The plan for the store in force (or `tracking_uri`) at `now` (default: the clock's now, UTC)."""
    uri = tracking_uri or configure()
    client = MlflowClient(uri, registry_uri=uri)
    return plan_for(find_runs(client), days, model_versions(client), _checked_now(now), uri)


# ---- the purge -------------------------------------------------------------------------------------------------


def _hard_delete(uri: str) -> Callable[[str], None] | None:
    """The tracking store's permanent delete, where it has one: what `mlflow gc` calls after a run's artifacts are
    gone (`backend_store._hard_delete_run`, mlflow/cli/__init__.py). SQL stores have it; an `mlflow server`'s REST
    API does not (a client can only mark a run deleted there; the server's operator finishes with
    `mlflow gc --backend-store-uri <its database>`)."""
    # `mlflow gc --run-ids` itself is not called: with no --experiment-ids it also hard-deletes every experiment and
    # logged model that anyone soft-deleted, which a retention purge must not touch.
    from mlflow.tracking import _get_store

    store = _get_store(uri)
    hard = getattr(store, "_hard_delete_run", None)
    return hard if callable(hard) else None


def purge(plan: RetentionPlan, *, strict: bool = True) -> PurgeResult:
    """Delete every run the plan lists: its artifacts (the artifact repository's `delete_artifacts`, as `mlflow gc`
    does), then the run, permanently where the store allows it. A run that fails is reported and the others go on;
    with `strict`, PurgeError names the failures at the end."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = MlflowClient(plan.tracking_uri, registry_uri=plan.tracking_uri)
    hard_delete = _hard_delete(plan.tracking_uri)
    # A version registered on a run since the plan was made protects it too.
    protection = model_versions(client) if plan.delete else Protection()
    deleted, soft, skipped, failed = [], [], [], []
    for entry in plan.delete:
        try:
            run = client.get_run(entry.run_id)
        except Exception as exc:  # noqa: BLE001 - gone already, or the store is unreachable: reported either way
            failed.append(PurgeFailure(entry, "artifacts", f"cannot read the run: {exc}"))
            continue
        why = protection.reason(run)
        if why is not None:
            skipped.append(replace(entry, reason=f"{why} (registered after the plan)"))
            continue
        try:
            repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=plan.tracking_uri)
            repo.delete_artifacts()
        except Exception as exc:  # noqa: BLE001 - any store error: the run itself is left untouched
            failed.append(PurgeFailure(entry, "artifacts", f"{type(exc).__name__}: {exc}"))
            continue
        try:
            if hard_delete is not None:
                hard_delete(entry.run_id)  # one transaction: the run, its params, metrics, tags and inputs
                deleted.append(entry)
            else:
                client.delete_run(entry.run_id)
                soft.append(entry)
        except Exception as exc:  # noqa: BLE001
            failed.append(PurgeFailure(entry, "run", f"{type(exc).__name__}: {exc}"))
    note = (
        ""
        if hard_delete is not None
        else (
            f"{plan.tracking_uri} cannot delete runs for good through its API: the runs are marked deleted and "
            "their artifacts removed; `mlflow gc --backend-store-uri <the server's database>` removes the records"
        )
    )
    result = PurgeResult(plan, tuple(deleted), tuple(soft), tuple(skipped), tuple(failed), note)
    if strict and failed:
        raise PurgeError(result)
    return result


def check(result: PurgeResult) -> None:
    """Raise PurgeError naming the runs that could not be deleted, if any."""
    if result.failed:
        raise PurgeError(result)


# ---- what people read ------------------------------------------------------------------------------------------


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def summary(plan: RetentionPlan, result: PurgeResult | None = None) -> str:
    """One paragraph: what expired, what was (or would be) deleted, what is kept and why."""
    expired = plan.delete
    per_class = ", ".join(f"{c.retention_class} {len(c.delete)}" for c in plan.classes if c.delete)
    when = plan.now.strftime("%Y-%m-%d %H:%M UTC")
    if result is None:
        head = (
            f"Dry run at {when}: {_count(len(expired), 'run')} outlived their retention and would be deleted"
            + (f" ({per_class})" if per_class else "")
            + "; nothing was deleted."
        )
    else:
        done = len(result.deleted) + len(result.soft_deleted)
        head = (
            f"Purge at {when}: {done} of {_count(len(expired), 'expired run')} deleted"
            + (f" ({per_class})" if per_class else "")
            + (f", {len(result.soft_deleted)} of them only marked deleted" if result.soft_deleted else "")
            + (f"; {_count(len(result.failed), 'run')} failed and stay" if result.failed else "")
            + (f"; {len(result.skipped)} kept (registered since the plan)" if result.skipped else "")
            + "."
        )
    kept = [e for c in plan.classes for e in c.kept]
    reasons: dict[str, int] = {}
    for e in kept:
        key = "behind a registered model version" if e.reason.startswith("backs model") else "still running"
        reasons[key] = reasons.get(key, 0) + 1
    parts = [head]
    if kept:
        parts.append(
            f"{_count(len(kept), 'expired run')} kept: "
            + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
            + "."
        )
    if plan.unclassified:
        parts.append(
            f"{_count(len(plan.unclassified), 'run')} without a retention class kept, never deleted."
        )
    permanent = [c.retention_class for c in plan.classes if c.days is None]
    if permanent:
        parts.append(f"{', '.join(permanent)} are kept permanently.")
    return " ".join(parts)


def class_rows(plan: RetentionPlan, result: PurgeResult | None = None) -> list[dict[str, Any]]:
    """One row per class: its retention, the cut-off, and how many runs are deleted, kept and within it."""
    gone = {e.run_id for e in result.deleted + result.soft_deleted} if result else set()
    rows = []
    for c in plan.classes:
        row: dict[str, Any] = {
            "class": c.retention_class,
            "retention": c.retention,
            "expired if started before": c.cutoff.strftime("%Y-%m-%d %H:%M") if c.cutoff else "never",
        }
        if result is None:
            row["would delete"] = len(c.delete)
        else:
            row["deleted"] = sum(e.run_id in gone for e in c.delete)
            row["failed"] = len(c.delete) - row["deleted"]
        row |= {"kept (expired)": len(c.kept), "within retention": c.within}
        rows.append(row)
    return rows


def run_rows(plan: RetentionPlan, result: PurgeResult | None = None) -> list[dict[str, Any]]:
    """Every run the plan names: its action (deleted, would delete, failed, kept, unclassified) and the reason."""
    failed = {f.entry.run_id: f for f in result.failed} if result else {}
    skipped = {e.run_id: e for e in result.skipped} if result else {}
    soft = {e.run_id for e in result.soft_deleted} if result else set()
    rows = []
    for e in plan.delete:
        if e.run_id in failed:
            f = failed[e.run_id]
            action, reason = "failed", f"{f.step}: {f.error}"
        elif e.run_id in skipped:
            action, reason = "kept", skipped[e.run_id].reason
        elif result is None:
            action, reason = "would delete", e.reason
        else:
            action, reason = ("marked deleted" if e.run_id in soft else "deleted"), e.reason
        rows.append({"action": action, **e.row(), "reason": reason})
    rows += [{"action": "kept", **e.row()} for c in plan.classes for e in c.kept]
    rows += [{"action": "unclassified", **e.row()} for e in plan.unclassified]
    return rows


def render_markdown(plan: RetentionPlan, result: PurgeResult | None = None) -> str:
    """The plan (and what the purge did) as the Prefect artifact shows it: a sentence, the classes, the runs."""
    title = "History retention: dry run" if result is None else "History retention: purge"
    out = [f"# {title}\n", summary(plan, result), "", f"Store: `{plan.tracking_uri}`", ""]
    if result is not None and result.store_note:
        out += [f"Note: {result.store_note}", ""]
    out += ["## Classes (policy `history_retention_days`)\n", markdown_table(class_rows(plan, result)), ""]
    rows = run_rows(plan, result)
    out += [
        "## Runs\n",
        markdown_table(rows) if rows else "No run is expired, kept back or unclassified.",
        "",
    ]
    return "\n".join(out)


def purge_record(plan: RetentionPlan, result: PurgeResult) -> RunRecord:
    """The purge's own run: what it deleted and kept, kept a year like any implementation log (not forever)."""
    return RunRecord(
        "history-retention",
        names.RETENTION_EXPERIMENT,
        tags={names.TAG_KIND: "retention"},
        metrics={
            "deleted": len(result.deleted),
            "soft_deleted": len(result.soft_deleted),
            "failed": len(result.failed),
            "kept": len(plan.kept),
        },
        texts={"retention_report.md": render_markdown(plan, result)},
        dicts={"retention.json": {"plan": plan.as_dict(), "result": result.as_dict()}},
        retention_class=names.IMPLEMENTATION_LOGS,
    )


def outcome(plan: RetentionPlan, result: PurgeResult | None, run_id: str | None = None) -> dict[str, Any]:
    """What the flow returns and `inferops records retention --json` prints."""
    return {
        "dry_run": result is None,
        "summary": summary(plan, result),
        "plan": plan.as_dict(),
        "result": result.as_dict() if result else None,
        "mlflow_run_id": run_id,
    }
