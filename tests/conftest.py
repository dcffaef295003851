"""Session-wide fixtures: an isolated data dir and MLflow store, real-data paths that skip when absent."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# No telemetry or Hub calls from tests (CI has no network), and no progress bars in the logs.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Nothing a test runs, in this process or a subprocess, may write to the user's Prefect home or talk to their
# Prefect server: set before anything imports Prefect, inherited by every subprocess.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="inferops-test-prefect-home-")
os.environ.pop("PREFECT_API_URL", None)


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
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
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
