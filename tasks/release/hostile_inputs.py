"""A corpus of hostile requests for the security gate, and a raw sender that does not tidy them up.

Each request is sent byte for byte (http.client keeps `..` segments, invalid UTF-8 and lying bodies that a
friendly client such as httpx would normalise or refuse), so what is tested is what an attacker can send.
"""

from __future__ import annotations

import http.client
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from serving import routes
from serving.config import EndpointLimits

# Nesting far beyond any sane request (the server's own cap is much lower) but cheap to build and send.
DEEP_JSON_LEVELS = 5000
# Words in a text that stays under the character limit but is far over a transformer's token limit.
OVERLONG_TOKEN_WORDS = 1500
# Where a careless server (static mount, artifact store, path join) would expose model files.
FILE_ROUTE_TEMPLATES = (
    "/../models/{model}/{file}",
    "/../../.inferops/models/{model}/{file}",
    "/%2e%2e/%2e%2e/models/{model}/{file}",
    "/static/{file}",
    "/static/../models/{model}/{file}",
    "/models/{model}/{file}",
    "/files/{model}/{file}",
    "/v2/models/{model}/{file}",
    "/v2/models/{model}/../../../models/{model}/{file}",
    "/v2/models/{model}/files/{file}",
    "/v2/models/..%2f..%2fmodels%2f{model}%2f{file}/infer",
    "/mlartifacts/{file}",
    "/v2/models/{model}/..%2f..%2f..%2fetc%2fpasswd",
)

# input: a bad body on an inference route; admin_input: a bad body on an admin route (sent with the admin key);
# auth: a bad or misplaced key, refused with exactly the status named; file_access: a fetch of model files.
Kind = Literal["input", "admin_input", "auth", "file_access"]


@dataclass(frozen=True)
class HostileRequest:
    """One request a trusted server must refuse with a 4xx (never a 5xx, never a crash, never file bytes)."""

    name: str
    method: str
    path: str  # sent as is: no normalisation of `..` or percent escapes
    body: bytes = b""
    expect_status: int = 400  # the status SPEC §7 names; any non-auth 4xx passes the gate
    rule: str = ""
    kind: Kind = "input"
    chunked: bool = False  # send without Content-Length, so only the server's streaming cap can stop it
    headers: tuple[tuple[str, str], ...] = field(default=(("Content-Type", "application/json"),))


@dataclass(frozen=True)
class RawResponse:
    status: int | None  # None: no HTTP response at all (connection reset, timeout)
    body: bytes
    error: str = ""


def _json(payload: object) -> bytes:
    return json.dumps(payload, allow_nan=True).encode()


def _deep_json(levels: int) -> bytes:
    return b'{"model": "x", "input": ' + b"[" * levels + b"]" * levels + b"}"


def _padded_to(size: int, prefix: bytes, suffix: bytes) -> bytes:
    """Valid-looking JSON of exactly `size` bytes (a string field padded with 'a')."""
    return prefix + b"a" * max(0, size - len(prefix) - len(suffix)) + suffix


def _oip(name: str, shape: list[int], datatype: str, data: Sequence[object]) -> dict[str, object]:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


