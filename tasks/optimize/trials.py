"""Timing candidates in process: each one built (or reused), loaded, scored by the zoo's evaluator and timed over
repeated rounds on the workload, as one engine or as replica processes started together."""

from __future__ import annotations

import multiprocessing
import queue
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving.cache import ResponseCache, cached_batch_infer
from serving.engines import load_engine
from serving.variants import ensure_variant
from tasks.measure.bottlenecks import Breakdown, breakdown
from tasks.optimize.candidates import Candidate, variant_knobs
from tasks.optimize.evaluation import BatchTiming, measure_batches
from tasks.policy import Optimization

# Calls per repeat and items cycled: enough for a stable median on 2 cores, few enough to keep a cycle short.
TRIAL_ITEMS = 128
TRIAL_MIN_CALLS = 30
# Each repeat lasts at least this long, so sub-millisecond models are timed over thousands of calls, not noise.
TRIAL_MIN_SECONDS = 0.5
# A replica process that has not reported within this long is stuck (model load + one timed round take seconds).
REPLICA_TIMEOUT_S = 300.0
# How often the parent checks on replica processes, and how long it lets one finish before killing it.
REPLICA_POLL_S = 1.0
REPLICA_JOIN_S = 10.0


@dataclass(frozen=True)
class Trial:
    """Repeated measurements of one configuration: throughput (items/s) and P99 latency (ms) per repeat."""

    throughput: tuple[float, ...]
    p99_ms: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.throughput or len(self.throughput) != len(self.p99_ms):
            raise ValueError("a trial needs one or more repeats, each with a throughput and a P99")

    @property
    def median_throughput(self) -> float:
        return statistics.median(self.throughput)

    @property
    def median_p99(self) -> float:
        return statistics.median(self.p99_ms)

    @property
    def spread(self) -> float:
        """Relative run-to-run spread of throughput: (max - min) / median."""
        return (max(self.throughput) - min(self.throughput)) / self.median_throughput

    @property
    def p99_spread(self) -> float:
        return (max(self.p99_ms) - min(self.p99_ms)) / self.median_p99 if self.median_p99 > 0 else 0.0


@dataclass
class Measured:
    """A candidate's measurement: repeated throughput/P99, the evaluator's metric and what ran."""

    trial: Trial
    metric: str
    value: float
    worst_case: float | None
    provider: str
    sha256: str
    path: Path
    manifest: dict[str, Any]
    load_s: float
    details: dict[str, Any] = field(default_factory=dict)


def measure(
    model: str,
    candidate: Candidate,
    repeats: int,
    policy: Optimization,
    workload: Sequence[Any] | np.ndarray | None = None,
) -> Measured:
    """Build (or reuse) the variant, load it, score it with the zoo's evaluator, and time `repeats` runs on the
    workload (the model's example inputs when none is given).

    A cache candidate is timed on one pass over the workload in request order from an empty cache each repeat,
    so its hit rate is the workload's (cold start, the conservative figure); replicas run as separate processes
    started together, each with its own engine, as Serve replicas do.
    """
    artifact = ensure_variant(model, candidate.variant, **variant_knobs(candidate.variant, policy))
    t0 = time.perf_counter()
    engine = load_engine(
        artifact.path,
        expected_sha256=artifact.sha256,
        intra_op_threads=candidate.intra_op_threads,
        allow_spinning=False,
    )
    load_s = time.perf_counter() - t0
    spec = engine.spec
    inputs = workload if workload is not None else spec.example_inputs(TRIAL_ITEMS)
    cache = ResponseCache(candidate.cache_entries) if candidate.cache_entries else None
    cap = policy.cache_pass_max_requests
    if cache is not None and len(inputs) > cap:
        inputs = inputs[:cap]  # the first requests of the log, in order: a bounded cold pass
    infer = cached_batch_infer(engine.infer, cache, artifact.sha256) if cache is not None else engine.infer
    evaluation = spec.evaluate(_CachedEngine(engine, infer) if cache is not None else engine)
    probe = measure_batches(engine.infer, inputs[: candidate.batch * 3], candidate.batch, 3)
    per_call_s = candidate.batch / probe.items_per_s
    calls = max(TRIAL_MIN_CALLS, int(TRIAL_MIN_SECONDS / per_call_s) + 1)
    if cache is None and len(inputs) > candidate.batch * calls:
        # Without a cache a prefix of the log (in request order) measures the same mix in less time.
        inputs = inputs[: candidate.batch * calls]
    details: dict[str, Any] = dict(evaluation.details)
    throughput: list[float] = []
    p99: list[float] = []
    if candidate.replicas > 1:
        throughput, p99, hit_rates = _measure_replicas(
            artifact.path, artifact.sha256, candidate, inputs, calls, repeats
        )
    else:
        hit_rates = []
        for _ in range(repeats):
            timing, hits, lookups = _timed_round(infer, cache, inputs, candidate.batch, calls)
            throughput.append(timing.items_per_s)
            p99.append(timing.p99_ms)
            if cache is not None:
                hit_rates.append(hits / max(1, lookups))
    if hit_rates:
        details["cache_hit_rate"] = statistics.median(hit_rates)
        details["workload_requests"] = len(inputs)
    worst = evaluation.details.get("fidelity_min_cosine")
    return Measured(
        Trial(tuple(throughput), tuple(p99)),
        evaluation.metric,
        evaluation.value,
        float(worst) if worst is not None else None,
        engine.provider,
        artifact.sha256,
        artifact.path,
        artifact.manifest,
        load_s,
        details,
    )


