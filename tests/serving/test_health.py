"""Replica health: the policy's health-check settings reach Serve, and a replica whose checks fail is replaced."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from serving.client import InferopsClient
from serving.config import SERVE_HEALTH_CHECK_FAILURES
from serving.network import free_port
from tasks.policy import default_policy

APP = "inferops-health-test"
KEY = "test-key-health"
MODEL = "digits-cnn"
PERIOD_S, TIMEOUT_S = 1.0, 2.0


@pytest.fixture(scope="module")
def served(ray_session: None) -> Iterator[dict[str, Any]]:
    from ray import serve

    from serving.app import run_local

    args = default_policy().app_args(
        model=MODEL,
        variant="onnx-fp32",
        api_keys=[KEY],
        health_check_period_s=PERIOD_S,
        health_check_timeout_s=TIMEOUT_S,
    )
    url = run_local(args, name=APP, port=free_port(), route_prefix="/health-test")
    client = InferopsClient(url, KEY, timeout_s=30)
    yield {"url": url, "client": client}
    client.close()
    serve.delete(APP)


def _ingress_config() -> dict[str, Any]:
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    return dict(details["applications"][APP]["deployments"]["InferenceIngress"]["deployment_config"])


def test_the_policys_health_checks_reach_serve(served: dict[str, Any]) -> None:
    from ray.serve._private.constants import REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD

    config = _ingress_config()
    assert (config["health_check_period_s"], config["health_check_timeout_s"]) == (PERIOD_S, TIMEOUT_S)
    # the failure count the policy states is the one Serve applies (it is not configurable in Serve)
    assert (
        default_policy().endpoint.health_check_failures
        == SERVE_HEALTH_CHECK_FAILURES
        == REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD
    )


def _fail_health_checks(ingress: Any) -> None:
    """Run inside the replica: from now on its check_health() raises, as when its batching loop has died."""

    async def broken() -> None:
        raise RuntimeError("batching loop is not running (test)")

    ingress.runtime.check_health = broken


def test_a_replica_that_fails_its_health_checks_is_replaced(served: dict[str, Any]) -> None:
    import ray

    client: InferopsClient = served["client"]
    before = client.metadata(MODEL)["replica"]
    (name,) = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP}#InferenceIngress#")
    ]
    replica = ray.get_actor(name, namespace="serve")
    # the user callable inside Serve's replica actor (Ray internals: this is the one place a test reaches in)
    ray.get(
        replica.__ray_call__.remote(
            lambda actor: _fail_health_checks(actor._replica_impl._user_callable_wrapper._callable)
        )
    )
    deadline = time.monotonic() + 90
    now = before
    while time.monotonic() < deadline and now == before:
        time.sleep(1)
        try:
            now = client.metadata(MODEL)["replica"]
        except Exception:  # noqa: BLE001 - while the replacement starts the route may answer 503
            continue
    assert now != before, f"replica {before} still serves after its health checks failed for 90 s"
    assert client.infer(MODEL, np.zeros((1, 1, 8, 8), dtype=np.float32)).shape == (1, 10)