def text_inputs(model: str, limits: EndpointLimits) -> list[HostileRequest]:
    """Hostile bodies for a text (embedding) model on both the OIP and OpenAI routes."""
    infer = routes.INFER.path(model)
    emb = routes.EMBEDDINGS.template
    too_many = ["hello"] * (limits.max_items + 1)
    overlong_chars = "a" * (limits.max_text_chars + 1)
    overlong_tokens = " ".join(["antidisestablishmentarianism"] * OVERLONG_TOKEN_WORDS)[
        : limits.max_text_chars
    ]
    return [
        HostileRequest(
            "embeddings: huge batch",
            "POST",
            emb,
            _json({"model": model, "input": too_many}),
            rule="max_items",
        ),
        HostileRequest(
            "embeddings: empty string", "POST", emb, _json({"model": model, "input": ""}), rule="non_empty"
        ),
        HostileRequest(
            "embeddings: empty list", "POST", emb, _json({"model": model, "input": []}), rule="min_items"
        ),
        HostileRequest(
            "embeddings: over-long text (chars)",
            "POST",
            emb,
            _json({"model": model, "input": overlong_chars}),
            rule="max_text_chars",
        ),
        HostileRequest(
            "embeddings: over-long text (tokens)",
            "POST",
            emb,
            _json({"model": model, "input": overlong_tokens}),
            rule="max_tokens",
        ),
        HostileRequest(
            "embeddings: NaN as input", "POST", emb, _json({"model": model, "input": [math.nan]}), rule="type"
        ),
        HostileRequest(
            "embeddings: number as input", "POST", emb, _json({"model": model, "input": 42}), rule="type"
        ),
        HostileRequest(
            "embeddings: nested lists",
            "POST",
            emb,
            _json({"model": model, "input": [["a"], ["b"]]}),
            rule="type",
        ),
        HostileRequest(
            "embeddings: unknown model",
            "POST",
            emb,
            _json({"model": "no-such-model", "input": "hi"}),
            404,
            "model",
        ),
        HostileRequest(
            "oip text: wrong datatype FP32",
            "POST",
            infer,
            _json(_oip("text", [2], "FP32", [1.0, 2.0])),
            rule="datatype",
        ),
        HostileRequest(
            "oip text: huge batch",
            "POST",
            infer,
            _json(_oip("text", [len(too_many)], "BYTES", too_many)),
            rule="max_items",
        ),
        HostileRequest(
            "oip text: empty list", "POST", infer, _json(_oip("text", [0], "BYTES", [])), rule="min_items"
        ),
        HostileRequest(
            "oip text: empty string", "POST", infer, _json(_oip("text", [1], "BYTES", [""])), rule="non_empty"
        ),
    ]


def tensor_inputs(
    model: str, limits: EndpointLimits, input_shape: list[int | None] | None
) -> list[HostileRequest]:
    """Hostile bodies for a tensor model: dtypes, shapes, NaN, batch size, element counts."""
    infer = routes.INFER.path(model)
    row = [d if d and d > 0 else 1 for d in (input_shape or [None, 4])[1:]] or [1]
    per_row = math.prod(row)
    nan_data: list[object] = [0.0] * per_row
    nan_data[0] = math.nan
    return [
        HostileRequest(
            "oip tensor: BYTES for a numeric model",
            "POST",
            infer,
            _json(_oip("x", [1], "BYTES", ["a"])),
            rule="datatype",
        ),
        HostileRequest(
            "oip tensor: strings as data",
            "POST",
            infer,
            _json(_oip("x", [1, *row], "FP32", ["a"] * per_row)),
            rule="numeric",
        ),
        HostileRequest(
            "oip tensor: shape/data mismatch",
            "POST",
            infer,
            _json(_oip("x", [2, *row], "FP32", [0.0] * per_row)),
            rule="shape_match",
        ),
        HostileRequest(
            "oip tensor: wrong shape for the model",
            "POST",
            infer,
            _json(_oip("x", [1, per_row + 3], "FP32", [0.0] * (per_row + 3))),
            rule="model_shape",
        ),
        HostileRequest(
            "oip tensor: negative dimension",
            "POST",
            infer,
            _json(_oip("x", [-1, *row], "FP32", [0.0] * per_row)),
            rule="non_negative",
        ),
        HostileRequest(
            "oip tensor: billion-element shape claim",
            "POST",
            infer,
            _json(_oip("x", [1, 10**9], "FP32", [0.0])),
            rule="shape_match",
        ),
        HostileRequest(
            "oip tensor: NaN", "POST", infer, _json(_oip("x", [1, *row], "FP32", nan_data)), rule="finite"
        ),
        HostileRequest(
            "oip tensor: Infinity",
            "POST",
            infer,
            _json(_oip("x", [1, *row], "FP32", [math.inf] * per_row)),
            rule="finite",
        ),
        HostileRequest(
            "oip tensor: huge batch",
            "POST",
            infer,
            _json(
                _oip("x", [limits.max_items + 1, *row], "FP32", [0.0] * (per_row * (limits.max_items + 1)))
            ),
            rule="max_items",
        ),
        HostileRequest(
            "oip tensor: empty batch",
            "POST",
            infer,
            _json(_oip("x", [0, *row], "FP32", [])),
            rule="min_items",
        ),
    ]