class _CachedEngine:
    """The engine as the evaluator sees it when a response cache sits in front (answers must not change)."""

    def __init__(self, engine: Any, infer: Callable[[Any], np.ndarray]) -> None:
        self._engine, self.infer = engine, infer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _timed_round(
    infer: Callable[[Any], Any],
    cache: ResponseCache | None,
    inputs: Sequence[Any] | np.ndarray,
    batch: int,
    calls: int,
) -> tuple[BatchTiming, int, int]:
    """One timed round and the cache's hits and lookups in it: without a cache, `calls` calls cycling the inputs;
    with one, a single pass that covers each request once (the last batch may be short) from an empty cache."""
    if cache is None:
        return measure_batches(infer, inputs, batch, calls), 0, 0
    timing = measure_batches(infer, inputs, batch, max(1, len(inputs) // batch), before_timing=cache.clear)
    stats = cache.stats()
    return timing, stats.hits, stats.hits + stats.misses


def _measure_replicas(
    path: Path,
    sha256: str,
    candidate: Candidate,
    inputs: Sequence[Any] | np.ndarray,
    calls: int,
    repeats: int,
) -> tuple[list[float], list[float], list[float]]:
    """Time `candidate.replicas` engine processes running at once; throughput is their sum over the wall time.

    With a cache, each replica keeps its own (as Serve replicas do) and gets every n-th request of the log, as a
    router spreading load evenly would send them; the hit rate is all replicas' hits over all requests.
    """
    ctx = multiprocessing.get_context("spawn")  # a fork of a process holding ORT threads is not safe
    barrier = ctx.Barrier(candidate.replicas)
    results = ctx.Queue()
    workers = []
    for k in range(candidate.replicas):
        share = inputs[k :: candidate.replicas] if candidate.cache_entries else inputs
        args = (str(path), sha256, candidate, share, calls, repeats, barrier, results)
        workers.append(ctx.Process(target=_replica_worker, args=args, daemon=True))
    for w in workers:
        w.start()
    rounds: dict[int, list[tuple[float, ...]]] = {}
    deadline = time.monotonic() + REPLICA_TIMEOUT_S * repeats
    try:
        received = 0
        while received < candidate.replicas * repeats:
            try:
                message = results.get(timeout=REPLICA_POLL_S)
            except queue.Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(
                        f"a replica process exited with code {dead[0]} before reporting"
                    ) from None
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"replica processes did not report within {REPLICA_TIMEOUT_S * repeats:.0f} s"
                    ) from None
                continue
            if isinstance(message, str):
                raise RuntimeError(f"replica process failed: {message}")
            rounds.setdefault(message[0], []).append(message[1:])
            received += 1
    finally:
        for w in workers:
            w.join(timeout=REPLICA_JOIN_S)
            if w.is_alive():
                w.kill()
    throughput: list[float] = []
    p99: list[float] = []
    hit_rates: list[float] = []
    for r in sorted(rounds):
        items, begin, end, worst_p99, hits, lookups = zip(*rounds[r], strict=True)
        throughput.append(sum(items) / (max(end) - min(begin)))
        p99.append(max(worst_p99))
        if candidate.cache_entries:
            hit_rates.append(sum(hits) / max(1.0, sum(lookups)))
    return throughput, p99, hit_rates


def _replica_worker(
    path: str,
    sha256: str,
    candidate: Candidate,
    inputs: Any,
    calls: int,
    repeats: int,
    barrier: Any,
    results: Any,
) -> None:
    """One replica process: load, warm up, then `repeats` timed rounds started together with the others."""
    try:
        engine = load_engine(
            path, expected_sha256=sha256, intra_op_threads=candidate.intra_op_threads, allow_spinning=False
        )
        cache = ResponseCache(candidate.cache_entries) if candidate.cache_entries else None
        infer = cached_batch_infer(engine.infer, cache, sha256) if cache is not None else engine.infer
        measure_batches(engine.infer, inputs[: candidate.batch * 3], candidate.batch, 3)  # warm-up
        for r in range(repeats):
            barrier.wait(timeout=REPLICA_TIMEOUT_S)
            timing, hits, lookups = _timed_round(infer, cache, inputs, candidate.batch, calls)
            items = timing.items_per_s * (timing.ended - timing.started)
            results.put((r, items, timing.started, timing.ended, timing.p99_ms, hits, lookups))
    except Exception as exc:  # reported to the parent, which rejects the candidate with this reason
        results.put(f"{type(exc).__name__}: {exc}")


def inprocess_timing(model: str, variant: str, threads: int) -> dict[str, float]:
    """Per-request time split (tokenize / compute) at batch 1 and the model's load time, for the bottleneck step."""
    artifact = ensure_variant(model, variant)
    t0 = time.perf_counter()
    engine = load_engine(
        artifact.path, expected_sha256=artifact.sha256, intra_op_threads=threads, allow_spinning=False
    )
    load_s = time.perf_counter() - t0
    inputs = engine.spec.example_inputs(TRIAL_ITEMS)
    totals = {"tokenize": 0.0, "compute": 0.0}
    start = time.perf_counter()
    for i in range(len(inputs)):
        item = inputs[i : i + 1]
        _, phases = engine.infer_timed(item)
        for key in totals:
            totals[key] += phases.get(key, 0.0)
    wall_ms = (time.perf_counter() - start) * 1e3 / len(inputs)
    return {
        "client_ms": wall_ms,
        "tokenize_ms": totals["tokenize"] * 1e3 / len(inputs),
        "compute_ms": totals["compute"] * 1e3 / len(inputs),
        "model_load_s": load_s,
    }


def bottlenecks_in_process(model: str, variant: str, threads: int) -> Breakdown:
    """Where a request's time goes for the served configuration (tokenize / compute / load), in process."""
    timing = inprocess_timing(model, variant, threads)
    server = {"tokenize": timing["tokenize_ms"], "compute": timing["compute_ms"]}
    return breakdown(timing["client_ms"], server, model_load_s=timing["model_load_s"])
