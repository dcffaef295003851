"""The capacity plan applied to a live Ray Serve deployment and read back from Serve.

Its own module, named to run after tests/flows/test_deployments.py: the session's in-process Serve it starts holds
the HAProxy ingress ports that the rehearsal's `inferops serve` needs."""

from __future__ import annotations

from pathlib import Path

from tests.flows.test_capacity_planning import SHORT_HISTORY_DAYS, quick_forecasters  # noqa: F401 (fixture)


def test_the_plan_applies_its_autoscaling_to_a_live_deployment_and_reads_it_back(
    prefect_harness: None, ray_session: None
) -> None:
    from ray import serve

    from flows.capacity_planning import capacity_planning
    from serving.app import run_local
    from serving.client import InferopsClient
    from tasks.capacity.synthetic import write_synthetic_history

    url = run_local(
        {"model": "digits-cnn", "api_keys": ["plan-key"], "admin_keys": ["plan-admin-key"]},
        name="capacity-apply-test",
        route_prefix="/capacity-apply",
    )
    try:
        result = capacity_planning(
            history=str(write_synthetic_history(days=SHORT_HISTORY_DAYS)),
            synthetic=True,
            model="digits-cnn",
            knee_rps=100.0,
            apply=True,
            url=url,
            admin_key="plan-admin-key",  # an admin route: the inference key would get 403
        )
        asked = result["autoscaling"]
        assert result["applied"] == asked and 1 <= asked["min_replicas"] <= asked["max_replicas"]
        held = InferopsClient(url, "plan-key", admin_key="plan-admin-key").serving_config("digits-cnn")
        assert held["autoscaling_config"] == asked | held["autoscaling_config"]  # Serve may add its defaults
        assert (
            all(held["autoscaling_config"][k] == v for k, v in asked.items()) and held["num_replicas"] is None
        )
        text = Path(result["serve_config"]).read_text()
        assert f"name: {held['app']}" in text and f"name: {held['deployment']}" in text
    finally:
        serve.delete("capacity-apply-test")
