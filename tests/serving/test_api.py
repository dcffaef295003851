"""The served application over real HTTP on loopback: APIs, auth, validation, batching reconfigure, multi-model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from serving import routes
from serving.client import InferopsClient, auth_headers
from serving.network import free_port
from tasks.policy import default_policy

APP = "inferops-api-test"
KEY = "test-key-api"
AUTH = auth_headers(KEY)
TEXTS = [
    "The cat sat on the mat.",
    "Ray Serve batches requests.",
    "short",
    "An embedding is a vector of floats.",
]


EXPIRED_KEY = "test-key-expired"


def _args(key_file: str, **batching: Any) -> dict[str, Any]:
    return {
        "model": "minilm",
        "variant": "onnx-fp32",
        "api_keys": KEY,
        "api_keys_file": key_file,
        "extra_models": _EXTRA,
        **batching,
    }


_EXTRA: list[str] = []
_EXTRA_SKIP: str | None = None


@pytest.fixture(scope="module")
def served(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One app for the whole module: minilm in the ingress, digits-cnn as a second deployment when it builds."""
    global _EXTRA_SKIP
    from ray import serve

    from serving.app import run_local
    from serving.variants import ensure_variant

    try:
        ensure_variant("digits-cnn", "onnx-fp32")
        _EXTRA.append("digits-cnn:onnx-fp32")
    except Exception as exc:  # the zoo's digits model is another module's; say why multi-model is skipped
        _EXTRA_SKIP = f"digits-cnn variant could not be built: {type(exc).__name__}: {exc}"[:300]
    key_file = tmp_path_factory.mktemp("keys") / "api-keys"
    key_file.write_text(f"{EXPIRED_KEY} expires=2020-01-01\n")
    url = run_local(
        _args(str(key_file), max_batch_size=4, batch_wait_timeout_s=0.05), name=APP, port=free_port()
    )
    client = InferopsClient(url, KEY, timeout_s=60)
    yield {"url": url, "client": client, "key_file": str(key_file)}
    client.close()
    serve.delete(APP)
    _EXTRA.clear()


def _timing(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur)
    return out


def test_health_is_open_and_names_variant_sha_and_provider(served: dict[str, Any]) -> None:
    client: InferopsClient = served["client"]
    assert client.call(routes.LIVE).json() == {"live": True}
    ready = client.call(routes.READY)
    assert ready.status_code == 200
    minilm = next(m for m in ready.json()["models"] if m["name"] == "minilm")
    assert minilm["variant"] == "onnx-fp32" and len(minilm["sha256"]) == 64
    assert minilm["provider"] == "CPUExecutionProvider" and minilm["fallback_reason"] is None
    assert minilm["accelerator"] == "cpu"
    assert client.call(routes.MODEL_READY, "minilm").json()["ready"] is True


def test_embeddings_match_the_in_process_engine(served: dict[str, Any]) -> None:
    from serving.engines import load_engine
    from serving.variants import ensure_variant

    client: InferopsClient = served["client"]
    artifact = ensure_variant("minilm", "onnx-fp32")
    expected = load_engine(artifact.path).infer(TEXTS)
    resp = client.call(routes.EMBEDDINGS, json={"model": "minilm", "input": TEXTS})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list" and body["model"] == "minilm"
    assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (
        body["usage"]["prompt_tokens"] > len(TEXTS)
        and body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]
    )
    timing = _timing(resp.headers["server-timing"])
    assert set(timing) == {"queue", "batch_wait", "tokenize", "compute", "serialize"}
    assert timing["compute"] > 0 and all(v >= 0 for v in timing.values())
    # base64 encoding decodes to the same floats
    b64 = client.call(
        routes.EMBEDDINGS, json={"model": "minilm", "input": TEXTS[0], "encoding_format": "base64"}
    )
    import base64

    decoded = np.frombuffer(base64.b64decode(b64.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, expected[0], atol=1e-4)


def test_open_inference_protocol_infer_and_metadata(served: dict[str, Any]) -> None:
    client: InferopsClient = served["client"]
    body = {"id": "r1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": TEXTS[:2]}]}
    resp = client.call(routes.INFER, "minilm", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["id"] == "r1" and out["outputs"][0]["datatype"] == "FP32"
    assert out["outputs"][0]["shape"] == [2, 384] and len(out["outputs"][0]["data"]) == 2 * 384
    assert "server-timing" in resp.headers
    meta = client.metadata("minilm")
    assert meta["sha256"] == out["parameters"]["sha256"] and meta["max_tokens"] > 0 and meta["dim"] == 384
    assert meta["accelerator"] == "cpu" and meta["engine"]["accelerator"] == "cpu"


def test_openapi_document_lists_the_routes(served: dict[str, Any]) -> None:
    paths = served["client"].call(routes.OPENAPI).json()["paths"]
    for route in (
        routes.EMBEDDINGS,
        routes.INFER,
        routes.READY,
        routes.SWITCH,
        routes.SERVING,
        routes.ROLLBACK,
    ):
        assert route.template in paths


@pytest.mark.parametrize(
    ("route", "body"),
    [
        (routes.EMBEDDINGS, {"model": "minilm", "input": "hi"}),
        (routes.INFER, {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}),
        (routes.MODEL, None),
        (routes.SWITCH, {"variant": "onnx-fp32"}),
        (routes.SERVING, {"cache_entries": 1}),
        (routes.ROLLBACK, None),
    ],
)
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"x-api-key": KEY + "x"}, {"Authorization": KEY}]
)
def test_requests_without_a_valid_key_get_401(
    served: dict[str, Any], route: routes.Route, body: Any, headers: dict[str, str]
) -> None:
    resp = served["client"].call(route, "minilm", json=body, key=None, headers=headers)
    assert resp.status_code == 401
    assert resp.json()["error"]["rule"] == "api_key"
    assert KEY not in resp.text


