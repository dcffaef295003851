"""Ingress benchmark: Ray's Python HTTP proxy vs its HAProxy ingress, for an empty app and for minilm.

    .venv/bin/python benchmarks/ingress.py --rates 25,50,100,200 --step-s 5

Each (mode, app) runs in a fresh subprocess because the ingress mode is fixed when Ray starts. The probe is
open loop (requests are sent on a fixed schedule whether or not earlier ones finished), so a saturated server
shows up as latency and errors instead of a politely slowed client. Also prints the in-process throughput of
the same minilm variant, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from serving import routes  # noqa: E402 (after the path fix above)
from serving.network import free_port  # noqa: E402
from tasks.policy import default_policy  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def probe(
    url: str, path: str, body: dict[str, Any] | None, rate: float, duration_s: float
) -> dict[str, Any]:
    """Open-loop probe at `rate` req/s for `duration_s`: achieved rate, p50/p99 ms, error rate."""
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=url, timeout=10.0, limits=limits) as client:

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                resp = await (client.post(path, json=body) if body is not None else client.get(path))
                if resp.status_code != 200:
                    errors += 1
                    return
                latencies.append((time.perf_counter() - t0) * 1000.0)
            except httpx.HTTPError:
                errors += 1

        tasks = []
        start = time.perf_counter()
        n = int(rate * duration_s)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {
        "rate": rate,
        "sent": n,
        "achieved_rps": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "error_rate": errors / max(1, n),
    }


def child(
    mode: str, app: str, rates: list[float], step_s: float, variant: str, threads: int
) -> list[dict[str, Any]]:
    """Runs inside the subprocess: start Ray in `mode`, deploy `app`, probe each rate."""
    from serving.app import ingress_env

    env, chosen = ingress_env(mode)
    os.environ.update(env)
    import ray
    from fastapi import FastAPI
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    if app == "empty":
        api = FastAPI()

        @serve.deployment(max_ongoing_requests=256)
        @serve.ingress(api)
        class Empty:
            @api.get("/empty")
            def empty(self) -> dict[str, bool]:
                return {"ok": True}

        serve.run(Empty.bind(), name="bench-empty", route_prefix="/")  # type: ignore[attr-defined]
        path, body = "/empty", None
    else:
        from serving.app import run_local

        run_local(
            default_policy().app_args(model="minilm", variant=variant, intra_op_threads=threads),
            name="bench-minilm",
            port=port,
        )
        path, body = (
            routes.EMBEDDINGS.path(),
            {"model": "minilm", "input": "The quick brown fox jumps over the lazy dog."},
        )
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    assert client is not None
    url = f"http://127.0.0.1:{client.http_config.port}"
    asyncio.run(probe(url, path, body, rate=10, duration_s=1.0))  # warm-up
    rows = []
    for rate in rates:
        row = asyncio.run(probe(url, path, body, rate, step_s))
        rows.append({"mode": chosen, "app": app, **row})
    serve.shutdown()
    ray.shutdown()
    return rows


def in_process(variant: str, threads: int, duration_s: float) -> list[dict[str, Any]]:
    """Throughput of the same variant called directly (no HTTP), batch 1 and batch 16."""
    from serving.engines import load_engine
    from serving.variants import ensure_variant

    engine = load_engine(
        ensure_variant("minilm", variant).path, intra_op_threads=threads, allow_spinning=False
    )
    text = "The quick brown fox jumps over the lazy dog."
    rows = []
    for batch in (1, 16):
        texts = [text] * batch
        engine.infer(texts)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < duration_s:
            engine.infer(texts)
            n += batch
        rows.append({"batch": batch, "items_per_s": n / (time.perf_counter() - start)})
    return rows


def knee(rows: list[dict[str, Any]], sla_p99_ms: float, max_error_rate: float) -> float | None:
    ok = [r["rate"] for r in rows if r["p99_ms"] <= sla_p99_ms and r["error_rate"] <= max_error_rate]
    return max(ok) if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rates", default="25,50,100,200")
    parser.add_argument("--step-s", type=float, default=5.0)
    parser.add_argument("--modes", default="proxy,haproxy")
    parser.add_argument("--apps", default="empty,minilm")
    parser.add_argument("--variant", default="onnx-int8-dynamic-perchannel")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    ns = parser.parse_args()
    rates = [float(r) for r in ns.rates.split(",")]
    if ns.child:
        mode, app = ns.child.split(":")
        print("ROWS " + json.dumps(child(mode, app, rates, ns.step_s, ns.variant, ns.threads)))
        return

    policy = default_policy()
    sla, max_err = policy.rollout_gate.sla_p99_ms, policy.test_suite.max_error_rate
    rows: list[dict[str, Any]] = []
    for mode in ns.modes.split(","):
        for app in ns.apps.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                f"{mode}:{app}",
                "--rates",
                ns.rates,
                "--step-s",
                str(ns.step_s),
            ]
            cmd += ["--variant", ns.variant, "--threads", str(ns.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROWS ")), None)
            if line is None:
                print(f"{mode}/{app}: failed (exit {proc.returncode}): {proc.stderr.strip()[-600:]}")
                continue
            rows.extend(json.loads(line[5:]))
    print(f"\nopen-loop probe, {ns.step_s:.0f} s per rate; SLA p99 <= {sla:.0f} ms, errors <= {max_err:.1%}")
    print(f"{'mode':8} {'app':7} {'rate':>6} {'achieved':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for r in rows:
        print(
            f"{r['mode']:8} {r['app']:7} {r['rate']:6.0f} {r['achieved_rps']:9.1f} {r['p50_ms']:8.1f} "
            f"{r['p99_ms']:8.1f} {r['error_rate']:7.1%}"
        )
    for mode in sorted({r["mode"] for r in rows}):
        for app in sorted({r["app"] for r in rows}):
            sub = [r for r in rows if r["mode"] == mode and r["app"] == app]
            if sub:
                print(f"knee {mode}/{app}: {knee(sub, sla, max_err)} req/s")
    if "minilm" in ns.apps:
        for r in in_process(ns.variant, ns.threads, duration_s=ns.step_s):
            print(
                f"in-process minilm {ns.variant} ({ns.threads} thread): batch {r['batch']:2d} -> {r['items_per_s']:.1f} texts/s"
            )
    if ns.json:
        Path(ns.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
