"""The phased rollout gate's measured checks (SPEC §1): functional, performance, stability and security.

Each item talks to a live endpoint over HTTP and returns an `ItemResult` whose checks each carry `check`,
`threshold`, `observed`, `passed` and `reason`. A check that cannot apply on this host (GPU utilisation without
a GPU) has `passed=None` and is left out of the item's share, and its reason says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from serving import routes
from serving.client import InferopsClient, auth_headers, excerpt, infer_payload, oip_rows
from serving.config import EndpointLimits
from serving.gpu import gpu_status
from serving.network import is_loopback
from serving.resolver import resolve, version_uri
from tasks.decision import Decision, applicable, decisions_markdown, share_passed
from tasks.measure.loadgen import LoadResult, ProgressFn, run_http_open
from tasks.measure.suites import (
    STABILITY_WARMUP_FRACTION,
    STRESS_TIMEOUT_SLA_MULTIPLE,
    TargetSpec,
    detect_leak,
    example_inputs,
    oip_body_factory,
)
from tasks.measure.system_metrics import DEFAULT_INTERVAL_S, RAY_REPLICA_MARKER, SystemSampler, SystemSummary
from tasks.records.registry import VersionRef
from tasks.release import hostile_inputs
from tasks.release.gate import ItemResult
from tasks.release.rollout_risk import Observation

# Output sanity: an L2-normalised embedding has norm 1 up to float32 rounding.
EMBED_NORM_TOLERANCE = 1e-3
# Batch sizes the functional item sends to every model (SPEC §1: "several batch sizes").
FUNCTIONAL_BATCH_SIZES = (1, 8, 32)
# Requests in flight at once across all served models for the multi-model concurrency check.
CONCURRENT_REQUESTS = 16
# Memory samples over a stability run, whatever its length (the leak fit needs several after warm-up).
MEMORY_SAMPLES = 40


def check(name: str, threshold: object, observed: object, passed: bool | None, reason: str) -> Decision:
    """One row of evidence (`passed=None`: the check cannot apply on this host and is left out of the share)."""
    return Decision(name, threshold, observed, passed, reason)


# ---- request payloads and output sanity ------------------------------------------------------------------------


def output_sanity(kind: str, n: int, rows: np.ndarray) -> tuple[bool, str]:
    """Right batch size, all values finite and, for embeddings, unit L2 norm."""
    if rows.ndim < 2 or rows.shape[0] != n:
        return False, f"output shape {list(rows.shape)} does not have {n} rows"
    if not np.all(np.isfinite(rows)):
        return False, "output holds NaN or infinite values"
    if kind == "text":
        norms = np.linalg.norm(rows.reshape(n, -1), axis=1)
        worst = float(np.max(np.abs(norms - 1.0)))
        if worst > EMBED_NORM_TOLERANCE:
            return False, f"embedding norms off 1 by up to {worst:.2e} (> {EMBED_NORM_TOLERANCE:.0e})"
    return True, f"shape {list(rows.shape)}, finite" + (", unit-norm" if kind == "text" else "")


def infer_once(client: InferopsClient, model: str, meta: dict[str, Any], n: int) -> tuple[bool, str]:
    """One OIP inference of batch `n` with output sanity; never raises."""
    try:
        response = client.call(routes.INFER, model, json=infer_payload(example_inputs(model, meta, n)))
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}: {excerpt(response.text)}"
        return output_sanity(str(meta.get("kind")), n, oip_rows(response.json()))
    except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def embeddings_once(client: InferopsClient, model: str, meta: dict[str, Any], n: int) -> tuple[bool, str]:
    """One OpenAI-compatible embeddings call with output sanity; never raises."""
    try:
        texts = example_inputs(model, meta, n)
        response = client.call(routes.EMBEDDINGS, json={"model": model, "input": list(texts)})
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}: {excerpt(response.text)}"
        rows = np.asarray([d["embedding"] for d in response.json()["data"]], dtype=np.float32)
        return output_sanity("text", n, rows)
    except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


# ---- functional --------------------------------------------------------------------------------------------------


def functional_item(
    client: InferopsClient,
    models: Sequence[str],
    *,
    model_load_rate_min: float,
    batch_sizes: Sequence[int] = FUNCTIONAL_BATCH_SIZES,
) -> ItemResult:
    """Inference over every model and batch size, multi-model concurrency, and the model load rate."""
    checks: list[Decision] = []
    try:
        served = client.models()
    except (httpx.HTTPError, ValueError) as exc:
        served = []
        checks.append(
            check(
                "list served models",
                f"GET {routes.SERVER.template} answers",
                f"{type(exc).__name__}",
                False,
                excerpt(str(exc)),
            )
        )
    wanted = list(dict.fromkeys([*models, *served]))
    loaded: dict[str, dict[str, Any]] = {}
    not_loaded: list[str] = []
    for model in wanted:
        try:
            ready = client.call(routes.MODEL_READY, model)
            if ready.status_code == 200 and ready.json().get("ready"):
                loaded[model] = client.metadata(model)
                continue
            not_loaded.append(f"{model} (ready: HTTP {ready.status_code})")
        except (httpx.HTTPError, ValueError) as exc:
            not_loaded.append(f"{model} ({type(exc).__name__})")
    rate = len(loaded) / len(wanted) if wanted else 0.0
    checks.append(
        check(
            "model load rate",
            model_load_rate_min,
            round(rate, 4),
            rate >= model_load_rate_min and bool(wanted),
            f"{len(loaded)}/{len(wanted)} models ready"
            + (f"; not loaded: {', '.join(not_loaded)}" if not_loaded else ""),
        )
    )
    for model, meta in loaded.items():
        for n in batch_sizes:
            ok, why = infer_once(client, model, meta, n)
            checks.append(
                check(f"infer {model} batch={n}", "HTTP 200 + sane output", "ok" if ok else "failed", ok, why)
            )
        if meta.get("kind") == "text":
            n = batch_sizes[len(batch_sizes) // 2]
            ok, why = embeddings_once(client, model, meta, n)
            checks.append(
                check(
                    f"{routes.EMBEDDINGS.template} {model} batch={n}",
                    "HTTP 200 + sane output",
                    "ok" if ok else "failed",
                    ok,
                    why,
                )
            )
    if loaded:
        checks.append(concurrency_check(client, loaded))
    return ItemResult("functional", share_passed(checks), checks)


def concurrency_check(client: InferopsClient, loaded: dict[str, dict[str, Any]]) -> Decision:
    """Requests to every loaded model at once, round-robin; all must succeed with sane output."""
    names = list(loaded)
    jobs = [names[i % len(names)] for i in range(max(CONCURRENT_REQUESTS, len(names)))]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda m: infer_once(client, m, loaded[m], 1), jobs))
    failures = [f"{m}: {why}" for m, (ok, why) in zip(jobs, results, strict=True) if not ok]
    scope = f"{len(jobs)} concurrent requests over {len(names)} model(s) ({', '.join(names)})"
    if len(names) == 1:
        scope += "; only one model is served, so concurrency is within that model"
    return check(
        "multi-model concurrency",
        f"{len(jobs)}/{len(jobs)} ok",
        f"{len(jobs) - len(failures)}/{len(jobs)} ok",
        not failures,
        scope if not failures else f"{scope}; failures: {'; '.join(failures[:3])}",
    )


# ---- load runs and the serving processes ---------------------------------------------------------------------


def serving_pids(url: str) -> list[int]:
    """Pids serving `url` on this host: the listener and, behind a Ray ingress, the replicas of its cluster.

    Replicas are found under the listener's raylet, so another Ray cluster on the same host is not counted.
    """
    import psutil

    if not is_loopback(url):
        return []
    port = urlsplit(url).port or 80
    listeners = {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == "LISTEN" and c.laddr and c.laddr.port == port and c.pid
    }
    pids = set(listeners)
    for pid in listeners:
        try:
            raylet = next((p for p in psutil.Process(pid).parents() if p.name() == "raylet"), None)
            if raylet is None:
                continue
            for child in raylet.children(recursive=True):
                if RAY_REPLICA_MARKER in " ".join(child.cmdline()[:1]) or RAY_REPLICA_MARKER in child.name():
                    pids.add(child.pid)
        except psutil.Error:
            continue
    return sorted(pids)


def target_spec(
    client: InferopsClient, model: str, meta: dict[str, Any], sla_p99_ms: float, *, with_pids: bool
) -> TargetSpec:
    """What the measurement suites drive: OIP inference on `model`, keyed, with the serving pids to watch."""
    return TargetSpec(
        url=client.url + routes.INFER.path(model),
        body_factory=oip_body_factory(model, meta),
        headers=auth_headers(client.api_key),
        timeout_s=max(client.timeout_s, sla_p99_ms * STRESS_TIMEOUT_SLA_MULTIPLE / 1000.0),
        pids=serving_pids(client.url) if with_pids else [],
    )


def constant_run(
    spec: TargetSpec, rate_rps: float, duration_s: float, progress: ProgressFn | None = None
) -> tuple[LoadResult, SystemSummary]:
    """Open-loop load at a constant rate while sampling the serving processes.

    Constant, not Poisson, arrivals: the throughput target needs exactly rate x duration requests offered,
    or a short gate run's Poisson count alone would decide it.
    """
    with SystemSampler(spec.pids, interval_s=spec.sample_interval_s) as sampler:
        load = run_http_open(
            spec.url,
            spec.body_factory,
            rate=rate_rps,
            duration_s=duration_s,
            arrivals="constant",
            headers=spec.headers,
            timeout_s=spec.timeout_s,
            concurrency_cap=spec.concurrency_cap,
            progress=progress,
        )
        system = sampler.stop()
    return load, system


def served_rate(load: LoadResult) -> float:
    """Completions per second over the window in which they could complete.

    A server that keeps up finishes the last request one latency after the schedule ends; that latency is
    taken off the wall time so short runs are not biased low. A server that falls behind still stretches
    the window and shows a lower rate.
    """
    hist = load.ok_histogram
    fastest_s = hist.get_min_value() / 1e6 if hist.get_total_count() else 0.0
    window = max(load.duration_s - fastest_s, 1e-9)
    return load.ok / window


def utilisation(system: SystemSummary | None) -> tuple[float, str]:
    """The busiest resource's utilisation over a run (0-1): GPU where one was sampled, else host CPU."""
    if system is None:
        return 0.0, "not observed"
    metrics = system.metrics()
    if "gpu_utilisation_percent_mean" in metrics:
        return metrics["gpu_utilisation_percent_mean"] / 100.0, "GPU"
    return system.host_cpu_percent_mean / 100.0, "host CPU"


