"""Load generation: open loop (no coordinated omission), closed loop and trace replay, over HTTP or in process."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import psutil
from hdrh.histogram import HdrHistogram

from serving import routes
from serving.client import excerpt

# Histogram range: 1 µs .. 10 min, 3 significant digits (0.1% value resolution), values in microseconds.
HIST_LOWEST_US = 1
HIST_HIGHEST_US = 600_000_000
HIST_SIGFIGS = 3
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)

# When the generator itself is the bottleneck its numbers describe the client, not the server. These are the
# limits past which we say so (not policy: they describe the tool, not the service).
GENERATOR_CPU_LIMIT_CORES = 0.85  # one asyncio loop cannot use more than one core
SEND_LAG_LIMIT_MS = 20.0  # P99 of (actual send - scheduled send)
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_CONCURRENCY_CAP = 256
DEFAULT_ENDPOINT_PATH = routes.EMBEDDINGS.template

BodyFactory = Callable[[int], dict[str, Any]]
ProgressFn = Callable[[float], None]


class LoadInputError(ValueError):
    """Bad input to the load generator (rate, duration, trace file, endpoint), found before any load is sent."""


class EndpointError(RuntimeError):
    """The endpoint failed the preflight request: unreachable, unknown model, rejected key or an error status."""


# ---------------------------------------------------------------------------------------------------------
# Server-Timing
# ---------------------------------------------------------------------------------------------------------
_DUR = re.compile(r"(?:^|;)\s*dur\s*=\s*\"?([-+0-9.eE]+)\"?", re.IGNORECASE)


def parse_server_timing(header: str | None) -> dict[str, float]:
    """Phase name -> milliseconds from a W3C `Server-Timing` header; entries without `dur` are skipped."""
    phases: dict[str, float] = {}
    if not header:
        return phases
    for entry in header.split(","):
        parts = entry.strip().split(";", 1)
        name = parts[0].strip()
        if not name:
            continue
        match = _DUR.search(";" + parts[1]) if len(parts) > 1 else None
        if match is None:
            continue
        try:
            value = float(match.group(1))
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            # a phase repeated in one header (e.g. two compute calls) is time spent twice: add it up
            phases[name] = phases.get(name, 0.0) + value
    return phases


# ---------------------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------------------
def check_rate(rate: float, duration_s: float) -> None:
    """Raise LoadInputError for a rate or duration that cannot make a schedule."""
    if not math.isfinite(rate) or rate <= 0:
        raise LoadInputError(
            f"rate {rate} req/s is not allowed: the rate must be a positive number; pass e.g. --rate 10"
        )
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise LoadInputError(
            f"duration {duration_s} s is not allowed: it must be positive; pass e.g. --duration 20"
        )


def constant_schedule(rate: float, duration_s: float) -> list[float]:
    """Send offsets (s) at a fixed interval of 1/rate."""
    check_rate(rate, duration_s)
    n = int(rate * duration_s)
    return [i / rate for i in range(n)]


def poisson_schedule(rate: float, duration_s: float, seed: int = 0) -> list[float]:
    """Send offsets (s) of a Poisson process of the given rate (exponential gaps), seeded for repeatability."""
    check_rate(rate, duration_s)
    rng = random.Random(seed)
    offsets: list[float] = []
    t = rng.expovariate(rate)
    while t < duration_s:
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


def load_trace(
    path: str | Path,
    *,
    column: str = "TIMESTAMP",
    speedup: float = 1.0,
    target_rps: float | None = None,
    max_requests: int | None = None,
    max_duration_s: float | None = None,
) -> list[float]:
    """Arrival offsets (s from the first row) from a CSV of timestamps, time-scaled and optionally truncated.

    `speedup` divides the gaps (2.0 replays twice as fast); `target_rps` instead rescales the trace to that mean
    rate. The column may hold datetimes or plain numbers of seconds.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise LoadInputError(f"trace file {path} does not exist; pass a CSV with a {column!r} column")
    try:
        frame = pd.read_csv(path, usecols=[column], dtype=str)
    except ValueError as exc:
        raise LoadInputError(
            f"trace file {path} has no column {column!r} ({exc}); pass --trace-column NAME"
        ) from None
    raw = frame[column]
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all() and len(raw):
        seconds = numeric.astype(float)
    else:
        parsed = pd.to_datetime(raw, errors="coerce", format="mixed")
        bad = parsed.isna()
        if bad.any():
            row = int(bad.idxmax())
            raise LoadInputError(
                f"trace file {path}: {int(bad.sum())} value(s) in column {column!r} are not timestamps, first at "
                f"data row {row + 1}: {raw.iloc[row]!r}; fix or remove those rows (expected e.g. "
                f"'2023-11-16 18:15:46.68' or seconds as numbers)"
            )
        seconds = (parsed - parsed.min()).dt.total_seconds()
    values = sorted(float(v) for v in seconds)
    if not values:
        raise LoadInputError(f"trace file {path} has no rows in column {column!r}")
    offsets = [v - values[0] for v in values]
    if target_rps is not None:
        check_rate(target_rps, 1.0)
        span = offsets[-1]
        if span <= 0 or len(offsets) < 2:
            raise LoadInputError(
                f"trace file {path} spans no time; it cannot be rescaled to {target_rps} req/s"
            )
        speedup = target_rps / ((len(offsets) - 1) / span)  # trace's own mean rate -> target
    if not math.isfinite(speedup) or speedup <= 0:
        raise LoadInputError(f"trace speedup {speedup} must be a positive number")
    offsets = [o / speedup for o in offsets]
    if max_duration_s is not None:
        offsets = [o for o in offsets if o < max_duration_s]
    if max_requests is not None:
        offsets = offsets[:max_requests]
    return offsets


