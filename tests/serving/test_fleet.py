"""Serving knobs on every replica over real HTTP: the response cache, threads, replica count, and switches that
reach all replicas (including ones Serve starts later)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from serving import routes
from serving.client import EndpointError, InferopsClient
from serving.network import free_port

APP = "inferops-fleet-test"
KEY = "test-key-fleet"
MODEL = "digits-cnn"
OTHER = "onnx-int8-dynamic"


@pytest.fixture(scope="module")
def served(ray_session: None) -> Iterator[dict[str, Any]]:
    from ray import serve

    from serving.app import run_local
    from serving.variants import ensure_variant

    first = ensure_variant(MODEL, "onnx-fp32")
    other = ensure_variant(MODEL, OTHER)
    url = run_local(
        {"model": MODEL, "variant": "onnx-fp32", "api_keys": KEY},
        name=APP,
        port=free_port(),
        route_prefix="/fleet",
    )
    client = InferopsClient(url, KEY, timeout_s=60)
    yield {"url": url, "client": client, "first": first, "other": other}
    client.close()
    serve.delete(APP)


def _image(seed: int) -> dict[str, Any]:
    pixels = np.random.default_rng(seed).uniform(0, 16, size=64).astype(np.float32)
    return {"inputs": [{"name": "x", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": pixels.tolist()}]}


def test_response_cache_answers_repeats_with_the_models_own_output(served: dict[str, Any]) -> None:
    client: InferopsClient = served["client"]
    off = client.call(routes.INFER, MODEL, json=_image(1))
    assert off.status_code == 200 and off.headers["x-inferops-cache"] == "bypass"  # policy default: cache off

    applied = client.apply_knobs(MODEL, {"cache_entries": 2})
    assert {v["cache_entries"] for v in applied["replicas"].values()} == {2}
    first = client.call(routes.INFER, MODEL, json=_image(1))
    again = client.call(routes.INFER, MODEL, json=_image(1))
    fresh = client.call(routes.INFER, MODEL, json=_image(1), headers={"Cache-Control": "no-cache"})
    assert (first.headers["x-inferops-cache"], again.headers["x-inferops-cache"]) == ("miss", "hit")
    assert fresh.headers["x-inferops-cache"] == "bypass"
    rows = [r.json()["outputs"][0]["data"] for r in (off, first, again, fresh)]
    assert rows[0] == rows[1] == rows[2] == rows[3]  # a cached answer is the model's answer, byte for byte
    # LRU of 2: a third distinct input evicts the least recently used one
    client.call(routes.INFER, MODEL, json=_image(2))
    client.call(routes.INFER, MODEL, json=_image(3))
    evicted = client.call(routes.INFER, MODEL, json=_image(1))
    assert evicted.headers["x-inferops-cache"] == "miss"
    cache = client.metadata(MODEL)["cache"]
    assert cache["capacity"] == 2 and cache["entries"] == 2 and cache["hits"] == 1 and cache["misses"] == 4


def test_bad_knobs_are_refused_and_nothing_changes(served: dict[str, Any]) -> None:
    client: InferopsClient = served["client"]
    before = client.metadata(MODEL)
    for body, status, field in (
        ({"cache_entries": -1}, 400, "cache_entries"),
        ({"num_replicas": 0}, 400, "num_replicas"),
        ({"max_batch_size": "many"}, 400, "max_batch_size"),
        ({"threads": 2}, 400, "threads"),
        ({}, 400, "body"),
    ):
        resp = client.call(routes.SERVING, MODEL, json=body)
        assert resp.status_code == status, (body, resp.text)
        assert field in resp.text
    assert client.call(routes.SERVING, "no-such-model", json={"cache_entries": 1}).status_code == 404
    assert client.call(routes.SERVING, MODEL, json={"cache_entries": 1}, key=None).status_code == 401
    after = client.metadata(MODEL)
    for key in ("sha256", "batching", "intra_op_threads"):
        assert after[key] == before[key]
    assert after["cache"]["capacity"] == before["cache"]["capacity"]


def test_replicas_threads_and_switches_reach_every_replica(served: dict[str, Any]) -> None:
    client: InferopsClient = served["client"]
    first, other = served["first"], served["other"]
    applied = client.apply_knobs(MODEL, {"num_replicas": 2, "intra_op_threads": 2, "max_batch_size": 4})
    assert len(applied["replicas"]) == 2
    assert all(v["intra_op_threads"] == 2 and v["max_batch_size"] == 4 for v in applied["replicas"].values())

    # a switch lands on one replica and is written to the deployment's config: the other replica follows
    resp = client.call(routes.SWITCH, MODEL, json={"variant": OTHER})
    assert resp.status_code == 200 and resp.json()["propagation"]["persisted"] is True, resp.text
    done = client.wait_until(MODEL, lambda v: v["sha256"] == other.sha256, replicas=2, timeout_s=120)
    assert done.converged, done.reason
    assert {v["intra_op_threads"] for v in done.replicas.values()} == {2}  # the switch kept the threads

    # a replica started later serves the switched model, not the one the app was built with
    client.apply_knobs(MODEL, {"num_replicas": 3})
    done = client.wait_until(MODEL, lambda v: v["sha256"] == other.sha256, replicas=3, timeout_s=120)
    assert done.converged, done.reason

    resp = client.call(routes.ROLLBACK, MODEL)
    assert resp.status_code == 200, resp.text
    done = client.wait_until(MODEL, lambda v: v["sha256"] == first.sha256, replicas=3, timeout_s=120)
    assert done.converged, done.reason
    client.apply_knobs(MODEL, {"num_replicas": 1, "intra_op_threads": 1})
    ok = client.call(routes.INFER, MODEL, json=_image(5))
    assert ok.status_code == 200 and ok.json()["parameters"]["sha256"] == first.sha256


def test_rollback_after_a_thread_change_returns_to_the_previous_model(served: dict[str, Any]) -> None:
    """A knob reload of the same model must not become the rollback target, and the options travel with the
    engine: after rollback the replica reports the threads its engine was loaded with."""
    client: InferopsClient = served["client"]
    first, other = served["first"], served["other"]
    client.apply_knobs(MODEL, {"num_replicas": 1, "intra_op_threads": 1}, expect_sha256=first.sha256)
    resp = client.call(routes.SWITCH, MODEL, json={"variant": OTHER})
    assert resp.status_code == 200, resp.text
    client.apply_knobs(MODEL, {"num_replicas": 1, "intra_op_threads": 2}, expect_sha256=other.sha256)
    back = client.call(routes.ROLLBACK, MODEL)
    assert back.status_code == 200 and back.json()["serving_sha256"] == first.sha256, back.text
    meta = client.metadata(MODEL)
    assert meta["sha256"] == first.sha256 and meta["intra_op_threads"] == 1


def test_knobs_that_cannot_converge_are_put_back(served: dict[str, Any]) -> None:
    """More replicas than Ray has CPUs never become ready: the change is reverted, and the error says so."""
    client: InferopsClient = served["client"]
    url = served["url"]
    before = client.metadata(MODEL)
    with pytest.raises(EndpointError, match="did not take.*put back the knobs that served before"):
        client.apply_knobs(MODEL, {"num_replicas": 16, "cache_entries": 7}, timeout_s=10)
    done = client.wait_until(
        MODEL,
        lambda v: v["cache_entries"] == before["cache"]["capacity"] and v["sha256"] == before["sha256"],
        replicas=1,
        timeout_s=120,
        exact=True,
    )
    assert done.converged, done.reason
    with pytest.raises(EndpointError, match="HTTP 401"), InferopsClient(url, "wrong-key") as wrong:
        wrong.apply_knobs(MODEL, {"cache_entries": 3})
