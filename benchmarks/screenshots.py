"""Screenshots of what a new user browses after `make run`: the optimization cycle's run graph in the Prefect UI and
the optimization experiment's runs table in the MLflow UI, taken with headless Chromium (Debian's `chromium`).

    .venv/bin/python benchmarks/screenshots.py [--out DIR]

It starts `mlflow server` on the project's store and `prefect server start` on the Prefect home `make run` wrote
to, both on free loopback ports, takes the pictures, and stops both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from serving.network import free_port  # noqa: E402 (after the path fix above)
from serving.settings import get_settings  # noqa: E402
from tasks.records.names import ML_VIEW, OPTIMIZATION_EXPERIMENT  # noqa: E402

BIN = Path(sys.executable).parent
STARTUP_S = 120.0
# Headless Chromium without a sandbox (it runs as root here), a GPU or any traffic beyond loopback.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1600,1000",
]
RENDER_BUDGET_MS = 25000  # virtual time for the single-page apps to fetch and draw their data


@contextmanager
def server(cmd: list[str], ready_url: str, env: dict[str, str] | None = None) -> Iterator[None]:
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"{cmd[0]} exited with {proc.returncode} before answering {ready_url}")
            time.sleep(1)
        else:
            raise SystemExit(f"{ready_url} did not answer within {STARTUP_S:.0f} s")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def screenshot(url: str, path: Path) -> Path:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("headless Chromium is missing: apt-get install chromium")
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--virtual-time-budget={RENDER_BUDGET_MS}", f"--screenshot={path}", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


def latest_cycle_flow_run(api_url: str) -> str:
    """The newest optimization-cycle flow run in the Prefect database."""
    os.environ["PREFECT_API_URL"] = api_url
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async def find() -> str:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["optimization-cycle"])),
                sort=FlowRunSort.START_TIME_DESC,
                limit=1,
            )
        if not runs:
            raise SystemExit("no optimization-cycle flow run in the Prefect database: run `make run` first")
        return str(runs[0].id)

    return asyncio.run(find())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=get_settings().data_dir / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tracking = get_settings().resolved_tracking_uri()
    mlflow_port, prefect_port = free_port(), free_port()
    mlflow_url, prefect_url = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{prefect_port}"
    mlflow_cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        tracking,
        "--host",
        "127.0.0.1",
        "--port",
        str(mlflow_port),
        "--workers",
        "1",
    ]
    prefect_cmd = [
        str(BIN / "prefect"),
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(prefect_port),
    ]
    prefect_env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_API_URL": f"{prefect_url}/api"}
    with (
        server(mlflow_cmd, f"{mlflow_url}/health"),
        server(prefect_cmd, f"{prefect_url}/api/health", prefect_env),
    ):
        from mlflow import MlflowClient

        experiment = MlflowClient(tracking).get_experiment_by_name(OPTIMIZATION_EXPERIMENT)
        if experiment is None:
            raise SystemExit(f"no {OPTIMIZATION_EXPERIMENT} experiment in {tracking}: run `make run` first")
        run_id = latest_cycle_flow_run(f"{prefect_url}/api")
        shots = [
            screenshot(f"{prefect_url}/runs/flow-run/{run_id}", args.out / "prefect-cycle-run.png"),
            screenshot(
                f"{mlflow_url}/#/experiments/{experiment.experiment_id}?{ML_VIEW}",
                args.out / "mlflow-optimization-runs.png",
            ),
        ]
    for shot in shots:
        print(f"{shot} ({shot.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