# ---------------------------------------------------------------------------------------------------------
# Targets: what one request is
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """One finished request: status ('200', 'timeout', 'error:ConnectError', ...) and server phases in ms."""

    status: str
    ok: bool
    server_timing: dict[str, float] = field(default_factory=dict)


Sender = Callable[[int], Awaitable[Outcome]]


def endpoint_url(url: str, path: str = DEFAULT_ENDPOINT_PATH) -> str:
    """The full endpoint URL: `path` appended when `url` is a bare base URL."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise LoadInputError(f"URL {url!r} is not an http(s) URL; pass e.g. --url http://127.0.0.1:8000")
    if parsed.path in ("", "/"):
        return url.rstrip("/") + path
    return url


class HttpTarget:
    """POSTs a JSON body built per request to one URL with an aiohttp session.

    aiohttp rather than httpx: measured on this 2-core box at 200 req/s, 0.53 ms of generator CPU per request
    against 1.2-1.5 ms for httpx.AsyncClient, and the generator shares the cores with the server under test.
    """

    def __init__(
        self,
        url: str,
        body_factory: BodyFactory,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_CONCURRENCY_CAP,
    ) -> None:
        self.url = url
        self.body_factory = body_factory
        self.headers = headers or {}
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._session: Any = None

    async def __aenter__(self) -> HttpTarget:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers=self.headers,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def exchange(self, i: int) -> tuple[Outcome, bytes]:
        """POST request `i`: its outcome (with the server-timing phases of a 2xx answer) and the body it got."""
        import aiohttp

        try:
            async with self._session.post(self.url, json=self.body_factory(i)) as response:
                body = await response.read()
                status = response.status
                timing_header = response.headers.get("server-timing")
        except TimeoutError:
            return Outcome("timeout", False), b""
        except aiohttp.ClientError as exc:
            return Outcome(f"error:{type(exc).__name__}", False), b""
        ok = 200 <= status < 300
        return Outcome(str(status), ok, parse_server_timing(timing_header) if ok else {}), body

    async def send(self, i: int) -> Outcome:
        return (await self.exchange(i))[0]


class InProcessTarget:
    """Calls an in-process function (e.g. an engine's `infer`) in a thread pool, for comparison with HTTP."""

    def __init__(
        self, fn: Callable[[Any], Any], input_factory: Callable[[int], Any], *, threads: int = 1
    ) -> None:
        self.fn = fn
        self.input_factory = input_factory
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> InProcessTarget:
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="inprocess-target")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def send(self, i: int) -> Outcome:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._pool, self.fn, self.input_factory(i))
        except Exception as exc:  # an engine error is a failed request, counted, not a crash of the run
            return Outcome(f"error:{type(exc).__name__}", False)
        return Outcome("ok", True)