def observe(
    client: InferopsClient, model: str, *, rate_rps: float, duration_s: float, sla_p99_ms: float
) -> tuple[Observation, LoadResult, SystemSummary]:
    """A window of open-loop load at `rate_rps`: P99, throughput, error rate and utilisation as an Observation."""
    meta = client.metadata(model)
    spec = target_spec(client, model, meta, sla_p99_ms, with_pids=True)
    load, system = constant_run(spec, rate_rps, duration_s)
    util, _ = utilisation(system) if is_loopback(client.url) else (0.0, "remote")
    p99 = load.percentiles["p99"]
    return (
        Observation(p99 if math.isfinite(p99) else math.inf, served_rate(load), load.error_rate, util),
        load,
        system,
    )


# ---- performance -------------------------------------------------------------------------------------------------


def performance_item(
    client: InferopsClient,
    model: str,
    *,
    sla_p99_ms: float,
    target_qps: float,
    duration_s: float,
    max_error_rate: float,
    utilisation_ceiling: float,
    warmup_s: float,
) -> tuple[ItemResult, Observation]:
    """Share of targets met at the target rate: P99 < SLA, throughput, GPU utilisation where a GPU exists.

    Also returns the run as an `Observation`: the baseline that rollout risk control compares against.
    """
    meta = client.metadata(model)
    infer_once(client, model, meta, 1)
    if warmup_s > 0:  # 0 in the policy: no warm-up
        constant_run(target_spec(client, model, meta, sla_p99_ms, with_pids=False), target_qps, warmup_s)
    baseline, load, system = observe(
        client, model, rate_rps=target_qps, duration_s=duration_s, sla_p99_ms=sla_p99_ms
    )
    p99 = baseline.p99_ms
    pct = load.percentiles
    checks = [
        check(
            f"P99 at {target_qps:g} req/s (open loop)",
            sla_p99_ms,
            round(p99, 2),
            p99 < sla_p99_ms,
            f"P99 {p99:.1f} ms {'<' if p99 < sla_p99_ms else '>='} SLA {sla_p99_ms:g} ms over {load.sent} requests "
            f"(P50 {pct['p50']:.1f} ms)",
        )
    ]
    floor = target_qps * (1.0 - max_error_rate)
    checks.append(
        check(
            "throughput at target rate",
            round(floor, 3),
            round(baseline.throughput_rps, 3),
            baseline.throughput_rps >= floor,
            f"{load.ok} of {load.scheduled} answered OK, {baseline.throughput_rps:.2f} req/s served; "
            f"needs the target {target_qps:g} req/s less the {max_error_rate:.0%} error allowance"
            + (f"; statuses {load.status_counts}" if load.ok < load.scheduled else ""),
        )
    )
    gpu_ok, gpu_why = gpu_status()
    if gpu_ok and is_loopback(client.url) and system.gpu_samples:
        util, _ = utilisation(system)
        checks.append(
            check(
                "GPU utilisation at target rate",
                utilisation_ceiling,
                round(util, 3),
                util <= utilisation_ceiling,
                f"mean GPU utilisation {util:.0%} vs the scale-out level {utilisation_ceiling:.0%}",
            )
        )
    else:
        why = (
            gpu_why if is_loopback(client.url) else "endpoint is remote, its GPU is not observable from here"
        )
        checks.append(
            check(
                "GPU utilisation at target rate",
                utilisation_ceiling,
                None,
                None,
                f"not applicable: GPU {why}; excluded from the share",
            )
        )
    return ItemResult("performance", share_passed(checks), checks), baseline


