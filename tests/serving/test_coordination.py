"""Serve's declarative config as inferops writes it: one app deployed beside the others leaves them as they are."""

from __future__ import annotations

import time

import pytest
from ray import serve
from ray.serve.schema import ApplicationStatus

from serving.app import run_local
from serving.coordination import live_app_configs
from tasks.policy import default_policy


@pytest.mark.usefixtures("ray_session")
def test_an_app_being_deleted_is_not_deployed_again_by_the_next_app_deployed_beside_it() -> None:
    """A trial app's removal takes a drain (30 s behind HAProxy). An app deployed meanwhile submits the whole config
    back: the app being deleted must not be in it, or Serve deploys it again and it outlives its removal."""
    args = default_policy().app_args(model="digits-cnn", allow_anonymous=True, num_cpus=0)
    # each replica sleeps one 8 s wait loop before it stops: a removal that is still under way when the next deploy
    # reads the config
    draining = {"graceful_shutdown_wait_loop_s": 8.0, "graceful_shutdown_timeout_s": 10.0}
    run_local(args, name="going", route_prefix="/going", timeout_s=120, deployment_options=draining)
    serve.delete("going", _blocking=False)
    try:
        deadline = time.monotonic() + 10  # the controller marks it on its next loop
        while serve.status().applications["going"].status != ApplicationStatus.DELETING:
            assert time.monotonic() < deadline, "the removal never started"
            time.sleep(0.1)
        run_local(args, name="staying", route_prefix="/staying", timeout_s=120)
        deadline = time.monotonic() + 60
        while "going" in serve.status().applications and time.monotonic() < deadline:
            time.sleep(1)
        apps = serve.status().applications
        assert "going" not in apps, f"still there: {apps['going'].status}"
        assert apps["staying"].status == ApplicationStatus.RUNNING and "staying" in live_app_configs()
    finally:
        for name in ("going", "staying"):
            if name in serve.status().applications:
                serve.delete(name)
