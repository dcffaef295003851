"""HTTP API: Open Inference Protocol v2 + OpenAI `/v1/embeddings`, with request schemas, limits and JSON errors.

Routes are plain functions over an `InferenceService` (the Ray Serve ingress replica), so this module holds no
Ray code. Bodies are read by hand (size-capped while streaming, UTF-8 and depth checked) before pydantic sees
them: hostile input must end as a 4xx JSON error naming field, rule and limit, never as a 500.
"""

from __future__ import annotations

import base64
import math
import time
from typing import Any, Literal, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving import routes
from serving.auth import Access, KeyRing, Verdict, presented_key, retry_after_header
from serving.config import BatchSize, BatchWaitS, CacheEntries, EndpointLimits, Replicas, Threads

try:  # orjson is several times faster for big float arrays; json is the fallback
    import orjson

    def _dumps(payload: Any) -> bytes:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)

    def _loads(raw: bytes) -> Any:
        return orjson.loads(raw)

    _DecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - orjson ships with ray[serve]
    import json

    def _dumps(payload: Any) -> bytes:
        return json.dumps(payload, default=lambda o: o.tolist()).encode()

    def _loads(raw: bytes) -> Any:
        return json.loads(raw)

    _DecodeError = json.JSONDecodeError

# Structural limits that the policy does not carry (SPEC §7 has no number for them); generous for real clients.
MAX_JSON_DEPTH = 32
MAX_TENSOR_RANK = 8
MAX_NAME_CHARS = 256
TIMING_PHASES = ("queue", "batch_wait", "tokenize", "compute", "serialize")
DATATYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32}


class RequestRejected(Exception):
    """A request the server refuses: HTTP status plus the field, the rule and the limit it broke."""

    def __init__(self, status: int, field: str, rule: str, limit: Any, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.rule, self.limit, self.message = status, field, rule, limit, message
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {"field": self.field, "rule": self.rule, "limit": self.limit, "message": self.message}
        }

    def as_tuple(self) -> tuple[int, str, str, Any, str]:
        """Picklable form, so a rejection crosses a deployment handle unchanged."""
        return (self.status, self.field, self.rule, self.limit, self.message)


# ---- schemas -------------------------------------------------------------------------------------------------


