"""Open-loop load across a disruption (a node killed, a model hot-switched): every request's send and answer time,
its status and the model that answered, so the run can be cut into phases around the event.

The schedule and the loop are `loadgen`'s (`run_schedule`, no coordinated omission); only the target differs: it
keeps one `Sample` per request and, from an Open Inference Protocol answer, the sha256 of the model that served it.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from tasks.measure.loadgen import (
    DEFAULT_CONCURRENCY_CAP,
    DEFAULT_TIMEOUT_S,
    BodyFactory,
    HttpTarget,
    LoadInputError,
    LoadResult,
    Outcome,
    constant_schedule,
    poisson_schedule,
    run_schedule,
)


@dataclass(frozen=True)
class Sample:
    """One request: when it left and when its answer (or failure) came back (time.monotonic), and who answered."""

    sent: float
    answered: float
    status: str
    ok: bool
    sha256: str | None = None

    @property
    def latency_ms(self) -> float:
        return (self.answered - self.sent) * 1000.0


def served_sha256(body: bytes) -> str | None:
    """The `parameters.sha256` of an Open Inference Protocol answer (None for any other body)."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    params = decoded.get("parameters") if isinstance(decoded, dict) else None
    sha = params.get("sha256") if isinstance(params, dict) else None
    return sha if isinstance(sha, str) else None