# ---- stability ---------------------------------------------------------------------------------------------------


def growth_mb(series: Sequence[tuple[float, int]]) -> float:
    """Memory growth (MB) over the post-warm-up part of a (t, bytes) series."""
    if not series:
        return 0.0
    cut = series[0][0] + (series[-1][0] - series[0][0]) * STABILITY_WARMUP_FRACTION
    kept = [b for t, b in series if t >= cut]
    return (kept[-1] - kept[0]) / 2**20 if len(kept) >= 2 else 0.0


def leak_check(
    name: str, series: Sequence[tuple[float, int]], threshold_mb_per_h: float, min_growth_mb: float
) -> Decision:
    """The suites' leak detector, plus a floor: on a run of seconds, allocator noise is not a leak."""
    verdict = detect_leak(series, threshold_mb_per_h, name=name)
    if verdict.passed is None:
        return check(f"{name} leak", threshold_mb_per_h, None, None, f"not applicable: {verdict.reason}")
    grown = growth_mb(series)
    leaking = verdict.passed is False and grown > min_growth_mb
    reason = verdict.reason
    if verdict.passed is False and not leaking:
        reason += (
            f"; but it grew only {grown:.1f} MB (<= {min_growth_mb:g} MB floor): warm-up noise, not a leak"
        )
    observed = round(float(verdict.observed), 2) if verdict.observed is not None else None
    return check(f"{name} leak", threshold_mb_per_h, observed, not leaking, reason)