class EmbeddingsRequest(BaseModel):
    """OpenAI `POST /v1/embeddings` body (token-id inputs are not accepted: send text)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(max_length=MAX_NAME_CHARS)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    truncate: bool = False


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


class RequestedOutput(BaseModel):
    """An output the client asks for by name (the protocol's `$request_output`)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=MAX_NAME_CHARS)
    parameters: dict[str, StrictStr | StrictInt | StrictFloat | StrictBool] | None = None


class InferTensor(BaseModel):
    """One named tensor of the Open Inference Protocol (flat, row-major `data`)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=MAX_NAME_CHARS)
    shape: list[int] = Field(min_length=1, max_length=MAX_TENSOR_RANK)
    datatype: Literal["BYTES", "FP32", "FP64", "FP16", "INT64", "INT32"]
    data: list[str] | list[float]
    parameters: dict[str, StrictStr | StrictInt | StrictFloat | StrictBool] | None = None


class InferRequest(BaseModel):
    """Open Inference Protocol v2 `POST /v2/models/{name}/infer` body."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    inputs: list[InferTensor] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = Field(default=None, max_length=8)
    parameters: dict[str, StrictStr | StrictInt | StrictFloat | StrictBool] | None = None


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[InferOutput]


class SwitchRequest(BaseModel):
    """Admin: what to switch a model to (a variant, a file with its sha256, or an MLflow URI)."""

    model_config = ConfigDict(extra="forbid")
    variant: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    path: str | None = Field(default=None, max_length=4096)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    uri: str | None = Field(default=None, max_length=1024)


class AutoscalingUpdate(BaseModel):
    """Admin: the deployment's Serve `autoscaling_config` (field names as Ray Serve's AutoscalingConfig)."""

    model_config = ConfigDict(extra="forbid")
    min_replicas: int = Field(ge=0)
    max_replicas: Replicas
    target_ongoing_requests: float = Field(gt=0)

    @field_validator("max_replicas")
    @classmethod
    def _not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min_replicas")  # absent when min_replicas itself was refused
        if low is not None and value < low:
            raise PydanticCustomError(
                "min_le_max",
                "max_replicas ({max}) is below min_replicas ({ge}); raise max_replicas or lower min_replicas",
                {"ge": low, "max": value},
            )
        return value


class ServingUpdate(BaseModel):
    """Admin: serving knobs applied to every replica of a model's deployment (unset fields stay as they are)."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: BatchSize | None = None
    batch_wait_timeout_s: BatchWaitS | None = None
    cache_entries: CacheEntries | None = None
    intra_op_threads: Threads | None = None
    num_replicas: Replicas | None = None
    # declared after num_replicas: its validator reads it
    autoscaling: AutoscalingUpdate | None = None

    @field_validator("autoscaling")
    @classmethod
    def _not_with_fixed_replicas(
        cls, value: AutoscalingUpdate | None, info: ValidationInfo
    ) -> AutoscalingUpdate | None:
        # Serve refuses a deployment with both; which one the caller meant is theirs to say
        if value is not None and info.data.get("num_replicas") is not None:
            raise PydanticCustomError(
                "exclusive",
                "num_replicas and autoscaling cannot be set together: send num_replicas for a fixed count "
                "or autoscaling for a range, not both",
            )
        return value


# ---- the service the routes call -------------------------------------------------------------------------------


class InferenceService(Protocol):
    """What the ingress replica provides to the routes (implemented in serving/app.py)."""

    limits: EndpointLimits
    access: Access

    def model_names(self) -> list[str]: ...

    async def rate_limit(self, key_id: str) -> tuple[bool, float]:
        """(allowed, retry_after_s) for one request of `key_id`, counted across every replica."""
        ...

    async def health(self) -> dict[str, Any]: ...

    async def metadata(self, model: str) -> dict[str, Any]: ...

    async def embed(
        self, model: str, texts: list[str], truncate: bool, use_cache: bool = True
    ) -> dict[str, Any]: ...

    async def infer_tensor(self, model: str, array: np.ndarray, use_cache: bool = True) -> dict[str, Any]: ...

    async def configure_model(
        self,
        model: str,
        patch: dict[str, Any],
        num_replicas: int | None,
        autoscaling: dict[str, Any] | None = None,
        expect_version: str | None = None,
    ) -> dict[str, Any]: ...

    async def serving_config(self, model: str) -> dict[str, Any]: ...

    async def switch_model(self, model: str, request: dict[str, Any]) -> dict[str, Any]: ...

    async def rollback_model(self, model: str) -> dict[str, Any]: ...


# ---- request reading and validation (pure helpers, unit-tested directly) -------------------------------------


async def read_json_body(request: Request, max_bytes: int) -> Any:
    """Read at most `max_bytes` (Content-Length and actual bytes), decode UTF-8 and JSON, bound the depth."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestRejected(
                400, "Content-Length", "integer", None, "Content-Length must be a non-negative integer"
            )
        if int(declared) > max_bytes:
            raise body_too_large(int(declared), max_bytes)
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > max_bytes:  # a lying or absent Content-Length must not let a huge body through
            raise body_too_large(len(buf), max_bytes)
    return parse_json_bytes(bytes(buf))


def body_too_large(size: int, limit: int) -> RequestRejected:
    return RequestRejected(
        413, "body", "max_body_bytes", limit, f"request body of {size} bytes exceeds {limit} bytes"
    )


