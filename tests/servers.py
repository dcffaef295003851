"""Small real HTTP servers for measurement tests, run with uvicorn in a subprocess on a free loopback port.

Kinds:
- `distribution`: concurrent, sleeps 10 ms for 9 requests in 10 and 100 ms for the 10th (known percentiles);
- `capacity`: one request at a time, fixed service time (blocking the event loop), so capacity = 1 / service;
- `leaking`: holds `leak_kb` KiB per request forever; `steady`: same work, nothing kept.
All answer `POST /v1/embeddings` (404 for a model other than `minilm`), `GET /v2/health/ready`,
`GET /stats` (requests seen) and `GET /metrics` (Prometheus text).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from serving import routes
from serving.network import free_port

MODEL = "minilm"
FAST_MS = 10.0
SLOW_MS = 100.0
SLOW_EVERY = 10


def build_app(kind: str, service_ms: float, leak_kb: int) -> Any:
    """The FastAPI app of one kind."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse

    app = FastAPI()
    state: dict[str, Any] = {"count": 0, "held": []}

    @app.get(routes.READY.template)
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return {"requests": state["count"], "held": len(state["held"])}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        text = (
            "# HELP test_requests_total Requests seen.\n# TYPE test_requests_total counter\n"
            f'test_requests_total{{kind="{kind}",route="{routes.EMBEDDINGS.template}"}} {state["count"]}\n'
        )
        return PlainTextResponse(text)

    @app.post(routes.EMBEDDINGS.template)
    async def embeddings(body: dict[str, Any]) -> JSONResponse:
        state["count"] += 1
        if body.get("model") != MODEL:
            return JSONResponse({"error": {"field": "model", "rule": "unknown model"}}, status_code=404)
        started = time.perf_counter()
        if kind == "distribution":
            await asyncio.sleep((SLOW_MS if state["count"] % SLOW_EVERY == 0 else FAST_MS) / 1000.0)
        elif kind == "capacity":
            time.sleep(service_ms / 1000.0)  # blocks the only event loop: one request at a time, by design
        else:
            chunk = b"\x01" * (leak_kb * 1024)  # filled bytes, so the pages are really resident
            if kind == "leaking":
                state["held"].append(chunk)
        compute = (time.perf_counter() - started) * 1000.0
        headers = {"Server-Timing": f"queue;dur=0.0, compute;dur={compute:.3f}, serialize;dur=0.05"}
        return JSONResponse({"object": "list", "data": [{"embedding": [0.0], "index": 0}]}, headers=headers)

    return app


@dataclass(frozen=True)
class RunningServer:
    url: str
    pid: int

    @property
    def endpoint(self) -> str:
        return self.url + routes.EMBEDDINGS.path()

    def requests_seen(self) -> int:
        return int(httpx.get(self.url + "/stats", timeout=5).json()["requests"])


@contextmanager
def subprocess_server(
    module: str, args: list[str], ready_path: str, startup_s: float = 30.0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `python -m MODULE --port P ARGS` from the repo root, wait until `ready_path` answers 200, stop it on exit."""
    port = free_port()
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", module, "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(
                    f"test server {module} {args} exited with {proc.returncode}: {err[-2000:]}"
                )
            try:
                if httpx.get(url + ready_path, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"test server {module} {args} did not become ready in {startup_s} s")
            time.sleep(0.1)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serve(
    kind: str, *, service_ms: float = 20.0, leak_kb: int = 1024, startup_s: float = 30.0
) -> Iterator[RunningServer]:
    """Start a test server in a subprocess, wait until ready, stop it on exit."""
    args = [kind, "--service-ms", str(service_ms), "--leak-kb", str(leak_kb)]
    with subprocess_server("tests.servers", args, routes.READY.path(), startup_s) as (url, proc):
        yield RunningServer(url, proc.pid)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["distribution", "capacity", "leaking", "steady"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service-ms", type=float, default=20.0)
    parser.add_argument("--leak-kb", type=int, default=1024)
    args = parser.parse_args()
    app = build_app(args.kind, args.service_ms, args.leak_kb)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