def stability_item(
    client: InferopsClient,
    model: str,
    *,
    duration_s: float,
    rate_rps: float,
    availability_min: float,
    leak_slope_mb_per_h: float,
    leak_min_growth_mb: float,
    sla_p99_ms: float,
    progress: ProgressFn | None = None,
) -> ItemResult:
    """Availability over a continuous open-loop run, and memory-leak verdicts from RSS (and GPU memory) slopes.

    Observed = availability x share of applicable leak checks passed: a leaking service is not stable however
    available it is during the run.
    """
    meta = client.metadata(model)
    spec = target_spec(client, model, meta, sla_p99_ms, with_pids=True)
    # enough samples for the leak fit however short the run (the suites need >= 4 after warm-up)
    spec.sample_interval_s = min(DEFAULT_INTERVAL_S, duration_s / MEMORY_SAMPLES)
    load, system = constant_run(spec, rate_rps, duration_s, progress)
    availability = load.ok / load.scheduled if load.scheduled else 0.0
    checks: list[Decision] = [
        check(
            "availability",
            availability_min,
            round(availability, 5),
            availability >= availability_min,
            f"{load.ok}/{load.scheduled} requests OK over {load.duration_s:.1f} s at {rate_rps:g} req/s"
            + (f"; statuses {load.status_counts}" if load.ok < load.scheduled else ""),
        )
    ]
    if spec.pids:
        leaks = [
            leak_check(
                f"RSS of {len(spec.pids)} serving process(es)",
                system.rss_series(),
                leak_slope_mb_per_h,
                leak_min_growth_mb,
            )
        ]
        if system.gpu_samples:
            leaks.append(
                leak_check("GPU memory", system.gpu_memory_series(), leak_slope_mb_per_h, leak_min_growth_mb)
            )
    else:
        leaks = [
            check(
                "memory leak",
                leak_slope_mb_per_h,
                None,
                None,
                "not applicable: the serving processes are not on this host",
            )
        ]
    checks.extend(leaks)
    leak_share = share_passed(leaks) if applicable(leaks) else 1.0
    return ItemResult("stability", availability * leak_share, checks)


# ---- security ----------------------------------------------------------------------------------------------------


