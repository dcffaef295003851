"""Highest rate with P99 <= SLA: the naive baseline (sentence-transformers behind FastAPI) vs inferops on Ray Serve.

One run on this machine: (a) `benchmarks/naive_server.py` — SentenceTransformer.encode, batch 1, FP32;
(b) the inferops Ray Serve app serving the chosen variant with dynamic batching; each searched with the same
open-loop stress search (tasks.suites.find_knee), one sentence per request. Also the in-process throughput of the
same variant, so the serving path's cost is visible. Run: `.venv/bin/python benchmarks/serving.py`.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script, this file's folder comes first on sys.path and its name would shadow the `serving` package.
    sys.path[0] = str(ROOT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become ready within {timeout_s:.0f} s")


WARMUP_REQUESTS = 30


def knee(url: str, model: str, sla_ms: float, headers: dict[str, str], max_rps: float) -> Any:
    from tasks.loadgen import embeddings_body_factory
    from tasks.suites import find_knee

    body = embeddings_body_factory(model)
    # First requests pay one-off costs (allocator growth, lazy init): keep them out of the first step's P99.
    with httpx.Client(timeout=60) as client:
        for i in range(WARMUP_REQUESTS):
            client.post(f"{url}/v1/embeddings", json=body(i), headers=headers).raise_for_status()

    def show(step: Any) -> None:
        print(f"    {step.phase:6} {step.rate_rps:7.1f} req/s  p99 {step.p99_ms:8.1f} ms  errors {step.error_rate:6.2%}"
              f"  {'ok' if step.ok else 'over'}", flush=True)  # fmt: skip

    return find_knee(f"{url}/v1/embeddings", body, sla_ms, headers=headers,
                     start_rps=5, max_rps=max_rps, step_factor=1.6, step_duration_s=6, time_budget_s=240, on_step=show)  # fmt: skip


def at_knee(result: Any) -> tuple[float, float, float]:
    """P50, P99 and achieved throughput of the step at the knee (the load the search kept for it)."""
    if result.load is None or result.knee_rps <= 0:
        return float("nan"), float("nan"), float("nan")
    pct = result.load.percentiles
    return pct["p50"], pct["p99"], result.load.throughput_rps


def naive(model: str, sla_ms: float) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "naive_server.py"), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        result = knee(url, model, sla_ms, {}, max_rps=400)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    p50, p99, thr = at_knee(result)
    return {"system": "naive: sentence-transformers encode, FastAPI, batch 1, FP32", "knee": result.knee_rps,
            "p50": p50, "p99": p99, "throughput": thr, "stopped": result.stopped_reason}  # fmt: skip


def inferops(model: str, variant: str, sla_ms: float, ingress: str, batch: int, wait_s: float) -> dict[str, Any]:
    from serving.app import ingress_env

    env, chosen = ingress_env(ingress)
    os.environ.update(env)
    import ray
    from ray import serve

    from serving.app import run_local

    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        args = {"model": model, "variant": variant, "intra_op_threads": 1, "max_batch_size": batch,
                "batch_wait_timeout_s": wait_s, "api_keys": ["bench-key"]}  # fmt: skip
        url = run_local(args, name="bench", port=free_port())
        wait_ready(url)
        result = knee(url, model, sla_ms, {"Authorization": "Bearer bench-key"}, max_rps=1000)
    finally:
        serve.shutdown()
        ray.shutdown()
    p50, p99, thr = at_knee(result)
    return {"system": f"inferops: Ray Serve ({chosen}), {variant}, batch<= {batch}, wait {wait_s * 1e3:.0f} ms",
            "knee": result.knee_rps, "p50": p50, "p99": p99, "throughput": thr,
            "stopped": result.stopped_reason}  # fmt: skip


def in_process(model: str, variant: str, batch: int) -> float:
    from serving.engines import load_engine
    from tasks.evaluation import measure_batches
    from tasks.variants import ensure_variant

    art = ensure_variant(model, variant)
    engine = load_engine(art.path, expected_sha256=art.sha256, intra_op_threads=1, allow_spinning=False)
    return measure_batches(engine.infer, engine.spec.example_inputs(256), batch, 20).items_per_s


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--variant", default="onnx-int8-dynamic-perchannel")
    parser.add_argument("--ingress", default="auto", choices=["auto", "proxy", "haproxy"])
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--sla-ms", type=float, default=None, help="default: the policy's P99 SLA")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    from tasks.policy import default_policy

    sla = args.sla_ms or default_policy().rollout_gate.sla_p99_ms
    rows = []
    if not args.skip_naive:
        print("(a) naive baseline", flush=True)
        rows.append(naive(args.model, sla))
    print("(b) inferops on Ray Serve", flush=True)
    rows.append(inferops(args.model, args.variant, sla, args.ingress, args.max_batch_size, args.batch_wait_ms / 1e3))
    inproc1 = in_process(args.model, args.variant, 1)
    inproc_b = in_process(args.model, args.variant, args.max_batch_size)

    print(f"\nhighest rate with P99 <= {sla:.0f} ms, one sentence per request (open loop, same 2-core box)")
    print(f"{'system':78} {'knee req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'achieved':>9}")
    for r in rows:
        print(f"{r['system']:78} {r['knee']:10.1f} {r['p50']:8.1f} {r['p99']:8.1f} {r['throughput']:9.1f}")
    if len(rows) == 2 and rows[0]["knee"] > 0:
        print(f"\nratio inferops / naive: {rows[1]['knee'] / rows[0]['knee']:.2f}x")
    print(f"in-process {args.variant}, 1 thread: {inproc1:.1f} sentences/s at batch 1, "
          f"{inproc_b:.1f} at batch {args.max_batch_size}")  # fmt: skip
    for r in rows:
        print(f"  search for '{r['system'][:40]}…' stopped: {r['stopped']}")


if __name__ == "__main__":
    main()