def body_attacks(model: str, limits: EndpointLimits) -> list[HostileRequest]:
    """Attacks on the body itself, common to every model: size, encoding, syntax, depth, structure."""
    infer = routes.INFER.path(model)
    big = limits.max_body_bytes + 1
    prefix = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["'
    return [
        HostileRequest(
            "oversized body", "POST", infer, _padded_to(big, prefix, b'"]}]}'), 413, "max_body_bytes"
        ),
        HostileRequest(
            "oversized body without Content-Length",
            "POST",
            infer,
            _padded_to(big, prefix, b'"]}]}'),
            413,
            "max_body_bytes",
            chunked=True,
        ),
        HostileRequest("invalid UTF-8", "POST", infer, prefix + b"\xff\xfe\xc3\x28" + b'"]}]}', rule="utf8"),
        HostileRequest("not JSON", "POST", infer, b"{{{{ not json", rule="json"),
        HostileRequest("empty body", "POST", infer, b"", rule="required"),
        HostileRequest("deeply nested JSON", "POST", infer, _deep_json(DEEP_JSON_LEVELS), rule="max_depth"),
        HostileRequest("JSON array instead of object", "POST", infer, b"[1, 2, 3]", rule="type"),
        HostileRequest(
            "unknown field", "POST", infer, _json({"inputs": [], "evil": True}), rule="extra_forbidden"
        ),
        HostileRequest("no inputs", "POST", infer, _json({"inputs": []}), rule="min_items"),
        HostileRequest(
            "unknown model",
            "POST",
            routes.INFER.path("no-such-model"),
            _json(_oip("x", [1], "FP32", [0.0])),
            404,
            "model",
        ),
        HostileRequest(
            "traversal in model name",
            "POST",
            "/v2/models/..%2f..%2fetc/infer",
            _json(_oip("x", [1], "FP32", [0.0])),
            404,
            "model",
        ),
    ]


def file_access(model: str, files: list[str]) -> list[HostileRequest]:
    """GETs that try to fetch model artifacts (or anything on disk) over HTTP."""
    names = list(dict.fromkeys([*files, "model.onnx"]))
    return [
        HostileRequest(
            f"fetch {tpl.format(model=model, file=name)}",
            "GET",
            tpl.format(model=model, file=name),
            kind="file_access",
            expect_status=404,
            rule="no_file_access",
            headers=(),
        )
        for name in names
        for tpl in FILE_ROUTE_TEMPLATES
    ]


def _bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("Content-Type", "application/json"), ("Authorization", f"Bearer {key}"))


