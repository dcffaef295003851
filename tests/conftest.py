"""Session-wide fixtures: an isolated data dir and MLflow store, real-data paths that skip when absent."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.prometheus_server import ServeTraffic

# No telemetry or Hub calls from tests (CI has no network), and no progress bars in the logs.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Nothing a test runs, in this process or a subprocess, may write to the user's Prefect home or talk to their
# Prefect server: set before anything imports Prefect, inherited by every subprocess.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="inferops-test-prefect-home-")
os.environ.pop("PREFECT_API_URL", None)
# Keys are required: every endpoint a test starts accepts these (besides its own), and every client finds them in
# the same variables, as on a configured machine. The user's own keys never reach a test.
TEST_API_KEY = "test-session-inference-key"
TEST_ADMIN_KEY = "test-session-admin-key"
for _var in ("INFEROPS_API_KEYS_FILE", "INFEROPS_ADMIN_KEYS_FILE", "INFEROPS_ALLOW_ANONYMOUS"):
    os.environ.pop(_var, None)
os.environ["INFEROPS_API_KEYS"] = TEST_API_KEY
os.environ["INFEROPS_ADMIN_KEYS"] = TEST_ADMIN_KEY


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test session writes to its own data dir and MLflow store, never the user's `.inferops/`."""
    data_dir = tmp_path_factory.mktemp("inferops-data")
    old = {
        k: os.environ.get(k)
        for k in ("INFEROPS_DATA_DIR", "INFEROPS_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")
    }
    os.environ["INFEROPS_DATA_DIR"] = str(data_dir)
    os.environ.pop("INFEROPS_MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from serving.settings import get_settings

    get_settings.cache_clear()
    yield data_dir
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def models_cache() -> Path:
    """Trained/exported models shared across the session (built once, reused by many tests)."""
    from serving.settings import get_settings

    return get_settings().models_dir


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A real, temporary Prefect API for flow runs (one per session)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray instance for the whole session, pinned to this machine's cores."""
    import ray

    if not ray.is_initialized():
        # address="local": always a fresh instance of its own, never a Ray cluster already running on this host
        # (a user's, or one a benchmark started), which `ray.init()` would otherwise join.
        ray.init(
            address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    yield
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Linear(64->32)+ReLU+Linear(32->8) exported to ONNX: FLOPs are known by hand."""
    import torch

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()
    torch.onnx.export(
        model, (torch.zeros(1, 64),), str(path), input_names=["x"], output_names=["y"], dynamo=False
    )
    return path


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The Debian `prometheus` binary: installed with apt-get when missing and root (CI's fallback after `make
    test`'s own install), else the tests that need it skip and say how to get it."""
    from tests.prometheus_server import apt_install, find_binary

    found = find_binary("prometheus")
    if found is None and os.geteuid() != 0:
        pytest.skip("prometheus not installed; `apt-get install prometheus` or run as root, as CI does")
    if found is None:
        apt_install(["prometheus"])
        found = find_binary("prometheus")
    if found is None:
        raise RuntimeError("apt-get installed prometheus, yet no prometheus binary is on PATH or in /usr/bin")
    return found


@pytest.fixture(scope="session")
def serve_traffic_in_prometheus(ray_session: None, prometheus_binary: str) -> Iterator[ServeTraffic]:
    """A real Prometheus scraping this session's Ray node every second, after a small Serve app answered a
    known number of HTTP requests: Prometheus holds `ray_serve_num_http_requests_total` of that app rising by
    exactly that number. The app is gone afterwards; Prometheus (and the samples it scraped) stay for the session."""
    import ray
    from ray import serve

    from serving.app import run_local
    from serving.client import InferopsClient
    from serving.network import free_port
    from tasks.policy import default_policy
    from tests.prometheus_server import ServeTraffic, counter_value, prometheus_server, wait_until

    app, key, model = "inferops-prometheus-test", "test-key-prometheus", "digits-cnn"
    # The node's metrics agent runs in Ray's dashboard agent, which the raylet starts even with
    # include_dashboard=False (only RAY_enable_metrics_collection=0 turns it off): no change to ray_session.
    metrics_port = ray._private.worker.global_worker.node.metrics_export_port
    with prometheus_server(prometheus_binary, [f"127.0.0.1:{metrics_port}"]) as prometheus:
        traffic = ServeTraffic(prometheus.url, app)
        url = run_local(
            default_policy().app_args(model=model, variant="onnx-fp32", api_keys=[key]),
            name=app,
            port=free_port(),
            route_prefix="/prometheus-test",
        )
        try:
            with InferopsClient(url, key, timeout_s=30) as client:
                client.metadata(model)  # the series appears only once Ray exports its first value
                waited = wait_until(
                    lambda: counter_value(traffic) >= 1, 60, f"{traffic.counter} in Prometheus"
                )
                before = counter_value(traffic)
                for _ in range(traffic.requests):
                    client.metadata(model)
                waited += wait_until(
                    lambda: counter_value(traffic) >= before + traffic.requests,
                    60,
                    f"{traffic.counter} rising by {traffic.requests} in Prometheus",
                )
        finally:
            serve.delete(app)
        print(f"Serve's request counter reached Prometheus after {waited:.1f} s of polling")
        yield traffic
