"""The four test kinds of SPEC §3 (seed 7.3.6): benchmark, load, stress (the knee) and stability (leaks)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import numpy as np

from serving import routes
from serving.client import auth_headers, infer_payload
from tasks.decision import Decision, all_passed, decisions_markdown, markdown_table
from tasks.measure.bottlenecks import Breakdown, breakdown
from tasks.measure.loadgen import (
    DEFAULT_CONCURRENCY_CAP,
    DEFAULT_ENDPOINT_PATH,
    DEFAULT_TIMEOUT_S,
    BodyFactory,
    LoadResult,
    ProgressFn,
    check_rate,
    embeddings_body_factory,
    endpoint_url,
    run_http_open,
    run_http_trace,
)
from tasks.measure.system_metrics import DEFAULT_INTERVAL_S, SystemSampler, SystemSummary
from tasks.policy import Policy

SuiteName = Literal["benchmark", "load", "stress", "stability"]

# How the stress search behaves within the bounds of policy test_suite.stress (steps, wall time, bisections).
STRESS_BISECT_TOLERANCE = 0.05  # stop bisecting when the bracket is within 5%
STRESS_TIMEOUT_SLA_MULTIPLE = 20.0  # a request 20x over the SLA is a timeout; it would fail the step anyway
STRESS_DRAIN_MAX_S = 30.0
# A P99 from a handful of requests is just the maximum: a step lasts long enough to send at least this many.
STRESS_MIN_REQUESTS_PER_STEP = 40
STRESS_MAX_STEP_STRETCH = 4.0  # ...but a step never lasts more than 4x step_duration_s
# Memory early in a run is allocator and cache warm-up, not a leak: fit the slope on the rest.
STABILITY_WARMUP_FRACTION = 0.2
LEAK_MIN_SAMPLES = 4


def _check(name: str, observed: float, threshold: float, *, at_most: bool, unit: str = "") -> Decision:
    """Pass when observed is <= threshold (at_most) or >= threshold; NaN observed fails."""
    ok = (observed <= threshold if at_most else observed >= threshold) if math.isfinite(observed) else False
    rel = "<=" if at_most else ">="
    reason = f"{name} {observed:.4g}{unit} {'meets' if ok else 'breaks'} the rule {rel} {threshold:.4g}{unit}"
    return Decision(name, threshold, observed, ok, reason)


@dataclass
class TargetSpec:
    """The endpoint under test and how to drive it."""

    url: str
    body_factory: BodyFactory
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    concurrency_cap: int = DEFAULT_CONCURRENCY_CAP
    pids: list[int] = field(default_factory=list)
    prometheus_url: str | None = None
    # A Ray node's /metrics (or a Prometheus scraping the nodes): replica memory wherever replicas run.
    replica_metrics_url: str | None = None
    sample_interval_s: float = DEFAULT_INTERVAL_S


@dataclass
class SuiteResult:
    """A suite run: its load figures, system metrics, verdicts and bottleneck breakdown."""

    suite: SuiteName
    url: str
    load: LoadResult | None
    system: SystemSummary | None
    decisions: list[Decision]
    breakdown: Breakdown | None
    sla_p99_ms: float
    max_error_rate: float
    response_cache: str = "allowed"  # or "bypassed (Cache-Control: no-cache)": what the figures measure

    @property
    def passed(self) -> bool:
        return all_passed(self.decisions)

    def metrics(self) -> dict[str, float]:
        """Numbers for MLflow."""
        out: dict[str, float] = {}
        if self.load is not None:
            pct = self.load.percentiles
            out.update(
                {
                    "throughput_rps": self.load.throughput_rps,
                    "error_rate": self.load.error_rate,
                    "p50_ms": pct["p50"],
                    "p90_ms": pct["p90"],
                    "p99_ms": pct["p99"],
                    "p99_9_ms": pct["p99.9"],
                    "mean_ms": self.load.mean_ms,
                    "requests": float(self.load.scheduled),
                    "timeouts": float(self.load.timeouts),
                    "dropped": float(self.load.dropped),
                    "generator_cpu_cores": self.load.generator.cpu_cores_used,
                    "generator_send_lag_p99_ms": self.load.generator.send_lag_p99_ms,
                }
            )
            if self.load.offered_rps is not None:
                out["offered_rps"] = self.load.offered_rps
            for phase, ms in self.load.server_timing_ms.items():
                out[f"server_{phase}_ms"] = ms
        if self.system is not None:
            out.update(self.system.metrics())
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


@dataclass(frozen=True)
class StressStep:
    """One rate tried by the stress search."""

    rate_rps: float
    p99_ms: float
    error_rate: float
    throughput_rps: float
    ok: bool
    phase: Literal["ramp", "confirm", "bisect"]
    generator_bottleneck: bool
    reason: str


@dataclass
class StressResult(SuiteResult):
    """The knee: the highest rate tried whose P99 met the SLA and error rate stayed under the maximum."""

    steps: list[StressStep] = field(default_factory=list)
    knee_rps: float = 0.0
    stopped_reason: str = ""

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        out["knee_rps"] = self.knee_rps
        out["stress_steps"] = float(len(self.steps))
        return out


@dataclass
class StabilityResult(SuiteResult):
    """Availability over a sustained run and the memory-leak verdicts."""

    availability: float = 0.0
    rss_slope_mb_per_h: float | None = None
    gpu_slope_mb_per_h: float | None = None

    def metrics(self) -> dict[str, float]:
        out = super().metrics()
        out["availability"] = self.availability
        if self.rss_slope_mb_per_h is not None:
            out["rss_slope_mb_per_h"] = self.rss_slope_mb_per_h
        if self.gpu_slope_mb_per_h is not None:
            out["gpu_slope_mb_per_h"] = self.gpu_slope_mb_per_h
        return out


# ---------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------
def _latency_decisions(load: LoadResult, sla_ms: float, max_error_rate: float) -> list[Decision]:
    decisions = [
        _check("p99_ms", load.percentiles["p99"], sla_ms, at_most=True, unit=" ms"),
        _check("error_rate", load.error_rate, max_error_rate, at_most=True),
    ]
    gen = load.generator
    decisions.append(
        Decision(
            "generator_not_bottleneck",
            None,
            gen.cpu_cores_used,
            not gen.likely_bottleneck,
            (
                "the load generator was likely the bottleneck: "
                if gen.likely_bottleneck
                else "generator kept up: "
            )
            + gen.reason,
        )
    )
    return decisions


def _breakdown_of(load: LoadResult, system: SystemSummary | None) -> Breakdown:
    headroom = None
    if system is not None and system.gpu_samples:
        headroom = min(g.memory_headroom for _, gs in system.gpu_samples for g in gs)
    client_ms = load.client_ms_with_timing if load.server_timing_samples else load.mean_ms
    return breakdown(
        client_ms,
        load.server_timing_ms,
        gpu_memory_headroom=headroom,
        gpu_status=system.gpu if system is not None else None,
    )


def _run_fixed(
    spec: TargetSpec,
    suite: SuiteName,
    *,
    rate: float | None,
    duration_s: float,
    offsets: Sequence[float] | None,
    policy: Policy,
    progress: ProgressFn | None,
) -> SuiteResult:
    sla = policy.rollout_gate.sla_p99_ms
    max_err = policy.test_suite.max_error_rate
    with SystemSampler(
        spec.pids,
        interval_s=spec.sample_interval_s,
        prometheus_url=spec.prometheus_url,
        replica_metrics_url=spec.replica_metrics_url,
    ) as sampler:
        if offsets is not None:
            load = run_http_trace(
                spec.url,
                spec.body_factory,
                offsets,
                headers=spec.headers,
                timeout_s=spec.timeout_s,
                concurrency_cap=spec.concurrency_cap,
                progress=progress,
            )
        else:
            assert rate is not None
            load = run_http_open(
                spec.url,
                spec.body_factory,
                rate=rate,
                duration_s=duration_s,
                headers=spec.headers,
                timeout_s=spec.timeout_s,
                concurrency_cap=spec.concurrency_cap,
                progress=progress,
            )
        system = sampler.stop()
    return SuiteResult(
        suite=suite,
        url=spec.url,
        response_cache=cache_mode(spec.headers),
        load=load,
        system=system,
        decisions=_latency_decisions(load, sla, max_err),
        breakdown=_breakdown_of(load, system),
        sla_p99_ms=sla,
        max_error_rate=max_err,
    )


# ---------------------------------------------------------------------------------------------------------
# benchmark and load
# ---------------------------------------------------------------------------------------------------------
def run_benchmark(
    spec: TargetSpec,
    *,
    policy: Policy,
    rate: float | None = None,
    duration_s: float | None = None,
    progress: ProgressFn | None = None,
) -> SuiteResult:
    """Fixed open-loop load (default: the gate's target QPS for the benchmark duration): the baseline figures."""
    rate = policy.rollout_gate.target_qps if rate is None else rate
    duration = duration_s if duration_s is not None else policy.test_suite.benchmark.duration_s
    check_rate(rate, duration)
    return _run_fixed(
        spec, "benchmark", rate=rate, duration_s=duration, offsets=None, policy=policy, progress=progress
    )


def run_load(
    spec: TargetSpec,
    *,
    policy: Policy,
    rate: float | None = None,
    duration_s: float | None = None,
    trace_offsets: Sequence[float] | None = None,
    progress: ProgressFn | None = None,
) -> SuiteResult:
    """The expected load for a duration: a constant-mean Poisson rate, or a replayed trace."""
    rate = policy.rollout_gate.target_qps if rate is None else rate
    duration = duration_s if duration_s is not None else policy.test_suite.load.duration_s
    if trace_offsets is None:
        check_rate(rate, duration)
    return _run_fixed(
        spec, "load", rate=rate, duration_s=duration, offsets=trace_offsets, policy=policy, progress=progress
    )


# ---------------------------------------------------------------------------------------------------------
# stress: the knee
# ---------------------------------------------------------------------------------------------------------
def _wait_drained(
    url: str, body: dict[str, Any], headers: dict[str, str], sla_ms: float, max_wait_s: float
) -> None:
    """After an overloaded step, wait until one request answers within the SLA so the backlog does not leak
    into the next step."""
    deadline = time.monotonic() + max_wait_s
    with httpx.Client(headers=headers, timeout=max_wait_s) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                client.post(url, json=body)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            if (time.perf_counter() - started) * 1000.0 <= sla_ms:
                return


def find_knee(
    url: str,
    body_factory: BodyFactory,
    sla_ms: float | None = None,
    *,
    policy: Policy,
    headers: dict[str, str] | None = None,
    max_error_rate: float | None = None,
    start_rps: float | None = None,
    max_rps: float | None = None,
    step_factor: float | None = None,
    step_duration_s: float | None = None,
    max_steps: int | None = None,
    time_budget_s: float | None = None,
    bisect_steps: int | None = None,
    concurrency_cap: int = DEFAULT_CONCURRENCY_CAP,
    timeout_s: float | None = None,
    pids: Sequence[int] = (),
    prometheus_url: str | None = None,
    on_step: Callable[[StressStep], None] | None = None,
) -> StressResult:
    """Highest open-loop rate whose P99 <= `sla_ms` and error rate <= max: geometric ramp, then bisection.

    Defaults come from `policy.test_suite.stress` and `policy.rollout_gate.sla_p99_ms`. The search stops at the
    first failing rate, at `max_rps`, after `max_steps` steps or when `time_budget_s` is spent, and says which.
    """
    cfg = policy.test_suite.stress
    sla = sla_ms if sla_ms is not None else policy.rollout_gate.sla_p99_ms
    max_err = max_error_rate if max_error_rate is not None else policy.test_suite.max_error_rate
    rate = float(start_rps if start_rps is not None else cfg.start_rps)
    top = float(max_rps if max_rps is not None else cfg.max_rps)
    factor = float(step_factor if step_factor is not None else cfg.step_factor)
    step_s = float(step_duration_s if step_duration_s is not None else cfg.step_duration_s)
    max_steps = max_steps if max_steps is not None else cfg.max_steps
    time_budget_s = time_budget_s if time_budget_s is not None else cfg.time_budget_s
    bisect_steps = bisect_steps if bisect_steps is not None else cfg.bisect_steps
    check_rate(rate, step_s)
    if factor <= 1.0:
        raise ValueError(
            f"stress step_factor {factor} must be > 1 so the ramp grows; policy test_suite.stress"
        )
    if top < rate:
        raise ValueError(f"stress max_rps {top} is below start_rps {rate}; raise max_rps")
    timeout = (
        timeout_s
        if timeout_s is not None
        else max(DEFAULT_TIMEOUT_S / 5, sla * STRESS_TIMEOUT_SLA_MULTIPLE / 1000)
    )
    hdrs = dict(headers or {})
    steps: list[StressStep] = []
    loads: dict[float, LoadResult] = {}
    started = time.monotonic()

    def attempt(r: float, phase: Literal["ramp", "confirm", "bisect"]) -> bool:
        duration = max(step_s, min(STRESS_MIN_REQUESTS_PER_STEP / r, STRESS_MAX_STEP_STRETCH * step_s))
        load = run_http_open(
            url,
            body_factory,
            rate=r,
            duration_s=duration,
            headers=hdrs,
            timeout_s=timeout,
            concurrency_cap=concurrency_cap,
        )
        p99 = load.percentiles["p99"]
        ok = math.isfinite(p99) and p99 <= sla and load.error_rate <= max_err
        reason = (
            f"P99 {p99:.1f} ms {'<=' if p99 <= sla else '>'} {sla:g} ms, error rate {load.error_rate:.2%} "
            f"{'<=' if load.error_rate <= max_err else '>'} {max_err:.2%}"
        )
        step = StressStep(
            r, p99, load.error_rate, load.throughput_rps, ok, phase, load.generator.likely_bottleneck, reason
        )
        steps.append(step)
        loads[r] = load
        if on_step is not None:
            on_step(step)
        if not ok:
            _wait_drained(url, body_factory(0), hdrs, sla, STRESS_DRAIN_MAX_S)
        return ok

    def out_of_budget() -> str | None:
        if len(steps) >= max_steps:
            return f"step limit {max_steps} reached"
        if time.monotonic() - started + step_s > time_budget_s:
            return f"time budget {time_budget_s:g} s spent"
        return None

    good: float | None = None
    bad: float | None = None
    stopped = ""
    with SystemSampler(pids, prometheus_url=prometheus_url) as sampler:
        while True:
            if (why := out_of_budget()) is not None:
                stopped = why
                break
            # A failing ramp step is tried once more after the drain: one noisy window on a shared box (a GC
            # pause, a neighbour's burst) must not be taken for the knee.
            if attempt(rate, "ramp") or (out_of_budget() is None and attempt(rate, "confirm")):
                good = rate
                if rate >= top:
                    stopped = f"max_rps {top:g} reached without breaking the SLA"
                    break
                rate = min(top, rate * factor)
            else:
                bad = rate
                break
        bisected = 0
        while bad is not None and bisected < bisect_steps:
            lo = good or 0.0
            if lo > 0 and (bad - lo) / lo <= STRESS_BISECT_TOLERANCE:
                break
            if (why := out_of_budget()) is not None:
                stopped = why
                break
            mid = (lo + bad) / 2 if lo > 0 else bad / 2
            if attempt(mid, "bisect"):
                good = mid
            else:
                bad = mid
            bisected += 1
        system = sampler.stop()
    if not stopped:
        stopped = (
            f"bracketed: {good or 0:.3g} req/s passes, {bad:.3g} req/s fails"
            if bad is not None
            else "search ended without a failing rate"
        )
    knee = good or 0.0
    best = loads.get(knee) if good is not None else (loads[steps[0].rate_rps] if steps else None)
    decisions = [
        Decision(
            "knee_rps",
            sla,
            knee,
            good is not None,
            (
                f"highest rate with P99 <= {sla:g} ms and error rate <= {max_err:.2%}: {knee:.3g} req/s ({stopped})"
                if good is not None
                else f"even {steps[0].rate_rps if steps else rate:g} req/s broke the SLA ({stopped}); lower start_rps"
            ),
        )
    ]
    if any(s.generator_bottleneck for s in steps):
        worst = max(steps, key=lambda s: s.rate_rps if s.generator_bottleneck else -1.0)
        decisions.append(
            Decision(
                "generator_not_bottleneck",
                None,
                worst.rate_rps,
                False,
                f"the load generator lagged at {worst.rate_rps:.3g} req/s: the knee may be the client's, not the server's",
            )
        )
    return StressResult(
        suite="stress",
        url=url,
        response_cache=cache_mode(hdrs),
        load=best,
        system=system,
        decisions=decisions,
        breakdown=_breakdown_of(best, system) if best is not None else None,
        sla_p99_ms=sla,
        max_error_rate=max_err,
        steps=steps,
        knee_rps=knee,
        stopped_reason=stopped,
    )


def run_stress(spec: TargetSpec, *, policy: Policy, **knobs: Any) -> StressResult:
    """The stress suite for a target spec (see `find_knee` for the knobs)."""
    return find_knee(
        spec.url,
        spec.body_factory,
        headers=spec.headers,
        concurrency_cap=spec.concurrency_cap,
        pids=spec.pids,
        prometheus_url=spec.prometheus_url,
        policy=policy,
        **knobs,
    )


# ---------------------------------------------------------------------------------------------------------
# stability: availability and leaks
# ---------------------------------------------------------------------------------------------------------
def slope_per_hour(series: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of (t seconds, value) in value units per hour, and the fit's R²."""
    t = np.array([p[0] for p in series], dtype=float)
    y = np.array([p[1] for p in series], dtype=float)
    if len(t) < 2 or np.ptp(t) == 0:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(t, y, 1)
    fitted = slope * t + intercept
    ss_res = float(np.sum((y - fitted) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return float(slope) * 3600.0, r2


def detect_leak(
    series: Sequence[tuple[float, int]],
    threshold_mb_per_h: float,
    *,
    name: str = "rss",
    warmup_fraction: float = STABILITY_WARMUP_FRACTION,
) -> Decision:
    """Leak verdict from a memory series (t seconds, bytes): fail when the post-warm-up slope > threshold."""
    if not series:
        return Decision(f"{name}_leak", threshold_mb_per_h, None, None, f"no {name} samples")
    t_end = series[-1][0]
    t_start = series[0][0]
    cut = t_start + (t_end - t_start) * warmup_fraction
    kept = [(t, b / 2**20) for t, b in series if t >= cut]
    if len(kept) < LEAK_MIN_SAMPLES:
        return Decision(
            f"{name}_leak",
            threshold_mb_per_h,
            None,
            None,
            f"only {len(kept)} {name} samples after warm-up (need {LEAK_MIN_SAMPLES}); run longer or sample faster",
        )
    slope, r2 = slope_per_hour(kept)
    grown = kept[-1][1] - kept[0][1]
    leak = slope > threshold_mb_per_h
    reason = (
        f"{name} slope {slope:+.1f} MB/h (R² {r2:.2f}, {grown:+.1f} MB over {kept[-1][0] - kept[0][0]:.0f} s after "
        f"warm-up) {'>' if leak else '<='} threshold {threshold_mb_per_h:g} MB/h: "
        + ("memory grows under steady load, likely a leak" if leak else "no leak")
    )
    return Decision(f"{name}_leak", threshold_mb_per_h, slope, not leak, reason)


def run_stability(
    spec: TargetSpec,
    *,
    rate: float | None = None,
    duration_s: float | None = None,
    policy: Policy,
    leak_threshold_mb_per_h: float | None = None,
    progress: ProgressFn | None = None,
) -> StabilityResult:
    """Sustained open-loop load; availability vs the gate's stability minimum; RSS and GPU memory leak verdicts."""
    rate = policy.rollout_gate.target_qps if rate is None else rate
    duration = duration_s if duration_s is not None else policy.test_suite.stability.duration_s
    check_rate(rate, duration)
    threshold = (
        leak_threshold_mb_per_h
        if leak_threshold_mb_per_h is not None
        else policy.test_suite.stability.leak_slope_mb_per_h
    )
    if not spec.pids and not spec.replica_metrics_url:
        raise ValueError(
            "stability needs the serving processes' memory: on this host their pids (--pid, or the Ray Serve "
            "replicas found by replica_pids()), elsewhere a metrics URL (a Ray node's /metrics or a Prometheus "
            "scraping the nodes: --metrics-url / metrics_url=)"
        )
    base = _run_fixed(
        spec, "stability", rate=rate, duration_s=duration, offsets=None, policy=policy, progress=progress
    )
    assert base.load is not None and base.system is not None
    availability = base.load.ok / base.load.scheduled if base.load.scheduled else 0.0
    minimum = policy.rollout_gate.items["stability"].minimum
    decisions = [
        _check("availability", availability, minimum, at_most=False),
        *base.decisions,
        detect_leak(base.system.rss_series(), threshold, name="rss"),
    ]
    gpu_series = base.system.gpu_memory_series()
    gpu_slope = None
    if gpu_series:
        gpu_verdict = detect_leak(gpu_series, threshold, name="gpu_memory")
        gpu_slope = gpu_verdict.observed
    else:
        gpu_verdict = Decision("gpu_memory_leak", threshold, None, None, f"GPU {base.system.gpu}")
    decisions.append(gpu_verdict)
    rss = decisions[-2]
    return StabilityResult(
        suite="stability",
        url=spec.url,
        response_cache=base.response_cache,
        load=base.load,
        system=base.system,
        decisions=decisions,
        breakdown=base.breakdown,
        sla_p99_ms=base.sla_p99_ms,
        max_error_rate=base.max_error_rate,
        availability=availability,
        rss_slope_mb_per_h=rss.observed,
        gpu_slope_mb_per_h=gpu_slope,
    )


def render_markdown(result: SuiteResult) -> str:
    """The decision table of one suite run (and the stress search's steps)."""
    text = decisions_markdown(result.decisions, title=f"{result.suite} — {result.url}")
    text += f"\nResponse cache: {result.response_cache}.\n"
    if isinstance(result, StressResult) and result.steps:
        rows = [
            {
                "step": s.phase,
                "rate (req/s)": f"{s.rate_rps:.3g}",
                "P99 (ms)": f"{s.p99_ms:.1f}",
                "error rate": f"{s.error_rate:.2%}",
                "throughput": f"{s.throughput_rps:.1f}",
                "ok": s.ok,
            }
            for s in result.steps
        ]
        text += "\n" + markdown_table(rows)
    return text


def cache_mode(headers: dict[str, str]) -> str:
    """Whether the requests let a response cache answer (the figures are then the cache's, not the model's)."""
    directives = {d.strip().lower() for d in headers.get("Cache-Control", "").split(",")}
    return "bypassed (Cache-Control: no-cache)" if {"no-cache", "no-store"} & directives else "allowed"


def embeddings_target(
    url: str,
    model: str,
    api_key: str | None,
    *,
    use_cache: bool = False,
    path: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    pids: Sequence[int] = (),
    replica_metrics_url: str | None = None,
) -> TargetSpec:
    """One corpus sentence per request to the embeddings route, keyed. Unless `use_cache`, every request asks for
    a fresh answer (`Cache-Control: no-cache`): the load cycles through a few hundred sentences, and a response
    cache would answer nearly all of them, so the suite would measure the cache, not the model."""
    headers = auth_headers(api_key)
    if not use_cache:
        headers["Cache-Control"] = "no-cache"
    return TargetSpec(
        endpoint_url(url, path or DEFAULT_ENDPOINT_PATH),
        embeddings_body_factory(model),
        headers=headers,
        timeout_s=timeout_s,
        pids=list(pids),
        replica_metrics_url=replica_metrics_url,
    )


def example_inputs(model: str, meta: dict[str, Any], n: int) -> list[str] | np.ndarray:
    """The zoo's example inputs when it knows the model, else inputs shaped from the endpoint's metadata."""
    try:
        from serving.zoo import get_model

        return get_model(model).example_inputs(n)
    except (ImportError, ValueError):
        pass
    if meta.get("kind") == "text":
        return [f"example sentence number {i} for the gate" for i in range(n)]
    row = [d if d and d > 0 else 1 for d in (meta.get("input_shape") or [None, 1])[1:]]
    return np.random.default_rng(0).random((n, *row), dtype=np.float32)


def oip_body_factory(model: str, meta: dict[str, Any], pool: int = 64) -> Callable[[int], dict[str, Any]]:
    """Batch-1 OIP bodies cycling over `pool` example inputs, for the load generator."""
    examples = example_inputs(model, meta, pool)
    bodies = [infer_payload(examples[i : i + 1]) for i in range(len(examples))]
    return lambda i: bodies[i % len(bodies)]


def model_target(
    url: str,
    model: str,
    api_key: str | None,
    meta: dict[str, Any],
    *,
    use_cache: bool = False,
    pids: Sequence[int] = (),
    replica_metrics_url: str | None = None,
) -> TargetSpec:
    """The load a suite drives at an inferops endpoint for `model`, from its metadata: embeddings requests for a
    text model, batch-1 OIP inference for a tensor model (keyed; `no-cache` unless `use_cache`)."""
    if meta.get("kind") == "text":
        # `url` is an inferops base URL, route prefix included (a gate's or a trial's app): the route goes after it
        return embeddings_target(
            url.rstrip("/") + DEFAULT_ENDPOINT_PATH,
            model,
            api_key,
            use_cache=use_cache,
            pids=pids,
            replica_metrics_url=replica_metrics_url,
        )
    headers = auth_headers(api_key)
    if not use_cache:
        headers["Cache-Control"] = "no-cache"
    return TargetSpec(
        url.rstrip("/") + routes.INFER.path(model),
        oip_body_factory(model, meta),
        headers=headers,
        pids=list(pids),
        replica_metrics_url=replica_metrics_url,
    )


def step_line(step: StressStep) -> str:
    """One stress step as a progress line."""
    return f"stress {step.phase:6} {step.rate_rps:7.3g} req/s: {'meets' if step.ok else 'breaks'} the SLA ({step.reason})"


def progress_every(share: float, say: Callable[[str], Any], label: str) -> ProgressFn:
    """A progress callback that says how far a run is every `share` of it (a line every few seconds, not a flood)."""
    last = [-1.0]

    def report(done: float) -> None:
        if done - last[0] >= share or done >= 1.0 > last[0]:
            last[0] = done
            say(f"{label}: {done:.0%}")

    return report


def run_suite(
    spec: TargetSpec,
    suite: SuiteName,
    policy: Policy,
    *,
    rate: float | None = None,
    duration_s: float | None = None,
    stress_budget_s: float | None = None,
    say: Callable[[str], Any] | None = None,
) -> SuiteResult:
    """One of the four suites by name (a stress search may get a shorter wall-time budget than the policy's, `rate`
    as the first rate of its ramp and `duration_s` as each step's length); `say` gets a line per stress step, or
    every quarter of a fixed-rate run."""
    progress = progress_every(0.25, say, suite) if say else None
    if suite == "benchmark":
        return run_benchmark(spec, policy=policy, rate=rate, duration_s=duration_s, progress=progress)
    if suite == "load":
        return run_load(spec, policy=policy, rate=rate, duration_s=duration_s, progress=progress)
    if suite == "stress":
        budget: dict[str, float] = {"time_budget_s": stress_budget_s} if stress_budget_s is not None else {}
        if rate is not None:
            budget["start_rps"] = rate
        if duration_s is not None:
            budget["step_duration_s"] = duration_s
        on_step = (lambda step: say(step_line(step))) if say else None
        return run_stress(spec, policy=policy, on_step=on_step, **budget)
    return run_stability(spec, policy=policy, rate=rate, duration_s=duration_s, progress=progress)