def test_x_api_key_header_is_accepted(served: dict[str, Any]) -> None:
    resp = served["client"].call(
        routes.EMBEDDINGS, json={"model": "minilm", "input": "hi"}, key=None, headers={"x-api-key": KEY}
    )
    assert resp.status_code == 200


def test_hostile_corpus_gets_4xx_naming_the_rule_and_the_replica_keeps_serving(
    served: dict[str, Any],
) -> None:
    from tasks.release.hostile_inputs import auth_attacks, corpus, judge, send
    from tests.conftest import TEST_ADMIN_KEY

    client: InferopsClient = served["client"]
    limits = default_policy().endpoint
    requests = corpus("minilm", "text", limits, files=["onnx-fp32.onnx"])
    requests += auth_attacks("minilm", KEY, TEST_ADMIN_KEY, expired_key=EXPIRED_KEY, limits=limits)
    meta = client.call(routes.MODEL, "digits-cnn")
    if meta.status_code == 200:
        requests += corpus("digits-cnn", "tensor", limits, input_shape=meta.json()["input_shape"])
    failures = []
    for req in requests:
        resp = send(served["url"], req, KEY)
        ok, why = judge(req, resp)
        if not ok:
            failures.append(f"{req.name}: {why} {resp.body[:200]!r}")
        elif req.kind != "file_access" and resp.status is not None and resp.body.startswith(b"{"):
            import json

            error = json.loads(resp.body).get("error", {})
            if not {"field", "rule", "limit", "message"} <= set(error):
                failures.append(f"{req.name}: error body lacks field/rule/limit: {resp.body[:200]!r}")
    assert not failures, f"{len(failures)} of {len(requests)} cases:\n" + "\n".join(failures)
    print(f"hostile battery, keyed endpoint: {len(requests)} cases, all refused with a 4xx")
    # the replica is alive and still right after all of that
    resp = client.call(routes.EMBEDDINGS, json={"model": "minilm", "input": TEXTS[:1]})
    assert resp.status_code == 200
    assert client.call(routes.READY).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "rule", "limit"),
    [
        (
            {"model": "minilm", "input": ["a"] * (default_policy().endpoint.max_items + 1)},
            400,
            "max_items",
            default_policy().endpoint.max_items,
        ),
        ({"model": "minilm", "input": ""}, 400, "non_empty", 1),
        ({"model": "minilm", "input": []}, 400, "min_items", 1),
        ({"model": "nope", "input": "hi"}, 404, "known_model", None),
        ({"model": "minilm", "input": "word " * 400}, 400, "max_tokens", None),
        ({"model": "minilm", "input": 42}, 400, None, None),
    ],
)
def test_endpoint_contract_errors(
    served: dict[str, Any], payload: Any, status: int, rule: str | None, limit: Any
) -> None:
    resp = served["client"].call(routes.EMBEDDINGS, json=payload)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    if rule:
        assert error["rule"] == rule
    if limit is not None:
        assert error["limit"] == limit
    if rule == "max_tokens":
        assert error["limit"] == served["client"].metadata("minilm")["max_tokens"]