class RecordingTarget(HttpTarget):
    """An `HttpTarget` that keeps a `Sample` per request (and the serving model's sha256 when asked to)."""

    def __init__(self, *args: Any, read_sha256: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_sha256 = read_sha256
        self.samples: list[Sample] = []

    async def send(self, i: int) -> Outcome:
        sent = time.monotonic()
        outcome, body = await self.exchange(i)
        sha = served_sha256(body) if outcome.ok and self.read_sha256 else None
        self.samples.append(Sample(sent, time.monotonic(), outcome.status, outcome.ok, sha))
        return outcome


@dataclass
class Event:
    """The disruption: when it began and ended (time.monotonic), what it returned or the error it raised."""

    name: str
    started: float = math.nan
    finished: float = math.nan
    result: Any = None
    error: str | None = None


@dataclass
class DisruptedRun:
    """An open-loop run with an event in the middle: the loop's figures, every request, and the event."""

    load: LoadResult
    samples: list[Sample]
    started: float  # time.monotonic() when the schedule began
    event: Event | None

    def rel(self, t: float) -> float:
        """`t` (monotonic) as seconds since the load began."""
        return t - self.started


def run_across(
    url: str,
    body_factory: BodyFactory,
    *,
    rate: float,
    duration_s: float,
    event: Callable[[], Any] | None = None,
    event_name: str = "event",
    event_at_s: float = 0.0,
    arrivals: Literal["poisson", "constant"] = "constant",
    headers: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    concurrency_cap: int = DEFAULT_CONCURRENCY_CAP,
    read_sha256: bool = False,
    seed: int = 0,
) -> DisruptedRun:
    """Open-loop load at `rate` req/s for `duration_s`; `event()` runs in a worker thread `event_at_s` seconds in
    (the load keeps its schedule whatever the event does), and the run waits for both to finish."""
    if event is not None and not 0 <= event_at_s < duration_s:
        raise LoadInputError(
            f"the event at {event_at_s} s falls outside the {duration_s} s load; pick 0 <= event_at_s < duration"
        )
    offsets = (
        poisson_schedule(rate, duration_s, seed)
        if arrivals == "poisson"
        else constant_schedule(rate, duration_s)
    )
    record = Event(event_name) if event is not None else None

    def fire() -> None:
        assert event is not None and record is not None
        record.started = time.monotonic()
        try:
            record.result = event()
        except Exception as exc:  # the event failing is a finding of the run, not a crash of the load
            record.error = f"{type(exc).__name__}: {exc}"
        finally:
            record.finished = time.monotonic()

    async def go() -> tuple[LoadResult, list[Sample], float]:
        target = RecordingTarget(
            url,
            body_factory,
            headers=headers,
            timeout_s=timeout_s,
            max_connections=concurrency_cap,
            read_sha256=read_sha256,
        )
        async with target:
            started = time.monotonic()

            async def disrupt() -> None:
                await asyncio.sleep(event_at_s)
                await asyncio.to_thread(fire)

            pending = asyncio.create_task(disrupt()) if event is not None else None
            load = await run_schedule(target.send, offsets, target=url, concurrency_cap=concurrency_cap)
            if pending is not None:
                await pending
        load.offered_rps = rate
        return load, sorted(target.samples, key=lambda s: s.sent), started

    load, samples, started = asyncio.run(go())
    return DisruptedRun(load, samples, started, record)


# ---- cutting a run into phases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """The requests sent within one phase of a run: how many, how many failed and how, and their latency."""

    name: str
    requests: int
    ok: int
    failed: int
    failures: dict[str, int] = field(default_factory=dict)
    p50_ms: float = math.nan
    p99_ms: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sent_between(samples: Sequence[Sample], start: float, end: float = math.inf) -> list[Sample]:
    """The requests sent in [start, end)."""
    return [s for s in samples if start <= s.sent < end]


def phase(name: str, samples: Sequence[Sample]) -> Phase:
    """Counts and P50/P99 (of every request, failures included: a timeout is latency too)."""
    ms = np.asarray([s.latency_ms for s in samples], dtype=float)
    ok = sum(s.ok for s in samples)
    return Phase(
        name=name,
        requests=len(samples),
        ok=ok,
        failed=len(samples) - ok,
        failures=dict(Counter(s.status for s in samples if not s.ok)),
        p50_ms=float(np.percentile(ms, 50)) if ms.size else math.nan,
        p99_ms=float(np.percentile(ms, 99)) if ms.size else math.nan,
    )


def failure_window(samples: Sequence[Sample]) -> tuple[float, float] | None:
    """When failures were seen: from the first failed answer to the last (None when nothing failed)."""
    failed = [s.answered for s in samples if not s.ok]
    return (min(failed), max(failed)) if failed else None


def per_second(samples: Sequence[Sample], origin: float) -> list[dict[str, Any]]:
    """Requests sent and answered ok in each whole second after `origin` (by send time)."""
    buckets: dict[int, list[int]] = {}
    for s in samples:
        second = math.floor(s.sent - origin)
        counts = buckets.setdefault(second, [0, 0])
        counts[0] += 1
        counts[1] += int(s.ok)
    return [{"second": k, "sent": v[0], "ok": v[1]} for k, v in sorted(buckets.items())]


# ---- a model switch under load ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchUnderLoad:
    """Who answered a load that ran across a hot switch from `old_sha256` to `new_sha256`, and what was lost."""

    old_sha256: str
    new_sha256: str
    sent: int
    answered_ok: int
    lost: int
    lost_by_status: dict[str, int]
    by_old: int
    by_new: int
    by_other: int  # answered 200 by neither model (or without saying which)
    old_after_new: int  # sent after the new model's first answer came back, yet answered by the old one
    switch_s: float  # how long the switch call took
    p99_during_switch_ms: float  # requests sent while the switch ran
    p99_ms: float

    @property
    def clean(self) -> bool:
        """Nothing lost, every answer from one of the two models, and none from the old after the new answered."""
        return (
            self.lost == 0
            and self.by_other == 0
            and self.old_after_new == 0
            and self.by_old + self.by_new == self.sent
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}


def switch_outcome(
    samples: Sequence[Sample], event: Event | None, old_sha256: str, new_sha256: str
) -> SwitchUnderLoad:
    """Count the answers of a run across a switch (`event`) by model. A request sent after the new model first
    answered cannot be served by the old one on a replica that swaps atomically: any such answer counts against
    the switch."""
    ok = [s for s in samples if s.ok]
    first_new = min((s.answered for s in ok if s.sha256 == new_sha256), default=math.inf)
    during = (
        sent_between(samples, event.started, max(event.finished, first_new if first_new < math.inf else 0.0))
        if event is not None
        else []
    )
    lost = [s for s in samples if not s.ok]
    return SwitchUnderLoad(
        old_sha256=old_sha256,
        new_sha256=new_sha256,
        sent=len(samples),
        answered_ok=len(ok),
        lost=len(lost),
        lost_by_status=dict(Counter(s.status for s in lost)),
        by_old=sum(s.sha256 == old_sha256 for s in ok),
        by_new=sum(s.sha256 == new_sha256 for s in ok),
        by_other=sum(s.sha256 not in (old_sha256, new_sha256) for s in ok),
        old_after_new=sum(s.sha256 == old_sha256 and s.sent > first_new for s in ok),
        switch_s=(event.finished - event.started) if event is not None else math.nan,
        p99_during_switch_ms=phase("during", during).p99_ms,
        p99_ms=phase("all", samples).p99_ms,
    )
