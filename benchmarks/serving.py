"""Highest rate with P99 <= SLA: the naive baseline (sentence-transformers behind FastAPI) vs inferops on Ray Serve.

One run on this machine: (a) `benchmarks/naive_server.py` — SentenceTransformer.encode, batch 1, FP32;
(b) the inferops Ray Serve app serving the chosen variant with dynamic batching; each searched with the same
open-loop stress search (tasks.measure.suites.find_knee), one sentence per request. Also the in-process throughput of the
same variant, so the serving path's cost is visible. Run: `.venv/bin/python benchmarks/serving.py`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script, this file's folder comes first on sys.path and its name would shadow the `serving` package.
    sys.path[0] = str(ROOT)

from serving import routes  # noqa: E402 (after the path fix above)
from serving.client import InferopsClient, auth_headers  # noqa: E402
from serving.network import free_port  # noqa: E402
from tasks.policy import default_policy  # noqa: E402

WARMUP_REQUESTS = 30


def knee(
    url: str,
    model: str,
    sla_ms: float,
    headers: dict[str, str],
    max_rps: float,
    texts: list[str] | None = None,
) -> Any:
    from tasks.measure.loadgen import embeddings_body_factory
    from tasks.measure.suites import find_knee

    body = embeddings_body_factory(model, texts)
    # First requests pay one-off costs (allocator growth, lazy init): keep them out of the first step's P99.
    with InferopsClient(url, timeout_s=60) as client:
        for i in range(WARMUP_REQUESTS):
            client.call(routes.EMBEDDINGS, json=body(i), headers=headers).raise_for_status()

    def show(step: Any) -> None:
        print(
            f"    {step.phase:6} {step.rate_rps:7.1f} req/s  p99 {step.p99_ms:8.1f} ms  errors {step.error_rate:6.2%}"
            f"  {'ok' if step.ok else 'over'}",
            flush=True,
        )

    return find_knee(
        url + routes.EMBEDDINGS.path(),
        body,
        sla_ms,
        policy=default_policy(),
        headers=headers,
        start_rps=5,
        max_rps=max_rps,
        step_factor=1.6,
        step_duration_s=6,
        time_budget_s=240,
        on_step=show,
    )


def at_knee(result: Any) -> tuple[float, float, float]:
    """P50, P99 and achieved throughput of the step at the knee (the load the search kept for it)."""
    if result.load is None or result.knee_rps <= 0:
        return float("nan"), float("nan"), float("nan")
    pct = result.load.percentiles
    return pct["p50"], pct["p99"], result.load.throughput_rps


def naive(model: str, sla_ms: float, texts: list[str] | None = None) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "naive_server.py"), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        with InferopsClient(url) as ready:
            ready.wait_ready()
        result = knee(url, model, sla_ms, {}, max_rps=400, texts=texts)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    p50, p99, thr = at_knee(result)
    return {
        "system": "naive: sentence-transformers encode, FastAPI, batch 1, FP32",
        "knee": result.knee_rps,
        "p50": p50,
        "p99": p99,
        "throughput": thr,
        "stopped": result.stopped_reason,
    }


def inferops(
    model: str,
    variant: str,
    sla_ms: float,
    ingress: str,
    knobs: dict[str, int],
    wait_s: float,
    texts: list[str] | None,
    use_cache: bool,
) -> dict[str, Any]:
    """The inferops app with the given knobs; `model` may be `models:/NAME@champion` (variant then ignored)."""
    from serving.app import ingress_env

    env, chosen = ingress_env(ingress)
    os.environ.update(env)
    import ray
    from ray import serve

    from serving.app import run_local

    name = model.removeprefix("models:/").split("@")[0]
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        args = {
            "model": model,
            **knobs,
            "cache_entries": knobs["cache_entries"] if use_cache else 0,
            "batch_wait_timeout_s": wait_s,
            "api_keys": ["bench-key"],
        }
        if not model.startswith("models:/"):
            args["variant"] = variant
        url = run_local(args, name="bench", port=free_port())
        with InferopsClient(url) as ready:
            ready.wait_ready()
        headers = auth_headers("bench-key")
        if not use_cache:
            headers["Cache-Control"] = "no-cache"
        result = knee(url, name, sla_ms, headers, max_rps=2000, texts=texts)
        hit_rate = None
        if use_cache:
            with InferopsClient(url, "bench-key") as client:
                hit_rate = client.metadata(name)["cache"]["hit_rate"]
    finally:
        serve.shutdown()
        ray.shutdown()
    p50, p99, thr = at_knee(result)
    what = variant if not model.startswith("models:/") else model
    cache_txt = (
        f", cache {knobs['cache_entries']} (hit rate {hit_rate:.0%})"
        if use_cache and hit_rate is not None
        else ", no cache"
    )
    return {
        "system": f"inferops ({chosen}): {what}, {knobs['num_replicas']} replica(s) x {knobs['intra_op_threads']} "
        f"thread(s), batch<= {knobs['max_batch_size']}{cache_txt}",
        "knee": result.knee_rps,
        "p50": p50,
        "p99": p99,
        "throughput": thr,
        "stopped": result.stopped_reason,
    }


def champion_knobs(model: str) -> tuple[str, dict[str, int]]:
    """The registry champion and the serving knobs the optimization cycle measured it with (version tags)."""
    from tasks.records import registry
    from tasks.records.store import configure

    configure()
    ref = registry.alias_version(model, registry.CHAMPION)
    if ref is None:
        raise SystemExit(f"no champion for {model}: run `make run` or `inferops optimize` first")
    return f"models:/{model}@champion", registry.version_knobs(
        model, ref.version, default_policy().serving.default_knobs()
    )


def in_process(model: str, variant: str, batch: int) -> float:
    from serving.engines import load_engine
    from serving.variants import ensure_variant
    from tasks.optimize.evaluation import measure_batches

    art = ensure_variant(model, variant)
    engine = load_engine(art.path, expected_sha256=art.sha256, intra_op_threads=1, allow_spinning=False)
    return measure_batches(engine.infer, engine.spec.example_inputs(256), batch, 20).items_per_s


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--variant", default="onnx-int8-dynamic-perchannel")
    parser.add_argument("--ingress", default="auto", choices=["auto", "proxy", "haproxy"])
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--sla-ms", type=float, default=None, help="default: the policy's P99 SLA")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--configs", default="1x1", help="replicas x threads to measure, comma separated (e.g. 1x1,1x2,2x1)"
    )
    parser.add_argument(
        "--champion", action="store_true", help="also serve the registry champion with its measured knobs"
    )
    parser.add_argument(
        "--request-log", default=None, help="send the texts of this request log (JSON Lines) in order"
    )
    args = parser.parse_args()

    sla = args.sla_ms or default_policy().rollout_gate.sla_p99_ms
    texts = None
    if args.request_log:
        from tasks.measure.workload import load_request_log

        texts = list(load_request_log(args.request_log, "text"))
    rows = []
    if not args.skip_naive:
        print("(a) naive baseline", flush=True)
        rows.append(naive(args.model, sla, texts))
    for config in args.configs.split(","):
        replicas, threads = (int(v) for v in config.lower().split("x"))
        knobs = {
            "num_replicas": replicas,
            "intra_op_threads": threads,
            "max_batch_size": args.max_batch_size,
            "cache_entries": 0,
        }
        print(f"(b) inferops on Ray Serve, {replicas} replica(s) x {threads} thread(s)", flush=True)
        rows.append(
            inferops(
                args.model, args.variant, sla, args.ingress, knobs, args.batch_wait_ms / 1e3, texts, False
            )
        )
    if args.champion:
        uri, knobs = champion_knobs(args.model)
        for use_cache in sorted({False, knobs["cache_entries"] > 0}):
            print(
                f"(c) the champion with its measured knobs {knobs}, cache {'on' if use_cache else 'bypassed'}",
                flush=True,
            )
            rows.append(
                inferops(
                    uri, args.variant, sla, args.ingress, knobs, args.batch_wait_ms / 1e3, texts, use_cache
                )
            )
    inproc1 = in_process(args.model, args.variant, 1)
    inproc_b = in_process(args.model, args.variant, args.max_batch_size)

    print(f"\nhighest rate with P99 <= {sla:.0f} ms, one sentence per request (open loop, same 2-core box)")
    print(f"{'system':110} {'knee req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'achieved':>9} {'x naive':>8}")
    base = rows[0]["knee"] if not args.skip_naive and rows[0]["knee"] > 0 else None
    for r in rows:
        ratio = f"{r['knee'] / base:7.2f}x" if base else "       -"
        print(
            f"{r['system']:110} {r['knee']:10.1f} {r['p50']:8.1f} {r['p99']:8.1f} {r['throughput']:9.1f} {ratio}"
        )
    print(
        f"in-process {args.variant}, 1 thread: {inproc1:.1f} sentences/s at batch 1, "
        f"{inproc_b:.1f} at batch {args.max_batch_size}"
    )
    for r in rows:
        print(f"  search for '{r['system'][:40]}…' stopped: {r['stopped']}")


if __name__ == "__main__":
    main()
