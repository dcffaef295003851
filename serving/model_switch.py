"""Hot model switch and rollback: verify the artifact, load beside the old engine, then swap in one step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from serving.artifacts import read_manifest, sha256_file, verify_artifact
from serving.resolver import is_registry_uri, resolve
from serving.variants import ensure_variant


class SwitchError(ValueError):
    """A switch request that cannot even be attempted (bad arguments); the message says which and why."""


@dataclass(frozen=True)
class ModelSource:
    """One loadable artifact: where it is and the sha256 it must have."""

    model: str
    variant: str
    path: str
    sha256: str
    origin: str
    version: str | None = None

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def resolve_source(
    model: str,
    *,
    variant: str | None = None,
    path: str | None = None,
    sha256: str | None = None,
    uri: str | None = None,
    **variant_knobs: Any,
) -> ModelSource:
    """Turn a model name + variant, an explicit file, or an MLflow URI into a `ModelSource`.

    Resolution happens in the caller's process; the expected sha256 always comes from a trusted record (the
    variant's manifest, the registry's tag, or the caller), never from hashing the file we are about to load.
    """
    if uri:
        resolved = resolve(uri)
        return ModelSource(
            model=resolved.model,
            variant=resolved.variant or "unknown",
            path=str(resolved.path),
            sha256=resolved.sha256,
            origin=uri,
            version=resolved.version,
        )
    if path:
        expected = sha256
        manifest: dict[str, Any] = {}
        if expected is None:
            manifest = read_manifest(path)  # raises ArtifactError naming the missing manifest
            expected = str(manifest["sha256"])
        return ModelSource(
            model=model,
            variant=variant or str(manifest.get("variant", "unknown")),
            path=str(Path(path).resolve()),
            sha256=expected,
            origin=str(path),
        )
    if is_registry_uri(model):
        return resolve_source(model, uri=model)
    artifact = ensure_variant(model, variant or "onnx-fp32", **variant_knobs)
    return ModelSource(
        model=model,
        variant=variant or "onnx-fp32",
        path=str(artifact.path),
        sha256=artifact.sha256,
        origin=f"{model}:{variant or 'onnx-fp32'}",
    )


@dataclass(frozen=True)
class SwitchResult:
    """What a switch or rollback decided: expected vs observed sha256, verdict and why."""

    action: str
    verdict: str  # "switched" | "kept"
    reason: str
    expected_sha256: str
    observed_sha256: str | None
    serving_sha256: str
    previous_sha256: str | None
    load_s: float
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EngineSlot:
    """The engine a model serves from, with the previous one kept warm for an instant rollback.

    Readers take `slot.engine` once per batch and keep that reference, so a batch already running finishes on
    the engine it started with even if a swap happens meanwhile. Swaps happen on the event loop (one attribute
    assignment), so no request ever sees a half-loaded engine.
    """

    def __init__(self, loader: Callable[[ModelSource], Any], source: ModelSource, meta: Any = None) -> None:
        self._loader = loader
        self._lock = asyncio.Lock()
        self.source = source
        self.engine = loader(source)
        self.meta = meta  # what the engine was loaded with (engine options); travels with it on swaps
        self.previous: tuple[ModelSource, Any, Callable[[ModelSource], Any], Any] | None = None
        self.history: list[SwitchResult] = []

    def _verify_and_load(self, source: ModelSource, loader: Callable[[ModelSource], Any]) -> tuple[Any, str]:
        observed = verify_artifact(source.path, source.sha256)  # before any byte reaches the runtime
        return loader(source), observed

    async def switch(
        self,
        source: ModelSource,
        action: str = "switch",
        loader: Callable[[ModelSource], Any] | None = None,
        meta: Any = None,
    ) -> SwitchResult:
        """Load `source` (with `loader`, e.g. other engine options) beside the current engine and swap; on any
        failure keep serving the current one. Reloading the same sha256 (new threads, say) keeps the rollback
        target: a rollback must return to the previous *model*, not to the same model with old options."""
        async with self._lock:
            start = time.perf_counter()
            observed: str | None = None
            use = loader or self._loader
            try:
                engine, observed = await asyncio.to_thread(self._verify_and_load, source, use)
            except Exception as exc:  # any load failure must leave the old model serving
                try:
                    observed = observed or await asyncio.to_thread(sha256_file, source.path)
                except Exception:
                    observed = None
                result = SwitchResult(
                    action=action,
                    verdict="kept",
                    reason=f"{type(exc).__name__}: {exc}; still serving {self.source.origin} ({self.source.sha256[:12]}…)",
                    expected_sha256=source.sha256,
                    observed_sha256=observed,
                    serving_sha256=self.source.sha256,
                    previous_sha256=self.previous[0].sha256 if self.previous else None,
                    load_s=time.perf_counter() - start,
                )
                self.history.append(result)
                return result
            old = (self.source, self.engine, self._loader, self.meta)
            self.source, self.engine = source, engine  # the swap: new batches pick up the new engine
            self._loader, self.meta = use, (meta if meta is not None else self.meta)
            if old[0].sha256 != source.sha256:
                self.previous = old
            result = SwitchResult(
                action=action,
                verdict="switched",
                reason=f"sha256 verified and engine loaded; now serving {source.origin}",
                expected_sha256=source.sha256,
                observed_sha256=observed,
                serving_sha256=source.sha256,
                previous_sha256=old[0].sha256,
                load_s=time.perf_counter() - start,
            )
            self.history.append(result)
            return result

    async def rollback(self) -> SwitchResult:
        """Swap back to the previous engine (already loaded, so this cannot fail to load)."""
        async with self._lock:
            if self.previous is None:
                result = SwitchResult(
                    action="rollback",
                    verdict="kept",
                    reason="no previous model to roll back to; still serving the current one",
                    expected_sha256=self.source.sha256,
                    observed_sha256=self.source.sha256,
                    serving_sha256=self.source.sha256,
                    previous_sha256=None,
                    load_s=0.0,
                )
                self.history.append(result)
                return result
            prev_source, prev_engine, prev_loader, prev_meta = self.previous
            self.previous = (self.source, self.engine, self._loader, self.meta)
            self.source, self.engine, self._loader, self.meta = (
                prev_source,
                prev_engine,
                prev_loader,
                prev_meta,
            )
            result = SwitchResult(
                action="rollback",
                verdict="switched",
                reason=f"rolled back to {prev_source.origin}",
                expected_sha256=prev_source.sha256,
                observed_sha256=prev_source.sha256,
                serving_sha256=prev_source.sha256,
                previous_sha256=self.previous[0].sha256,
                load_s=0.0,
            )
            self.history.append(result)
            return result
