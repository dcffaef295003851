"""MLflow model registry as the rollout state: aliases `challenger`, `champion`, `previous-champion`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from serving.artifacts import ArtifactError, sha256_file
from tasks.records.store import configure, ensure_experiment

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous-champion"
REGISTRY_EXPERIMENT = "inferops-registry"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message says which model/alias and why."""


@dataclass(frozen=True)
class VersionRef:
    model: str
    version: str
    sha256: str
    variant: str
    source: str


@dataclass(frozen=True)
class ResolvedModel:
    uri: str
    model: str
    version: str
    sha256: str
    variant: str
    path: Path


def _client() -> MlflowClient:
    return MlflowClient(configure())


def _ref(model: str, mv: Any) -> VersionRef:
    return VersionRef(model, str(mv.version), mv.tags.get("sha256", ""), mv.tags.get("variant", ""), mv.source)


def register(model: str, artifact: Path, manifest: dict[str, Any], run_id: str | None = None) -> VersionRef:
    """Log the artifact and its manifest, create a model version tagged with its sha256, alias it `challenger`."""
    artifact = Path(artifact)
    digest = sha256_file(artifact)
    if manifest.get("sha256") and manifest["sha256"] != digest:
        raise ArtifactError(f"{artifact} does not match its manifest sha256: rebuild it before registering")
    client = _client()
    ensure_experiment(REGISTRY_EXPERIMENT)
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_id=run_id, run_name=f"register-{model}", nested=nested and run_id is None) as run:
        mlflow.log_artifact(str(artifact), artifact_path="model")
        mlflow.log_dict({**manifest, "sha256": digest}, "model/manifest.json")
        source = f"{run.info.artifact_uri}/model"
        run_id = run.info.run_id
    try:
        client.get_registered_model(model)
    except MlflowException:
        client.create_registered_model(model, description=f"inferops model {model}")
    tags = {
        "sha256": digest,
        "variant": str(manifest.get("variant", artifact.stem)),
        "file": artifact.name,
        "inferops.retention_class": "optimization_plans",
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
        raise RegistryError(f"model {model!r} has no '{CHALLENGER}' alias to promote: register a candidate first")
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
    client.set_model_version_tag(model, champion.version, "inferops.rolled_back", reason)
    record = RollbackRecord(model, champion.version, previous.version, reason, time.time())
    ensure_experiment(REGISTRY_EXPERIMENT)
    with mlflow.start_run(run_name=f"rollback-{model}", nested=mlflow.active_run() is not None):
        mlflow.set_tags({"inferops.kind": "rollback", "inferops.model": model, "inferops.retention_class": "rollback_records"})
        mlflow.log_dict(asdict(record), "rollback_record.json")
    return record


def resolve(uri: str) -> ResolvedModel:
    """`models:/NAME@alias` or `models:/NAME/VERSION` -> a local file whose sha256 matches the registry."""
    if not uri.startswith("models:/"):
        raise RegistryError(f"{uri!r} is not an MLflow model URI (expected models:/NAME@alias or models:/NAME/VERSION)")
    client = _client()
    body = uri[len("models:/") :]
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, version = body.rsplit("/", 1)
            mv = client.get_model_version(name, version)
    except (MlflowException, ValueError) as exc:
        raise RegistryError(f"cannot resolve {uri}: {exc}") from None
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source))
    file_name = mv.tags.get("file")
    path = local / file_name if file_name else local
    expected = mv.tags.get("sha256", "")
    actual = sha256_file(path)
    if expected and actual != expected:
        raise ArtifactError(f"{uri} (version {mv.version}): sha256 of {path} is {actual[:12]}…, registry says {expected[:12]}…")
    return ResolvedModel(uri, name, str(mv.version), actual, mv.tags.get("variant", ""), path)


def manifest_of(resolved: ResolvedModel) -> dict[str, Any]:
    manifest = resolved.path.parent / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.exists() else {}


SERVE_TAG = "inferops.serve."
# Tag name on a version -> the knob of PUT /admin/models/{name}/serving it sets.
SERVE_KNOBS = {"intra_op_threads": "intra_op_threads", "batch": "max_batch_size", "replicas": "num_replicas",
               "cache_entries": "cache_entries"}  # fmt: skip


def set_serving_knobs(model: str, version: str, params: dict[str, Any]) -> None:
    """Record on a version the serving knobs it was measured with (so a rollback can restore them too)."""
    client = _client()
    for key in SERVE_KNOBS:
        if key in params:
            client.set_model_version_tag(model, version, f"{SERVE_TAG}{key}", str(params[key]))


def serving_knobs(model: str, version: str, defaults: dict[str, int]) -> dict[str, int]:
    """The knobs a version serves with: its recorded tags, else `defaults` (a version no cycle measured)."""
    tags = _client().get_model_version(model, version).tags
    knobs = dict(defaults)
    for key, knob in SERVE_KNOBS.items():
        if f"{SERVE_TAG}{key}" in tags:
            knobs[knob] = int(tags[f"{SERVE_TAG}{key}"])
    return knobs