def parse_json_bytes(raw: bytes) -> Any:
    """UTF-8 then JSON then depth; each failure is a 400 naming the rule."""
    if not raw:
        raise RequestRejected(400, "body", "required", None, "request body is empty; send a JSON object")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestRejected(
            400, "body", "utf8", None, f"body is not valid UTF-8 at byte {exc.start}"
        ) from None
    try:
        payload = _loads(raw)
    except (_DecodeError, ValueError) as exc:
        if "recursion" in str(exc).lower():  # orjson's own nesting cap
            raise RequestRejected(
                400, "body", "max_depth", MAX_JSON_DEPTH, "JSON nesting is too deep"
            ) from None
        raise RequestRejected(400, "body", "json", None, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestRejected(400, "body", "max_depth", MAX_JSON_DEPTH, "JSON nesting is too deep") from None
    depth = json_depth(payload, MAX_JSON_DEPTH)
    if depth > MAX_JSON_DEPTH:
        raise RequestRejected(
            400, "body", "max_depth", MAX_JSON_DEPTH, f"JSON nesting deeper than {MAX_JSON_DEPTH}"
        )
    if not isinstance(payload, dict):
        raise RequestRejected(
            400, "body", "type", "object", f"body must be a JSON object, got {type(payload).__name__}"
        )
    return payload


def json_depth(value: Any, stop_at: int) -> int:
    """Nesting depth of a decoded JSON value, iteratively (no recursion), stopping once past `stop_at`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if deepest > stop_at:
                return deepest
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def validate_model(schema: type[BaseModel], payload: Any) -> Any:
    """Pydantic validation whose first error becomes a 400 naming the field, rule and limit."""
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        raise rejection_from_pydantic(exc.errors()) from None


def rejection_from_pydantic(errors: Any) -> RequestRejected:
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
    field = ""
    for part in loc:
        field += f"[{part}]" if part.isdigit() else (f".{part}" if field else part)
    ctx = err.get("ctx") or {}
    limit = next(
        (
            ctx[k]
            for k in ("max_length", "min_length", "ge", "le", "gt", "lt", "pattern", "expected")
            if k in ctx
        ),
        None,
    )
    if limit is not None and not isinstance(limit, int | float | str):
        limit = str(limit)
    return RequestRejected(
        400, field or "body", str(err.get("type", "invalid")), limit, str(err.get("msg", "invalid"))
    )


def check_texts(texts: list[str], limits: EndpointLimits, field: str = "input") -> None:
    """Item count, empty list, empty strings and characters per text (token limits are the model's job)."""
    if not texts:
        raise RequestRejected(400, field, "min_items", 1, f"{field} is an empty list; send at least one text")
    if len(texts) > limits.max_items:
        raise RequestRejected(
            400,
            field,
            "max_items",
            limits.max_items,
            f"{len(texts)} items exceed {limits.max_items}; split the request",
        )
    for i, text in enumerate(texts):
        if not text.strip():
            raise RequestRejected(400, f"{field}[{i}]", "non_empty", 1, f"{field}[{i}] is an empty string")
        if len(text) > limits.max_text_chars:
            raise RequestRejected(
                400,
                f"{field}[{i}]",
                "max_text_chars",
                limits.max_text_chars,
                f"{field}[{i}] has {len(text)} characters, more than {limits.max_text_chars}",
            )


def tensor_from_input(
    tensor: InferTensor, limits: EndpointLimits, expected_shape: list[int | None] | None
) -> np.ndarray:
    """A numeric OIP input -> ndarray, checking dtype, batch size, finiteness and the model's shape. Runs after
    `check_infer_request`, which owns the protocol's shape rules (no negative dimension, data filling the shape)."""
    field = f"inputs[0]({tensor.name})"
    if tensor.datatype == "BYTES":
        raise RequestRejected(
            400, f"{field}.datatype", "datatype", "FP32", "this model takes a numeric tensor, not BYTES"
        )
    count = math.prod(tensor.shape)
    if count == 0:
        raise RequestRejected(
            400, f"{field}.shape", "min_items", 1, f"shape {tensor.shape} holds no elements"
        )
    if tensor.shape[0] > limits.max_items:
        raise RequestRejected(
            400,
            f"{field}.shape[0]",
            "max_items",
            limits.max_items,
            f"batch of {tensor.shape[0]} exceeds {limits.max_items}",
        )
    if any(isinstance(v, str) for v in tensor.data):
        raise RequestRejected(
            400, f"{field}.data", "numeric", tensor.datatype, "data holds strings for a numeric datatype"
        )
    array = np.asarray(tensor.data, dtype=DATATYPES[tensor.datatype]).reshape(tensor.shape)
    if not np.all(np.isfinite(array)):
        raise RequestRejected(400, f"{field}.data", "finite", None, "data holds NaN or infinite values")
    if expected_shape is not None:
        want = list(expected_shape)
        got = list(tensor.shape)
        if len(want) != len(got) or any(
            w is not None and w > 0 and w != g for w, g in zip(want[1:], got[1:], strict=False)
        ):
            raise RequestRejected(
                400,
                f"{field}.shape",
                "model_shape",
                [w if w and w > 0 else -1 for w in want],
                f"shape {got} does not fit the model",
            )
    return array.astype(np.float32, copy=False)


# Parameters the protocol or this server gives a meaning to; anything else is refused rather than ignored, so a
# misspelt `truncate` fails loudly instead of silently serving something else.
REQUEST_PARAMETERS: dict[str, dict[str, type]] = {"text": {"truncate": bool}, "tensor": {}}
TENSOR_PARAMETERS: dict[str, type] = {"content_type": str}
# The protocol's binary tensor extension (raw bytes after the JSON): not implemented here, so named when refused.
BINARY_EXTENSION = ("binary_data", "binary_data_size", "binary_data_output")


def _check_parameters(params: dict[str, Any] | None, allowed: dict[str, type], field: str) -> None:
    for name, value in (params or {}).items():
        if name in BINARY_EXTENSION:
            raise RequestRejected(
                400,
                f"{field}.{name}",
                "binary_extension",
                None,
                "the binary tensor data extension is not supported here: send the tensor as JSON `data`",
            )
        if name not in allowed:
            raise RequestRejected(
                400,
                f"{field}.{name}",
                "known_parameter",
                sorted(allowed),
                f"unknown parameter {name!r}; this model takes {sorted(allowed) or 'no parameters'}",
            )
        want = allowed[name]
        if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
            raise RequestRejected(
                400,
                f"{field}.{name}",
                "parameter_type",
                want.__name__,
                f"parameter {name!r} must be a {want.__name__}, got {type(value).__name__}",
            )


def check_infer_request(req: InferRequest, meta: dict[str, Any]) -> None:
    """The Open Inference Protocol's rules against the model's own metadata: known parameters of the right type,
    requested outputs that exist, the input's datatype as the model declares it, and a shape its data fills."""
    kind = meta.get("kind", "tensor")
    _check_parameters(req.parameters, REQUEST_PARAMETERS.get(kind, {}), "parameters")
    tensor = req.inputs[0]
    field = f"inputs[0]({tensor.name})"
    _check_parameters(tensor.parameters, TENSOR_PARAMETERS, f"{field}.parameters")
    outputs = [str(o.get("name")) for o in meta.get("outputs") or []]
    for i, wanted in enumerate(req.outputs or []):
        if outputs and wanted.name not in outputs:
            raise RequestRejected(
                400, f"outputs[{i}].name", "known_output", outputs, f"model has no output {wanted.name!r}"
            )
        _check_parameters(wanted.parameters, {}, f"outputs[{i}].parameters")
    declared = (meta.get("inputs") or [{}])[0]
    want_type = declared.get("datatype")
    if want_type and tensor.datatype != want_type:
        raise RequestRejected(
            400,
            f"{field}.datatype",
            "datatype",
            want_type,
            f"model {meta.get('name')!r} takes {want_type}, not {tensor.datatype} (see GET /v2/models/<name>)",
        )
    want_shape = declared.get("shape")
    if want_shape and len(tensor.shape) != len(want_shape):
        raise RequestRejected(
            400,
            f"{field}.shape",
            "model_shape",
            want_shape,
            f"shape {tensor.shape} has rank {len(tensor.shape)}; the model's input has rank {len(want_shape)}",
        )
    if any(d < 0 for d in tensor.shape):
        raise RequestRejected(
            400, f"{field}.shape", "non_negative", 0, f"shape {tensor.shape} has a negative dimension"
        )
    count = math.prod(tensor.shape)
    if len(tensor.data) != count:
        raise RequestRejected(
            400,
            f"{field}.data",
            "shape_match",
            count,
            f"data has {len(tensor.data)} values, shape {tensor.shape} needs {count}",
        )


def server_timing(timings_s: dict[str, float]) -> str:
    """W3C Server-Timing header value, milliseconds, fixed phase order."""
    return ", ".join(f"{phase};dur={timings_s.get(phase, 0.0) * 1000.0:.3f}" for phase in TIMING_PHASES)


def encode_embedding(row: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")
    return row.tolist()  # type: ignore[no-any-return]


# ---- the FastAPI application -----------------------------------------------------------------------------------


def error_response(exc: RequestRejected) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


def cache_allowed(request: Request) -> bool:
    """HTTP semantics: `Cache-Control: no-cache` or `no-store` asks for a fresh answer, computed by the model."""
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    return not ({"no-cache", "no-store"} & directives)


def cache_status(hits: int | None, items: int) -> str:
    """`X-Inferops-Cache`: hit (every item), partial, miss, or bypass (cache off or refused by the client)."""
    if hits is None:
        return "bypass"
    return "hit" if hits == items else "miss" if hits == 0 else "partial"


def _json_response(payload: Any, reply: dict[str, Any], started: float, items: int) -> Response:
    body = _dumps(payload)
    timings = {**reply["timings"], "serialize": time.perf_counter() - started}
    headers = {
        "Server-Timing": server_timing(timings),
        "X-Inferops-Cache": cache_status(reply.get("cache_hits"), items),
    }
    return Response(body, media_type="application/json", headers=headers)


def refusal(access: Access, key: str | None, verdict: Verdict, admin: bool) -> RequestRejected:
    """Why a key was refused, without saying anything about other keys (and never the key itself)."""
    if admin and not access.admin.enabled:
        return RequestRejected(
            403,
            "Authorization",
            "admin_key",
            None,
            "admin routes are closed: the server has no admin key; set INFEROPS_ADMIN_KEYS (comma-separated) "
            "or INFEROPS_ADMIN_KEYS_FILE where it runs",
        )
    if admin and verdict is Verdict.INVALID and access.inference.check(key):
        return RequestRejected(
            403,
            "Authorization",
            "admin_key",
            None,
            "this key may call inference routes only: admin routes (switch, rollback, serving) need an admin "
            "key from INFEROPS_ADMIN_KEYS",
        )
    if verdict is Verdict.EXPIRED:
        exc = RequestRejected(
            401, "Authorization", "key_expired", None, "this API key has expired: ask for a new one"
        )
    else:
        exc = RequestRejected(
            401,
            "Authorization",
            "api_key",
            None,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
        )
    exc.headers = {"WWW-Authenticate": "Bearer"}
    return exc


def create_api(service: InferenceService) -> FastAPI:
    """The FastAPI app for one ingress replica; routes close over `service`."""
    app = FastAPI(
        title="inferops serving",
        version="1",
        description="Open Inference Protocol v2 and OpenAI-compatible embeddings, served by Ray Serve.",
    )

    @app.exception_handler(RequestRejected)
    async def _rejected(_: Request, exc: RequestRejected) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(rejection_from_pydantic(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(RequestRejected(exc.status_code, "path", "route", None, str(exc.detail)))

    async def authorize(request: Request, admin: bool = False) -> None:
        """401 without a valid key, 403 for an inference key on an admin route, 429 past the shared rate."""
        key = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
        access = service.access
        verdict = access.check_admin(key) if admin else access.check_inference(key)
        if verdict is not Verdict.OK:
            raise refusal(access, key, verdict, admin)
        # inference is metered; admin keys belong to operators and their changes are serialized anyway
        if not admin and service.limits.rate_limit_per_key_per_s:
            allowed, retry = await service.rate_limit(KeyRing.fingerprint(key) if key else "anonymous")
            if not allowed:
                exc = RequestRejected(
                    429,
                    "Authorization",
                    "rate_limit_per_key_per_s",
                    service.limits.rate_limit_per_key_per_s,
                    "rate limit exceeded for this key (counted across every replica); retry after the "
                    "Retry-After seconds",
                )
                exc.headers = {"Retry-After": retry_after_header(retry)}
                raise exc

    def body_schema(model: type[BaseModel]) -> dict[str, Any]:
        return {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": model.model_json_schema()}},
            }
        }

    @app.get(routes.LIVE.template, tags=["health"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get(routes.READY.template, tags=["health"])
    async def ready() -> JSONResponse:
        health = await service.health()
        return JSONResponse(health, status_code=200 if health["ready"] else 503)

    @app.get(routes.SERVER.template, tags=["health"])
    async def server_metadata() -> dict[str, Any]:
        return {
            "name": "inferops",
            "version": "1",
            "extensions": ["openai-embeddings"],
            "models": service.model_names(),
        }

    @app.get(routes.MODEL_READY.template, tags=["health"])
    async def model_ready(name: str) -> JSONResponse:
        meta = await service.metadata(name)
        return JSONResponse({"name": name, "ready": True, "sha256": meta["sha256"]})

    @app.get(routes.MODEL.template, tags=["models"])
    async def model_metadata(name: str, request: Request) -> dict[str, Any]:
        await authorize(request)
        return await service.metadata(name)

    @app.post(
        routes.INFER.template,
        tags=["inference"],
        response_model=InferResponse,
        openapi_extra=body_schema(InferRequest),
    )
    async def infer(name: str, request: Request) -> Response:
        await authorize(request)
        meta = await service.metadata(name)  # 404 for an unknown model before reading the body
        req: InferRequest = validate_model(
            InferRequest, await read_json_body(request, service.limits.max_body_bytes)
        )
        check_infer_request(req, meta)
        tensor = req.inputs[0]
        if meta["kind"] == "text":
            if tensor.datatype != "BYTES" or any(not isinstance(v, str) for v in tensor.data):
                raise RequestRejected(
                    400, "inputs[0].datatype", "datatype", "BYTES", "a text model takes BYTES (strings)"
                )
            texts = [str(v) for v in tensor.data]
            check_texts(texts, service.limits, field="inputs[0].data")
            truncate = bool((req.parameters or {}).get("truncate", False))
            reply = await service.embed(name, texts, truncate, cache_allowed(request))
            items = len(texts)
        else:
            array = tensor_from_input(tensor, service.limits, meta.get("input_shape"))
            reply = await service.infer_tensor(name, array, cache_allowed(request))
            items = 1
        started = time.perf_counter()
        out = np.asarray(reply["outputs"], dtype=np.float32)
        payload = {
            "model_name": name,
            "model_version": reply["sha256"][:12],
            "id": req.id,
            "parameters": {"sha256": reply["sha256"], "variant": reply["variant"]},
            "outputs": [
                {"name": "output-0", "shape": list(out.shape), "datatype": "FP32", "data": out.reshape(-1)}
            ],
        }
        return _json_response(payload, reply, started, items)

    @app.post(
        routes.EMBEDDINGS.template,
        tags=["inference"],
        response_model=EmbeddingsResponse,
        openapi_extra=body_schema(EmbeddingsRequest),
    )
    async def embeddings(request: Request) -> Response:
        await authorize(request)
        req: EmbeddingsRequest = validate_model(
            EmbeddingsRequest, await read_json_body(request, service.limits.max_body_bytes)
        )
        meta = await service.metadata(req.model)
        if meta["kind"] != "text":
            raise RequestRejected(
                400, "model", "text_model", None, f"model {req.model!r} is not an embedding model"
            )
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        check_texts(texts, service.limits)
        if req.dimensions is not None and req.dimensions != meta.get("dim"):
            raise RequestRejected(
                400, "dimensions", "equals_model_dim", meta.get("dim"), "this model has a fixed dimension"
            )
        reply = await service.embed(req.model, texts, req.truncate, cache_allowed(request))
        started = time.perf_counter()
        out = np.asarray(reply["outputs"], dtype=np.float32)
        payload = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": encode_embedding(row, req.encoding_format)}
                for i, row in enumerate(out)
            ],
            "model": req.model,
            "usage": {"prompt_tokens": reply["prompt_tokens"], "total_tokens": reply["prompt_tokens"]},
        }
        return _json_response(payload, reply, started, len(texts))

    @app.post(routes.SWITCH.template, tags=["admin"], openapi_extra=body_schema(SwitchRequest))
    async def switch(name: str, request: Request) -> JSONResponse:
        await authorize(request, admin=True)
        req: SwitchRequest = validate_model(
            SwitchRequest, await read_json_body(request, service.limits.max_body_bytes)
        )
        result = await service.switch_model(name, req.model_dump(exclude_none=True))
        return JSONResponse(result, status_code=200 if result["verdict"] == "switched" else 409)

    @app.put(routes.SERVING.template, tags=["admin"], openapi_extra=body_schema(ServingUpdate))
    async def configure(name: str, request: Request) -> JSONResponse:
        """Batching, cache, threads and replica count or autoscaling for every replica of `name`; 202: Serve
        applies it."""
        await authorize(request, admin=True)
        await service.metadata(name)  # 404 for an unknown model before reading the body
        req: ServingUpdate = validate_model(
            ServingUpdate, await read_json_body(request, service.limits.max_body_bytes)
        )
        patch = req.model_dump(exclude_none=True)
        replicas = patch.pop("num_replicas", None)
        autoscaling = patch.pop("autoscaling", None)
        if not patch and replicas is None and autoscaling is None:
            raise RequestRejected(400, "body", "non_empty", None, "name at least one knob to change")
        # compare-and-swap: `If-Match: <the ETag of GET .../serving>` changes nothing if the config moved since
        expect = request.headers.get("if-match", "").strip().strip('"') or None
        result = await service.configure_model(name, patch, replicas, autoscaling, expect)
        status = 202 if result.get("persisted") else 409  # 409 with `conflict`: a newer config won
        headers = {"ETag": f'"{result["version"]}"'} if result.get("version") else None
        return JSONResponse(result, status_code=status, headers=headers)

    @app.get(routes.SERVING_CONFIG.template, tags=["admin"])
    async def serving_config(name: str, request: Request) -> JSONResponse:
        """`name`'s deployment config as Serve holds it (replicas, autoscaling, user_config); 409: not readable."""
        await authorize(request, admin=True)
        result = await service.serving_config(name)
        headers = {"ETag": f'"{result["version"]}"'} if result.get("version") else None
        return JSONResponse(result, status_code=409 if "reason" in result else 200, headers=headers)

    @app.post(routes.ROLLBACK.template, tags=["admin"])
    async def rollback(name: str, request: Request) -> JSONResponse:
        await authorize(request, admin=True)
        result = await service.rollback_model(name)
        return JSONResponse(result, status_code=200 if result["verdict"] == "switched" else 409)

    return app