def auth_attacks(
    model: str,
    inference_key: str,
    admin_key: str,
    *,
    expired_key: str | None = None,
    keys_required: bool = True,
    limits: EndpointLimits | None = None,
) -> list[HostileRequest]:
    """Forged, expired, malformed and misplaced keys on every keyed route, and bad bodies on the admin routes.

    Admin routes refuse an inference key with 403 and anything else that is not an admin key with 401; inference
    routes refuse a forged or expired key with 401 (and no key, unless the endpoint allows anonymous calls).
    """
    emb = routes.EMBEDDINGS.template
    infer = routes.INFER.path(model)
    meta = routes.MODEL.path(model)
    inference_routes = [
        ("embeddings", "POST", emb, _json({"model": model, "input": "hi"})),
        ("oip infer", "POST", infer, _json(_oip("text", [1], "BYTES", ["hi"]))),
        ("model metadata", "GET", meta, b""),
    ]
    admin_routes = [
        ("switch", routes.SWITCH.method, routes.SWITCH.path(model), _json({"variant": "onnx-fp32"})),
        ("serving knobs", routes.SERVING.method, routes.SERVING.path(model), _json({"cache_entries": 1})),
        ("serving config", routes.SERVING_CONFIG.method, routes.SERVING_CONFIG.path(model), b""),
        ("rollback", routes.ROLLBACK.method, routes.ROLLBACK.path(model), b""),
    ]
    plain: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    bad_keys: list[tuple[str, tuple[tuple[str, str], ...], str]] = [
        ("forged key", _bearer("forged-" + inference_key[:4]), "api_key"),
        ("key as Basic auth", (*plain, ("Authorization", f"Basic {inference_key}")), "api_key"),
        ("empty Bearer", (*plain, ("Authorization", "Bearer ")), "api_key"),
        ("key in a query string only", plain, "api_key"),
    ]
    if expired_key:
        bad_keys.append(("expired key", _bearer(expired_key), "key_expired"))
    out: list[HostileRequest] = []
    for route_name, method, path, body in inference_routes:
        for key_name, headers, rule in bad_keys:
            if key_name == "key in a query string only":
                if not keys_required:
                    continue  # anonymous calls are allowed there: no key is not an error
                path_q = f"{path}?api_key={inference_key}"
                out.append(
                    HostileRequest(
                        f"{route_name}: {key_name}", method, path_q, body, 401, rule, "auth", headers=headers
                    )
                )
                continue
            out.append(
                HostileRequest(
                    f"{route_name}: {key_name}", method, path, body, 401, rule, "auth", headers=headers
                )
            )
        if keys_required:
            out.append(
                HostileRequest(
                    f"{route_name}: no key", method, path, body, 401, "api_key", "auth", headers=plain
                )
            )
    for route_name, method, path, body in admin_routes:
        out.append(
            HostileRequest(
                f"admin {route_name}: no key", method, path, body, 401, "api_key", "auth", headers=plain
            )
        )
        out.append(
            HostileRequest(
                f"admin {route_name}: inference key",
                method,
                path,
                body,
                403,
                "admin_key",
                "auth",
                headers=_bearer(inference_key),
            )
        )
        for key_name, headers, rule in bad_keys:
            if key_name != "key in a query string only":
                out.append(
                    HostileRequest(
                        f"admin {route_name}: {key_name}",
                        method,
                        path,
                        body,
                        401,
                        rule,
                        "auth",
                        headers=headers,
                    )
                )
    big = (limits.max_body_bytes if limits else 8 << 20) + 1
    admin = _bearer(admin_key)
    switch, serving = routes.SWITCH.path(model), routes.SERVING.path(model)
    out += [
        HostileRequest(
            "admin switch: oversized body",
            "POST",
            switch,
            _padded_to(big, b'{"variant": "', b'"}'),
            413,
            "max_body_bytes",
            "admin_input",
            headers=admin,
        ),
        HostileRequest(
            "admin switch: not JSON", "POST", switch, b"{variant", 400, "json", "admin_input", headers=admin
        ),
        HostileRequest(
            "admin switch: malformed sha256",
            "POST",
            switch,
            _json({"path": "/etc/passwd", "sha256": "../../x"}),
            400,
            "string_pattern_mismatch",
            "admin_input",
            headers=admin,
        ),
        HostileRequest(
            "admin switch: unknown field",
            "POST",
            switch,
            _json({"variant": "x", "shell": "rm"}),
            400,
            "extra_forbidden",
            "admin_input",
            headers=admin,
        ),
        HostileRequest(
            "admin serving: negative batch",
            "PUT",
            serving,
            _json({"max_batch_size": -1}),
            400,
            "greater_than_equal",
            "admin_input",
            headers=admin,
        ),
        HostileRequest(
            "admin serving: both replicas and autoscaling",
            "PUT",
            serving,
            _json(
                {
                    "num_replicas": 2,
                    "autoscaling": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2},
                }
            ),
            400,
            "exclusive",
            "admin_input",
            headers=admin,
        ),
        HostileRequest(
            "admin serving: empty change",
            "PUT",
            serving,
            _json({}),
            400,
            "non_empty",
            "admin_input",
            headers=admin,
        ),
        HostileRequest(
            "admin serving: unknown model",
            "PUT",
            routes.SERVING.path("no-such-model"),
            _json({"cache_entries": 1}),
            404,
            "known_model",
            "admin_input",
            headers=admin,
        ),
    ]
    return out