def artifact_facts(model: str, candidate: VersionRef | None) -> tuple[list[str], bytes | None]:
    """The artifact's file name and first bytes, to recognise it if the endpoint ever hands it out."""
    if candidate is None:
        return [], None
    try:
        resolved = resolve(version_uri(model, candidate.version))
        with open(resolved.path, "rb") as fh:
            return [resolved.path.name], fh.read(64) or None
    except Exception:  # noqa: BLE001 - without the file, the status check alone still guards file access
        return [], None


def sha_check(client: InferopsClient, model: str, expected: str | None, source: str) -> Decision:
    """The artifact the endpoint serves must be the one the registry recorded."""
    try:
        served = str(client.metadata(model).get("sha256", ""))
    except (httpx.HTTPError, ValueError) as exc:
        return check(f"artifact sha256 {model}", source, None, False, f"cannot read served sha256: {exc}")
    if not expected:
        return check(
            f"artifact sha256 {model}",
            source,
            served[:12],
            False,
            f"no sha256 recorded for {source}: register the artifact",
        )
    ok = served == expected
    return check(
        f"artifact sha256 {model}",
        expected[:12],
        served[:12],
        ok,
        f"served artifact matches {source}"
        if ok
        else f"served sha256 {served[:12]}… != {source} {expected[:12]}…",
    )


def auth_checks(client: InferopsClient, model: str, meta: dict[str, Any]) -> list[Decision]:
    """No key and a wrong key are both refused with 401 on inference and metadata."""
    payload = infer_payload(example_inputs(model, meta, 1))
    cases = [
        ("no key: infer", lambda: client.call(routes.INFER, model, json=payload, key=None)),
        ("wrong key: infer", lambda: client.call(routes.INFER, model, json=payload, key="not-a-valid-key")),
        ("no key: metadata", lambda: client.call(routes.MODEL, model, key=None)),
    ]
    if meta.get("kind") == "text":
        cases.append(
            (
                "no key: embeddings",
                lambda: client.call(routes.EMBEDDINGS, json={"model": model, "input": "hi"}, key=None),
            )
        )
    out = []
    for name, call in cases:
        try:
            status: int | None = call().status_code
        except httpx.HTTPError:
            status = None
        out.append(
            check(
                name,
                401,
                status,
                status == 401,
                "refused" if status == 401 else f"expected 401, got {status}",
            )
        )
    return out


def hostile_checks(
    client: InferopsClient,
    model: str,
    meta: dict[str, Any],
    limits: EndpointLimits,
    *,
    files: Sequence[str] = (),
    artifact_head: bytes | None = None,
) -> list[Decision]:
    """Every hostile request gets a 4xx, the service is live after each, and no model bytes leak out."""
    out = []
    text = meta.get("kind") == "text"
    for request in hostile_inputs.corpus(
        model, "text" if text else "tensor", limits, input_shape=meta.get("input_shape"), files=list(files)
    ):
        key = client.api_key if request.kind == "input" else None
        response = hostile_inputs.send(client.url, request, key, timeout_s=client.timeout_s)
        ok, why = hostile_inputs.judge(request, response, artifact_head)
        alive = client.live()
        if not alive:
            why += "; service NOT live afterwards"
        prefix = "file access" if request.kind == "file_access" else "hostile"
        out.append(
            check(
                f"{prefix}: {request.name}",
                f"4xx ({request.expect_status})",
                response.status,
                ok and alive,
                why,
            )
        )
    return out


def security_item(
    client: InferopsClient,
    models: Sequence[str],
    expected_sha256: dict[str, tuple[str | None, str]],
    limits: EndpointLimits,
    *,
    files: Sequence[str] = (),
    artifact_head: bytes | None = None,
) -> ItemResult:
    """Artifact integrity, access control, hostile inputs and file exposure, for each gated model.

    `expected_sha256` maps a model to (sha256 from the registry or None, where that record comes from).
    """
    checks: list[Decision] = []
    for model in models:
        expected, source = expected_sha256.get(model, (None, "registry"))
        checks.append(sha_check(client, model, expected, source))
        try:
            meta = client.metadata(model)
        except (httpx.HTTPError, ValueError) as exc:
            checks.append(check(f"metadata {model}", "HTTP 200", None, False, f"cannot read metadata: {exc}"))
            continue
        checks.extend(auth_checks(client, model, meta))
        checks.extend(hostile_checks(client, model, meta, limits, files=files, artifact_head=artifact_head))
    return ItemResult("security", share_passed(checks), checks)


def render_checks_markdown(results: Sequence[ItemResult]) -> str:
    """Every check of every item: threshold, observed value, verdict and reason (the evidence under the verdict)."""
    return "\n".join(decisions_markdown(r.checks, title=f"{r.item}: {r.observed:.2%}") for r in results)
