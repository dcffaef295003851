"""Autoscaling as a serving setting: the admin body's rules (no Ray), then one live app that takes an
autoscaling config through the client, reports it back, and drops it again for a fixed replica count."""

from __future__ import annotations

import time
from typing import Any

import pytest

from serving.api import RequestRejected, ServingUpdate, validate_model
from serving.client import InferopsClient
from serving.network import free_port

APP = "inferops-autoscaling-test"
KEY = "test-key-autoscaling"
MODEL = "digits-cnn"
DEPLOYMENT = "InferenceIngress"  # the primary model lives in the ingress deployment
ASKED = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4}
SETTLE_S = 45.0


def _refusal(body: dict[str, Any]) -> RequestRejected:
    with pytest.raises(RequestRejected) as caught:
        validate_model(ServingUpdate, body)
    return caught.value


def test_autoscaling_body_is_taken_as_serves_field_names() -> None:
    req = validate_model(ServingUpdate, {"autoscaling": ASKED})
    assert req.model_dump(exclude_none=True) == {"autoscaling": {**ASKED, "target_ongoing_requests": 4.0}}


def test_min_above_max_is_refused_naming_the_fields() -> None:
    exc = _refusal({"autoscaling": {**ASKED, "min_replicas": 3}})
    assert (exc.status, exc.field, exc.rule, exc.limit) == (400, "autoscaling.max_replicas", "min_le_max", 3)
    assert "min_replicas" in exc.message and "max_replicas" in exc.message and "lower" in exc.message


def test_num_replicas_with_autoscaling_is_refused() -> None:
    exc = _refusal({"num_replicas": 2, "autoscaling": ASKED})
    assert (exc.status, exc.field, exc.rule) == (400, "autoscaling", "exclusive")
    assert "num_replicas" in exc.message and "not both" in exc.message
    assert set(exc.body()["error"]) == {"field", "rule", "limit", "message"}


@pytest.mark.parametrize(
    ("autoscaling", "field", "rule"),
    [
        ({**ASKED, "min_replicas": -1}, "autoscaling.min_replicas", "greater_than_equal"),
        ({**ASKED, "max_replicas": 0}, "autoscaling.max_replicas", "greater_than_equal"),
        ({**ASKED, "target_ongoing_requests": 0}, "autoscaling.target_ongoing_requests", "greater_than"),
        ({**ASKED, "upscale_delay_s": 1}, "autoscaling.upscale_delay_s", "extra_forbidden"),
    ],
)
def test_out_of_range_autoscaling_is_refused(autoscaling: dict[str, Any], field: str, rule: str) -> None:
    exc = _refusal({"autoscaling": autoscaling})
    assert (exc.status, exc.field, exc.rule) == (400, field, rule)


def _deployment_now() -> tuple[str, int, dict[str, Any]]:
    """The app's status, the deployment's running replicas (`serve.status()`) and its details as Serve applies
    them (`deployment_config`, `target_num_replicas`); empty while Serve rebuilds the app."""
    from ray import serve
    from ray.serve.context import _get_global_client

    app = serve.status().applications[APP]
    overview = app.deployments.get(DEPLOYMENT)
    running = overview.replica_states.get("RUNNING", 0) if overview else 0
    details = _get_global_client().get_serve_details()["applications"][APP]["deployments"].get(DEPLOYMENT)
    return app.status.value, running, dict(details or {"deployment_config": {}, "target_num_replicas": -1})


def _settled(check: Any, what: str) -> None:
    """Poll `check()` (returns a reason while not yet true, None once true) until SETTLE_S runs out."""
    deadline = time.monotonic() + SETTLE_S
    while (reason := check()) is not None:
        assert time.monotonic() < deadline, f"{what} not reached after {SETTLE_S:.0f} s: {reason}"
        time.sleep(0.5)


def test_autoscaling_is_applied_read_back_and_replaced_by_a_fixed_count(ray_session: None) -> None:
    from ray import serve

    from serving.app import run_local

    url = run_local(
        {"model": MODEL, "variant": "onnx-fp32", "api_keys": KEY},
        name=APP,
        port=free_port(),
        route_prefix="/autoscaling-test",
    )
    try:
        with InferopsClient(url, KEY, timeout_s=30) as client:
            held = client.apply_autoscaling(MODEL, ASKED, timeout_s=30)
            assert (held["app"], held["deployment"], held["num_replicas"]) == (APP, DEPLOYMENT, None)
            assert held["autoscaling_config"] == ASKED
            assert "max_batch_size" in held["user_config"]  # the knobs travel beside it, untouched

            def autoscaled() -> str | None:
                status, running, details = _deployment_now()
                config = details["deployment_config"].get("autoscaling_config") or {}
                if status != "RUNNING" or not 1 <= running <= 2:
                    return f"app {status}, {running} running replicas"
                if {k: config.get(k) for k in ASKED} != ASKED:
                    return f"Serve applies autoscaling_config {config}"
                if not 1 <= details["target_num_replicas"] <= 2:
                    return f"target_num_replicas {details['target_num_replicas']}"
                return None

            _settled(autoscaled, f"{DEPLOYMENT} autoscaling within {ASKED}")
            assert client.metadata(MODEL)["name"] == MODEL  # still serving through the change

            client.configure(MODEL, {"num_replicas": 1})
            fixed = client.serving_config(MODEL)
            assert (fixed["num_replicas"], fixed["autoscaling_config"]) == (1, None)

            def fixed_count() -> str | None:
                status, running, details = _deployment_now()
                config = details["deployment_config"]
                if config.get("autoscaling_config") is not None or config.get("num_replicas") != 1:
                    return f"Serve applies {config.get('num_replicas')=} {config.get('autoscaling_config')=}"
                if status != "RUNNING" or running != 1:
                    return f"app {status}, {running} running replicas"
                return None

            _settled(fixed_count, f"{DEPLOYMENT} fixed at 1 replica without autoscaling")
    finally:
        serve.delete(APP)
