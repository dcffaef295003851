"""Secure by default, over real HTTP on a real Ray Serve app: the rate limit is one limit for all replicas, admin
changes made at once all land (or lose with 409, never silently), and an endpoint that allows anonymous calls
still refuses every hostile request with a 4xx and keeps serving."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from serving import routes
from serving.client import InferopsClient
from serving.network import free_port
from tasks.policy import default_policy
from tests.conftest import TEST_ADMIN_KEY, TEST_API_KEY

KEY = "security-test-key"
RATE = 4.0  # per key per second, burst of the same size
REPLICAS = 2


@pytest.fixture(scope="module")
def limited(ray_session: None) -> Iterator[dict[str, Any]]:
    """digits-cnn on two replicas, rate-limited per key."""
    from ray import serve

    from serving.app import run_local

    app = "inferops-security-test"
    args = default_policy().app_args(
        model="digits-cnn",
        variant="onnx-fp32",
        api_keys=[KEY],
        num_replicas=REPLICAS,
        rate_limit_per_key_per_s=RATE,
    )
    url = run_local(args, name=app, port=free_port(), route_prefix="/security-test")
    client = InferopsClient(url, KEY, timeout_s=60)
    yield {"url": url, "client": client}
    client.close()
    serve.delete(app)


def _burst(url: str, n: int, concurrency: int) -> tuple[list[httpx.Response], float]:
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {KEY}"}) as http:
        started = time.monotonic()
        with ThreadPoolExecutor(concurrency) as pool:
            out = list(pool.map(lambda _: http.get(routes.MODEL.path("digits-cnn")), range(n)))
        return out, time.monotonic() - started


def test_the_rate_limit_is_shared_by_every_replica(limited: dict[str, Any]) -> None:
    client: InferopsClient = limited["client"]
    time.sleep(1.5)  # a full bucket
    # both replicas serve: metadata reads that see two replica ids (admin routes are not metered)
    replicas = client.wait_until("digits-cnn", lambda view: True, REPLICAS, timeout_s=120)
    assert replicas.converged, replicas.reason
    time.sleep(1.5)
    responses, elapsed = _burst(limited["url"], 40, 8)
    codes = Counter(r.status_code for r in responses)
    assert set(codes) <= {200, 429}, codes
    # one bucket for the app: at most its burst plus what refilled while the burst ran (per-replica buckets would
    # allow twice that)
    assert codes[200] <= RATE + RATE * elapsed + 1, (codes, elapsed)
    refused = next(r for r in responses if r.status_code == 429)
    retry = int(refused.headers["Retry-After"])
    assert retry >= 1
    assert refused.json()["error"]["rule"] == "rate_limit_per_key_per_s"
    assert refused.json()["error"]["limit"] == RATE
    time.sleep(retry)
    assert client.call(routes.MODEL, "digits-cnn").status_code == 200  # obeying Retry-After is admitted


def test_concurrent_admin_changes_all_land(limited: dict[str, Any]) -> None:
    client: InferopsClient = limited["client"]
    changes = [
        {"max_batch_size": 3},
        {"batch_wait_timeout_s": 0.004},
        {"cache_entries": 7},
        {"intra_op_threads": 1},
    ]
    with ThreadPoolExecutor(len(changes)) as pool:
        replies = list(pool.map(lambda knobs: client.call(routes.SERVING, "digits-cnn", json=knobs), changes))
    assert [r.status_code for r in replies] == [202] * len(changes), [r.text[:300] for r in replies]
    held = client.serving_config("digits-cnn")["user_config"]
    for knobs in changes:
        for knob, value in knobs.items():
            assert held[knob] == value, f"{knob} was lost: Serve holds {held}"


def test_a_change_made_on_a_stale_version_is_refused_with_409(limited: dict[str, Any]) -> None:
    client: InferopsClient = limited["client"]
    read = client.call(routes.SERVING_CONFIG, "digits-cnn")
    assert read.status_code == 200
    etag = read.headers["ETag"]
    assert etag.strip('"') == read.json()["version"]
    first = client.call(routes.SERVING, "digits-cnn", json={"cache_entries": 9}, headers={"If-Match": etag})
    assert first.status_code == 202, first.text
    assert first.headers["ETag"] != etag
    loser = client.call(routes.SERVING, "digits-cnn", json={"cache_entries": 11}, headers={"If-Match": etag})
    assert loser.status_code == 409
    body = loser.json()
    assert body["conflict"] is True and etag.strip('"') in body["reason"]
    assert client.serving_config("digits-cnn")["user_config"]["cache_entries"] == 9  # nothing overwritten


def test_admin_routes_refuse_inference_keys_and_the_knobs_stay(limited: dict[str, Any]) -> None:
    client: InferopsClient = limited["client"]
    before = client.serving_config("digits-cnn")
    refused = client.call(routes.SERVING, "digits-cnn", json={"cache_entries": 1}, key=KEY)
    assert refused.status_code == 403 and refused.json()["error"]["rule"] == "admin_key"
    assert KEY not in refused.text
    assert client.serving_config("digits-cnn") == before
    assert client.admin_key == TEST_ADMIN_KEY  # the client found the admin key where the server did


@pytest.fixture(scope="module")
def anonymous(ray_session: None) -> Iterator[dict[str, Any]]:
    """minilm with digits-cnn beside it, answering inference calls that carry no key (development mode)."""
    from ray import serve

    from serving.app import run_local

    app = "inferops-anonymous-test"
    args = default_policy().app_args(
        model="minilm", variant="onnx-fp32", extra_models=["digits-cnn:onnx-fp32"], allow_anonymous=True
    )
    url = run_local(args, name=app, port=free_port(), route_prefix="/anonymous-test")
    yield {"url": url}
    serve.delete(app)


def test_hostile_battery_without_keys_gets_only_4xx_and_the_replicas_stay_alive(
    anonymous: dict[str, Any],
) -> None:
    from tasks.release.hostile_inputs import auth_attacks, corpus, judge, send

    url = anonymous["url"]
    limits = default_policy().endpoint
    with InferopsClient(url, None) as client:
        shape = client.metadata("digits-cnn")["input_shape"]
        requests = [
            *corpus("minilm", "text", limits, files=["onnx-fp32.onnx"]),
            *corpus("digits-cnn", "tensor", limits, input_shape=shape),
            *auth_attacks("minilm", TEST_API_KEY, TEST_ADMIN_KEY, keys_required=False, limits=limits),
        ]
        failures = []
        for req in requests:
            resp = send(url, req, None)
            ok, why = judge(req, resp)
            if not ok:
                failures.append(f"{req.name}: {why} {resp.body[:200]!r}")
            elif req.kind != "file_access" and resp.body.startswith(b"{"):
                error = json.loads(resp.body).get("error", {})
                if not {"field", "rule", "limit", "message"} <= set(error):
                    failures.append(f"{req.name}: error body lacks field/rule/limit: {resp.body[:200]!r}")
        assert not failures, f"{len(failures)} of {len(requests)} cases:\n" + "\n".join(failures)
        print(f"hostile battery, anonymous endpoint: {len(requests)} cases, all refused with a 4xx")
        # both models still answer, with no key, after all of that
        assert client.call(routes.READY).status_code == 200
        assert client.embed("minilm", ["still serving"]).shape == (1, 384)
        assert client.call(routes.MODEL, "digits-cnn", key=None).status_code == 200