# ---------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------
def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds."""
    return HdrHistogram(HIST_LOWEST_US, HIST_HIGHEST_US, HIST_SIGFIGS)


def _record(hist: HdrHistogram, seconds: float) -> None:
    hist.record_value(min(max(int(seconds * 1e6), HIST_LOWEST_US), HIST_HIGHEST_US))


def percentiles_ms(hist: HdrHistogram, pcts: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """`p50`, `p90`, `p99`, `p99.9` (ms) of a microsecond histogram; NaN when it is empty."""
    out: dict[str, float] = {}
    for p in pcts:
        key = f"p{p:g}"
        out[key] = hist.get_value_at_percentile(p) / 1000.0 if hist.get_total_count() else float("nan")
    return out


@dataclass
class GeneratorStats:
    """The load generator's own cost, and whether it was likely the bottleneck."""

    cpu_seconds: float
    cpu_cores_used: float
    send_lag_p50_ms: float
    send_lag_p99_ms: float
    send_lag_max_ms: float
    likely_bottleneck: bool
    reason: str


@dataclass
class LoadResult:
    """Everything one load run measured; `histogram` holds every answered request, errors and timeouts included."""

    mode: Literal["open", "closed", "trace"]
    target: str
    offered_rps: float | None
    concurrency: int | None
    duration_s: float
    scheduled: int
    sent: int
    ok: int
    errors: int
    timeouts: int
    dropped: int
    status_counts: dict[str, int]
    histogram: HdrHistogram
    ok_histogram: HdrHistogram
    server_timing_ms: dict[str, float]
    server_timing_samples: int
    client_ms_with_timing: float
    generator: GeneratorStats

    @property
    def failed(self) -> int:
        """Errors, timeouts and requests dropped at the concurrency cap."""
        return self.errors + self.timeouts + self.dropped

    @property
    def error_rate(self) -> float:
        return self.failed / self.scheduled if self.scheduled else 0.0

    @property
    def throughput_rps(self) -> float:
        """Successful responses per second of wall time."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def percentiles(self) -> dict[str, float]:
        return percentiles_ms(self.histogram)

    @property
    def mean_ms(self) -> float:
        return self.histogram.get_mean_value() / 1000.0 if self.histogram.get_total_count() else float("nan")

    @property
    def max_ms(self) -> float:
        return self.histogram.get_max_value() / 1000.0 if self.histogram.get_total_count() else float("nan")

    def summary(self) -> dict[str, Any]:
        """Plain numbers for tables, JSON and MLflow."""
        return {
            "mode": self.mode,
            "target": self.target,
            "offered_rps": self.offered_rps,
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 3),
            "scheduled": self.scheduled,
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "dropped": self.dropped,
            "error_rate": self.error_rate,
            "throughput_rps": self.throughput_rps,
            "mean_ms": self.mean_ms,
            "max_ms": self.max_ms,
            **{f"{k}_ms": v for k, v in self.percentiles.items()},
            "status_counts": dict(self.status_counts),
            "server_timing_ms": dict(self.server_timing_ms),
            "generator_cpu_cores": self.generator.cpu_cores_used,
            "generator_send_lag_p99_ms": self.generator.send_lag_p99_ms,
            "generator_bottleneck": self.generator.likely_bottleneck,
        }


class _Recorder:
    """Accumulates outcomes while a run is in progress."""

    def __init__(self) -> None:
        self.hist = new_histogram()
        self.ok_hist = new_histogram()
        self.lag_hist = new_histogram()
        self.status: Counter[str] = Counter()
        self.sent = self.ok = self.errors = self.timeouts = self.dropped = 0
        self.phase_sums: dict[str, float] = {}
        self.timing_samples = 0
        self.client_sum_s = 0.0

    def add(self, outcome: Outcome, latency_s: float) -> None:
        self.status[outcome.status] += 1
        _record(self.hist, latency_s)
        if outcome.ok:
            self.ok += 1
            _record(self.ok_hist, latency_s)
            if outcome.server_timing:
                self.timing_samples += 1
                self.client_sum_s += latency_s
                for name, ms in outcome.server_timing.items():
                    self.phase_sums[name] = self.phase_sums.get(name, 0.0) + ms
        elif outcome.status == "timeout":
            self.timeouts += 1
        else:
            self.errors += 1

    def drop(self) -> None:
        self.dropped += 1
        self.status["dropped"] += 1


def _generator_stats(cpu_s: float, wall_s: float, lag: HdrHistogram, in_process: bool) -> GeneratorStats:
    cores = cpu_s / wall_s if wall_s > 0 else 0.0
    pct = percentiles_ms(lag, (50.0, 99.0))
    p99 = 0.0 if math.isnan(pct["p99"]) else pct["p99"]
    reasons = []
    # in process, our CPU includes the model's compute, so CPU use says nothing about the generator
    if cores >= GENERATOR_CPU_LIMIT_CORES and not in_process:
        reasons.append(f"generator used {cores:.2f} cores (limit {GENERATOR_CPU_LIMIT_CORES})")
    if p99 > SEND_LAG_LIMIT_MS:
        reasons.append(
            f"send lag P99 {p99:.1f} ms > {SEND_LAG_LIMIT_MS} ms: requests left later than scheduled"
        )
    reason = "; ".join(reasons) or (
        f"generator used {cores:.2f} cores (limit {GENERATOR_CPU_LIMIT_CORES}), send lag P99 {p99:.1f} ms "
        f"(limit {SEND_LAG_LIMIT_MS} ms)"
    )
    return GeneratorStats(
        cpu_seconds=cpu_s,
        cpu_cores_used=cores,
        send_lag_p50_ms=0.0 if math.isnan(pct["p50"]) else pct["p50"],
        send_lag_p99_ms=p99,
        send_lag_max_ms=lag.get_max_value() / 1000.0 if lag.get_total_count() else 0.0,
        likely_bottleneck=bool(reasons),
        reason=reason,
    )


def _cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _result(
    rec: _Recorder,
    *,
    mode: Literal["open", "closed", "trace"],
    target: str,
    offered: float | None,
    concurrency: int | None,
    scheduled: int,
    wall_s: float,
    cpu_s: float,
    in_process: bool,
) -> LoadResult:
    n = rec.timing_samples
    return LoadResult(
        mode=mode,
        target=target,
        offered_rps=offered,
        concurrency=concurrency,
        duration_s=wall_s,
        scheduled=scheduled,
        sent=rec.sent,
        ok=rec.ok,
        errors=rec.errors,
        timeouts=rec.timeouts,
        dropped=rec.dropped,
        status_counts=dict(rec.status),
        histogram=rec.hist,
        ok_histogram=rec.ok_hist,
        server_timing_ms={k: v / n for k, v in rec.phase_sums.items()} if n else {},
        server_timing_samples=n,
        client_ms_with_timing=rec.client_sum_s * 1000.0 / n if n else float("nan"),
        generator=_generator_stats(cpu_s, wall_s, rec.lag_hist, in_process),
    )


# ---------------------------------------------------------------------------------------------------------
# Loops
# ---------------------------------------------------------------------------------------------------------
async def run_schedule(
    send: Sender,
    offsets: Sequence[float],
    *,
    mode: Literal["open", "trace"] = "open",
    target: str = "",
    concurrency_cap: int = DEFAULT_CONCURRENCY_CAP,
    progress: ProgressFn | None = None,
    in_process: bool = False,
) -> LoadResult:
    """Open loop: send at each offset whatever the responses do; latency counts from the scheduled time.

    At most `concurrency_cap` requests are in flight; a request due while the cap is reached is dropped and
    counted as a failure (never silently skipped), so an overloaded server shows up in the error rate.
    """
    rec = _Recorder()
    in_flight: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    async def one(i: int, due: float) -> None:
        start = loop.time()
        _record(rec.lag_hist, max(0.0, start - due))
        outcome = await send(i)
        rec.add(outcome, loop.time() - due)

    cpu0 = _cpu_seconds()
    t0 = loop.time()
    total = len(offsets)
    for i, offset in enumerate(offsets):
        due = t0 + offset
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= concurrency_cap:
            rec.drop()
            continue
        rec.sent += 1
        task = loop.create_task(one(i, due))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        if progress is not None and (i % 16 == 0 or i == total - 1):
            progress((i + 1) / total)
    if in_flight:
        await asyncio.gather(*in_flight)
    wall = loop.time() - t0
    offered = (len(offsets) - 1) / offsets[-1] if len(offsets) > 1 and offsets[-1] > 0 else None
    return _result(
        rec,
        mode=mode,
        target=target,
        offered=offered,
        concurrency=concurrency_cap,
        scheduled=total,
        wall_s=wall,
        cpu_s=_cpu_seconds() - cpu0,
        in_process=in_process,
    )


async def run_closed(
    send: Sender,
    *,
    concurrency: int,
    duration_s: float,
    target: str = "",
    progress: ProgressFn | None = None,
    in_process: bool = False,
) -> LoadResult:
    """Closed loop: `concurrency` clients each send, wait for the answer, and send again, for `duration_s`."""
    if concurrency < 1:
        raise LoadInputError(f"concurrency {concurrency} must be at least 1")
    check_rate(1.0, duration_s)
    rec = _Recorder()
    loop = asyncio.get_running_loop()
    cpu0 = _cpu_seconds()
    t0 = loop.time()
    deadline = t0 + duration_s
    counter = iter(range(1 << 62))

    async def client() -> None:
        while loop.time() < deadline:
            i = next(counter)
            rec.sent += 1
            start = loop.time()
            outcome = await send(i)
            rec.add(outcome, loop.time() - start)
            if progress is not None and i % 16 == 0:
                progress(min(1.0, (loop.time() - t0) / duration_s))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = loop.time() - t0
    return _result(
        rec,
        mode="closed",
        target=target,
        offered=None,
        concurrency=concurrency,
        scheduled=rec.sent,
        wall_s=wall,
        cpu_s=_cpu_seconds() - cpu0,
        in_process=in_process,
    )


# ---------------------------------------------------------------------------------------------------------
# Convenience entry points (sync)
# ---------------------------------------------------------------------------------------------------------
def run_http_open(
    url: str,
    body_factory: BodyFactory,
    *,
    rate: float,
    duration_s: float,
    arrivals: Literal["poisson", "constant"] = "poisson",
    headers: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    concurrency_cap: int = DEFAULT_CONCURRENCY_CAP,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> LoadResult:
    """Open-loop HTTP load at `rate` req/s for `duration_s`."""
    check_rate(rate, duration_s)
    offsets = (
        poisson_schedule(rate, duration_s, seed)
        if arrivals == "poisson"
        else constant_schedule(rate, duration_s)
    )

    async def go() -> LoadResult:
        async with HttpTarget(
            url, body_factory, headers=headers, timeout_s=timeout_s, max_connections=concurrency_cap
        ) as t:
            result = await run_schedule(
                t.send, offsets, target=url, concurrency_cap=concurrency_cap, progress=progress
            )
        result.offered_rps = rate
        return result

    return asyncio.run(go())


def run_http_trace(
    url: str,
    body_factory: BodyFactory,
    offsets: Sequence[float],
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    concurrency_cap: int = DEFAULT_CONCURRENCY_CAP,
    progress: ProgressFn | None = None,
) -> LoadResult:
    """Replay arrival offsets (from `load_trace`) against an HTTP endpoint, open loop."""
    if not offsets:
        raise LoadInputError(
            "the trace has no arrivals in the window asked for; widen --duration or the trace"
        )

    async def go() -> LoadResult:
        async with HttpTarget(
            url, body_factory, headers=headers, timeout_s=timeout_s, max_connections=concurrency_cap
        ) as t:
            return await run_schedule(
                t.send, offsets, mode="trace", target=url, concurrency_cap=concurrency_cap, progress=progress
            )

    return asyncio.run(go())


def run_http_closed(
    url: str,
    body_factory: BodyFactory,
    *,
    concurrency: int,
    duration_s: float,
    headers: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: ProgressFn | None = None,
) -> LoadResult:
    """Closed-loop HTTP load with `concurrency` clients for `duration_s`."""

    async def go() -> LoadResult:
        async with HttpTarget(
            url, body_factory, headers=headers, timeout_s=timeout_s, max_connections=concurrency
        ) as t:
            return await run_closed(
                t.send, concurrency=concurrency, duration_s=duration_s, target=url, progress=progress
            )

    return asyncio.run(go())


def run_inprocess(
    fn: Callable[[Any], Any],
    input_factory: Callable[[int], Any],
    *,
    rate: float | None = None,
    concurrency: int = 1,
    duration_s: float,
    seed: int = 0,
) -> LoadResult:
    """The same loops against an in-process callable: open loop when `rate` is given, closed loop otherwise."""

    async def go() -> LoadResult:
        async with InProcessTarget(fn, input_factory, threads=concurrency) as t:
            if rate is None:
                return await run_closed(
                    t.send,
                    concurrency=concurrency,
                    duration_s=duration_s,
                    target="in-process",
                    in_process=True,
                )
            offsets = poisson_schedule(rate, duration_s, seed)
            result = await run_schedule(t.send, offsets, target="in-process", in_process=True)
            result.offered_rps = rate
            return result

    return asyncio.run(go())


# ---------------------------------------------------------------------------------------------------------
# Bodies and preflight
# ---------------------------------------------------------------------------------------------------------
def embeddings_body_factory(model: str, sentences: Sequence[str] | None = None) -> BodyFactory:
    """OpenAI embeddings bodies, one corpus sentence per request, cycling through the corpus."""
    if sentences is None:
        try:
            from serving.corpus import english_sentences

            sentences = english_sentences()
        except Exception:  # the corpus builder is optional here; a fixed sentence still measures the path
            sentences = ("The quick brown fox jumps over the lazy dog near the river bank.",)
    texts = tuple(sentences)
    if not texts:
        raise LoadInputError("the sentence corpus is empty; pass at least one sentence")

    def body(i: int) -> dict[str, Any]:
        return {"model": model, "input": texts[i % len(texts)]}

    return body


@dataclass(frozen=True)
class Preflight:
    """What one request before the load showed."""

    url: str
    status: int
    latency_ms: float
    server_timing: dict[str, float]


def preflight(
    url: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Preflight:
    """Send one request; raise EndpointError naming the problem (unreachable, 404 model, 401 key, other)."""
    import httpx

    model = body.get("model", "?")
    started = time.perf_counter()
    try:
        response = httpx.post(url, json=body, headers=headers or {}, timeout=timeout_s)
    except httpx.TimeoutException:
        raise EndpointError(
            f"endpoint {url} did not answer within {timeout_s} s; check the server is up and not overloaded"
        ) from None
    except httpx.HTTPError as exc:
        raise EndpointError(
            f"cannot reach endpoint {url} ({type(exc).__name__}: {exc}); start the server or fix --url"
        ) from None
    latency = (time.perf_counter() - started) * 1000.0
    detail = excerpt(response.text)
    if response.status_code == 404:
        raise EndpointError(
            f"endpoint {url} answered 404 for model {model!r}: the model is unknown there (or the path is wrong); "
            f"pass a served model name with --model. Server said: {detail}"
        )
    if response.status_code in (401, 403):
        raise EndpointError(
            f"endpoint {url} refused the request ({response.status_code}): pass a valid key with --api-key. "
            f"Server said: {detail}"
        )
    if not 200 <= response.status_code < 300:
        raise EndpointError(f"endpoint {url} answered {response.status_code} to a valid request: {detail}")
    return Preflight(
        url, response.status_code, latency, parse_server_timing(response.headers.get("server-timing"))
    )