def corpus(
    model: str,
    kind: Literal["text", "tensor"],
    limits: EndpointLimits,
    *,
    input_shape: list[int | None] | None = None,
    files: list[str] | None = None,
) -> list[HostileRequest]:
    """Every hostile request for one served model."""
    specific = text_inputs(model, limits) if kind == "text" else tensor_inputs(model, limits, input_shape)
    return [*body_attacks(model, limits), *specific, *file_access(model, files or [])]


def _connection(url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint URL {url!r} must be http(s)://host[:port][/prefix]")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname, parts.port, timeout=timeout_s), parts.path.rstrip("/")


def _chunks(body: bytes, size: int = 1 << 16) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def send(url: str, request: HostileRequest, api_key: str | None, timeout_s: float = 30.0) -> RawResponse:
    """Send one hostile request exactly as written; a server that hangs up early still counts if it answered."""
    conn, prefix = _connection(url, timeout_s)
    headers = dict(request.headers)
    if api_key and "Authorization" not in headers and request.kind != "auth":
        headers["Authorization"] = f"Bearer {api_key}"
    sent_error = ""
    try:
        conn.putrequest(request.method, prefix + request.path, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        if request.chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        elif request.body or request.method == "POST":
            conn.putheader("Content-Length", str(len(request.body)))
        conn.endheaders()
        try:
            if request.chunked:
                for chunk in _chunks(request.body):
                    conn.send(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")
                conn.send(b"0\r\n\r\n")
            elif request.body:
                conn.send(request.body)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # A server may answer 413 and close before the body is sent; its answer is still readable.
            sent_error = type(exc).__name__
        response = conn.getresponse()
        return RawResponse(response.status, response.read(), sent_error)
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        return RawResponse(None, b"", f"{type(exc).__name__}: {exc}".strip())
    finally:
        conn.close()


def judge(
    request: HostileRequest, response: RawResponse, artifact_head: bytes | None = None
) -> tuple[bool, str]:
    """A 4xx that is about the request (not 401/403/429) and, for file fetches, no artifact bytes in the body."""
    status = response.status
    if status is None:
        return (
            False,
            f"no HTTP answer ({response.error or 'connection dropped'}); expected {request.expect_status}",
        )
    if request.kind == "auth":  # the status is the contract: 401 for who you are, 403 for what you may do
        if status != request.expect_status:
            return False, f"got {status}, expected {request.expect_status} ({request.rule})"
        return True, f"refused with {status}"
    if status in (401, 403) and request.kind in ("input", "admin_input"):
        return (
            False,
            f"got {status}: refused for the key, so the input itself was never judged (check the API key)",
        )
    if status == 429:
        return (
            False,
            "got 429: rate-limited, the input was never judged (raise the rate limit for the gate's key)",
        )
    if not 400 <= status < 500:
        return False, f"got {status}, expected a 4xx ({request.expect_status} per the endpoint contract)"
    if artifact_head and artifact_head in response.body:
        return False, f"got {status} but the body holds model artifact bytes"
    note = "" if status == request.expect_status else f" (contract names {request.expect_status})"
    return True, f"refused with {status}{note}"
