"""MLflow model registry as the rollout state: aliases `challenger`, `champion`, `previous-champion`."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from serving.artifacts import ArtifactError, sha256_file
from serving.resolver import TAG_FILE, TAG_SHA256, TAG_VARIANT, RegistryError, ResolvedModel, resolve
from tasks.records import names
from tasks.records.runs import RunRecord, clip_tag, log_run
from tasks.records.store import configure

__all__ = ["RegistryError", "ResolvedModel", "resolve"]  # read-only lookups live in serving, re-exported here

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous-champion"


@dataclass(frozen=True)
class VersionRef:
    model: str
    version: str
    sha256: str
    variant: str
    source: str


def _client() -> MlflowClient:
    return MlflowClient(configure())


def _ref(model: str, mv: Any) -> VersionRef:
    return VersionRef(
        model, str(mv.version), mv.tags.get(TAG_SHA256, ""), mv.tags.get(TAG_VARIANT, ""), mv.source
    )


def register(model: str, artifact: Path, manifest: dict[str, Any]) -> VersionRef:
    """Log the artifact and its manifest, create a model version tagged with its sha256, alias it `challenger`."""
    artifact = Path(artifact)
    digest = sha256_file(artifact)
    if manifest.get("sha256") and manifest["sha256"] != digest:
        raise ArtifactError(f"{artifact} does not match its manifest sha256: rebuild it before registering")
    client = _client()
    record = RunRecord(
        f"register-{model}",
        names.REGISTRY_EXPERIMENT,
        files={"model": artifact},
        dicts={"model/manifest.json": {**manifest, "sha256": digest}},
    )
    run_id = log_run(record)
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    try:
        client.get_registered_model(model)
    except MlflowException:
        client.create_registered_model(model, description=f"inferops model {model}")
    tags = {
        TAG_SHA256: digest,
        TAG_VARIANT: str(manifest.get("variant", artifact.stem)),
        TAG_FILE: artifact.name,
        names.TAG_RETENTION_CLASS: names.OPTIMIZATION_PLANS,
    }
    mv = client.create_model_version(model, source=source, run_id=run_id, tags=tags)
    client.set_registered_model_alias(model, CHALLENGER, mv.version)
    return _ref(model, client.get_model_version(model, mv.version))


def ensure_champion(model: str, artifact: Path, manifest: dict[str, Any]) -> VersionRef:
    """The current champion, or (first run) `artifact` registered and promoted so there is one to roll back to."""
    current = alias_version(model, CHAMPION)
    if current is not None:
        return current
    register(model, artifact, manifest)
    promote(model)
    champion = alias_version(model, CHAMPION)
    if champion is None:
        raise RegistryError(f"model {model!r}: promoting the first version did not set '{CHAMPION}'")
    return champion


def register_candidate(
    model: str,
    artifact: Path,
    manifest: dict[str, Any],
    params: dict[str, Any],
    cache_hit_rate: float | None = None,
) -> VersionRef:
    """Register a measured candidate as `challenger`, tagged with the serving knobs it was measured with (and the
    cache hit rate it reached on the request log), so whoever serves it later serves it as measured."""
    ref = register(model, artifact, manifest)
    set_serving_knobs(model, ref.version, params)
    if cache_hit_rate is not None:
        _client().set_model_version_tag(
            model, ref.version, names.VERSION_TAG_CACHE_HIT_RATE, f"{cache_hit_rate:.4f}"
        )
    return ref


def require_alias(model: str, alias: str) -> VersionRef:
    """The version an alias points at; RegistryError naming the model and alias when there is none."""
    ref = alias_version(model, alias)
    if ref is None:
        raise RegistryError(f"model {model!r} has no {alias!r} alias in the registry")
    return ref


def alias_version(model: str, alias: str) -> VersionRef | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    try:
        return _ref(model, _client().get_model_version_by_alias(model, alias))
    except MlflowException:
        return None


def promote(model: str) -> dict[str, Any]:
    """challenger -> champion; the old champion becomes previous-champion. Returns the record of the move."""
    client = _client()
    challenger = alias_version(model, CHALLENGER)
    if challenger is None:
        raise RegistryError(
            f"model {model!r} has no '{CHALLENGER}' alias to promote: register a candidate first"
        )
    champion = alias_version(model, CHAMPION)
    if champion is not None and champion.version != challenger.version:
        client.set_registered_model_alias(model, PREVIOUS, champion.version)
    client.set_registered_model_alias(model, CHAMPION, challenger.version)
    client.delete_registered_model_alias(model, CHALLENGER)
    return {
        "model": model,
        "champion": challenger.version,
        "previous_champion": champion.version if champion else None,
        "at": time.time(),
    }


def reject_challenger(model: str, version: str, reason: str) -> None:
    """A gated candidate that is not promoted: its version is tagged with the reason and loses `challenger`."""
    _client().set_model_version_tag(model, version, names.VERSION_TAG_GATE, clip_tag(reason))
    discard_challenger(model)


def discard_challenger(model: str) -> None:
    """Drop the challenger alias (a rejected candidate never becomes champion)."""
    try:
        _client().delete_registered_model_alias(model, CHALLENGER)
    except MlflowException:
        pass


@dataclass(frozen=True)
class RollbackRecord:
    model: str
    from_version: str
    to_version: str
    reason: str
    at: float


def rollback(model: str, reason: str) -> RollbackRecord:
    """Move `champion` back to `previous-champion` and write a rollback record (kept per its retention class)."""
    client = _client()
    champion = alias_version(model, CHAMPION)
    previous = alias_version(model, PREVIOUS)
    if champion is None or previous is None:
        raise RegistryError(
            f"model {model!r} cannot roll back: it needs both '{CHAMPION}' and '{PREVIOUS}' aliases "
            f"(found champion={champion and champion.version}, previous-champion={previous and previous.version})"
        )
    client.set_registered_model_alias(model, CHAMPION, previous.version)
    client.delete_registered_model_alias(model, PREVIOUS)
    client.set_model_version_tag(model, champion.version, names.VERSION_TAG_ROLLED_BACK, reason)
    record = RollbackRecord(model, champion.version, previous.version, reason, time.time())
    tags = {
        names.TAG_KIND: "rollback",
        names.TAG_MODEL: model,
        names.TAG_RETENTION_CLASS: names.ROLLBACK_RECORDS,
    }
    log_run(
        RunRecord(
            f"rollback-{model}",
            names.REGISTRY_EXPERIMENT,
            tags=tags,
            dicts={"rollback_record.json": asdict(record)},
        )
    )
    return record


# Version tag (after the prefix) -> the knob of PUT /admin/models/{name}/serving it sets; the tag names are the keys
# of a candidate's params.
SERVE_KNOBS = {
    "intra_op_threads": "intra_op_threads",
    "batch": "max_batch_size",
    "replicas": "num_replicas",
    "cache_entries": "cache_entries",
}


def set_serving_knobs(model: str, version: str, params: dict[str, Any]) -> None:
    """Record on a version the serving knobs it was measured with (so a rollback can restore them too)."""
    client = _client()
    for key in SERVE_KNOBS:
        if key in params:
            client.set_model_version_tag(
                model, version, f"{names.VERSION_TAG_SERVE_PREFIX}{key}", str(params[key])
            )


def version_knobs(model: str, version: str | None, defaults: dict[str, int]) -> dict[str, int]:
    """The knobs a version serves with: its recorded tags, else `defaults` (no version, or one no cycle measured)."""
    knobs = dict(defaults)
    if version is None:
        return knobs
    tags = _client().get_model_version(model, version).tags
    for key, knob in SERVE_KNOBS.items():
        if f"{names.VERSION_TAG_SERVE_PREFIX}{key}" in tags:
            knobs[knob] = int(tags[f"{names.VERSION_TAG_SERVE_PREFIX}{key}"])
    return knobs