def test_over_long_text_is_served_when_truncation_is_asked(served: dict[str, Any]) -> None:
    resp = served["client"].call(
        routes.EMBEDDINGS, json={"model": "minilm", "input": "word " * 400, "truncate": True}
    )
    assert resp.status_code == 200, resp.text
    meta = served["client"].metadata("minilm")
    assert resp.json()["usage"]["prompt_tokens"] == meta["max_tokens"]


async def _burst(url: str, n: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        calls = [
            client.post(
                routes.EMBEDDINGS.path(), json={"model": "minilm", "input": f"text number {i}"}, headers=AUTH
            )
            for i in range(n)
        ]
        return [r.status_code for r in await asyncio.gather(*calls)]


def test_reconfigure_of_batching_takes_effect_without_restart(served: dict[str, Any]) -> None:
    from serving.app import run_local

    client: InferopsClient = served["client"]
    before = client.metadata("minilm")
    assert before["batching"]["max_batch_size"] == 4
    assert asyncio.run(_burst(served["url"], 24)) == [200] * 24
    sizes = {int(k) for k in client.metadata("minilm")["recent_batch_sizes"]}
    assert max(sizes) <= 4

    run_local(_args(served["key_file"], max_batch_size=32, batch_wait_timeout_s=0.1), name=APP)
    after = client.metadata("minilm")
    assert after["batching"] == {**before["batching"], "max_batch_size": 32, "batch_wait_timeout_s": 0.1}
    assert after["replica"] == before["replica"], "reconfigure must not restart the replica"
    seen_before = after["recent_batch_sizes"]
    assert asyncio.run(_burst(served["url"], 24)) == [200] * 24
    seen = client.metadata("minilm")["recent_batch_sizes"]
    new_sizes = {int(k) for k, v in seen.items() if v > seen_before.get(k, 0)}
    assert max(new_sizes) > 4, f"no batch above the old limit after reconfigure: {seen}"


def test_padding_efficiency_is_reported(served: dict[str, Any]) -> None:
    meta = served["client"].metadata("minilm")
    assert 0 < meta["padding_efficiency"] <= 1


def test_second_model_has_its_own_route_and_deployment(served: dict[str, Any]) -> None:
    if _EXTRA_SKIP:
        pytest.skip(_EXTRA_SKIP)
    from serving.engines import load_engine
    from serving.variants import ensure_variant

    client: InferopsClient = served["client"]
    meta = client.metadata("digits-cnn")
    assert meta["kind"] == "tensor" and meta["replica"] != client.metadata("minilm")["replica"]
    engine = load_engine(ensure_variant("digits-cnn", "onnx-fp32").path)
    shape = [2, *[d or 1 for d in meta["input_shape"][1:]]]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    body = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    resp = client.call(routes.INFER, "digits-cnn", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()["outputs"][0]
    np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), engine.infer(x), atol=1e-4)
    bad = client.call(routes.EMBEDDINGS, json={"model": "digits-cnn", "input": "hi"})
    assert bad.status_code == 400 and bad.json()["error"]["rule"] == "text_model"


def test_gpu_replicas_ask_for_a_gpu_and_use_cuda() -> None:
    from serving.app import AppArgs, cuda_gpu_count_hint
    from serving.engines import gpu_providers

    if cuda_gpu_count_hint() == 0:
        pytest.skip("no CUDA GPU with onnxruntime-gpu on this machine: GPU placement cannot be exercised")
    assert AppArgs().gpus() == 1.0
    assert gpu_providers("trt-fp16")[0] == "TensorrtExecutionProvider"


def test_custom_metrics_reach_rays_prometheus_endpoint(served: dict[str, Any]) -> None:
    """Batch size, compute time and padding efficiency are exported on Ray's metrics port (what Prometheus scrapes)."""
    import time

    import ray

    client: InferopsClient = served["client"]
    for text in TEXTS:
        assert client.call(routes.EMBEDDINGS, json={"model": "minilm", "input": text}).status_code == 200
    port = ray._private.worker.global_worker.node.metrics_export_port
    wanted = (
        "ray_inferops_batch_size_bucket",
        "ray_inferops_model_compute_ms_bucket",
        "ray_inferops_padding_efficiency",
    )
    deadline = time.monotonic() + 60  # Ray exports custom metrics on a reporting interval of several seconds
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if all(name in text for name in wanted):
            break
        time.sleep(2)
    missing = [name for name in wanted if name not in text]
    assert not missing, f"not on Ray's metrics endpoint after 60 s: {missing}"
    assert 'model="minilm"' in text
