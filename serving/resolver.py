"""Read-only lookups in the MLflow model registry: `models:/NAME@alias` or `models:/NAME/VERSION` to a local file
whose sha256 matches the registry's record.

Serving resolves registry URIs itself rather than being handed a resolver by its caller: a replica must resolve
one when a switch names it, and so must every replica Serve starts later on any node, so a resolver passed in
would have to travel pickled in the app's arguments. A read needs only the tracking URI from settings. Writes
(register, promote, roll back) stay above, in `tasks/records/registry.py`, which tags versions with the names
defined here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from serving.artifacts import ArtifactError, sha256_file
from serving.settings import get_settings

URI_PREFIX = "models:/"
# Version tags the registry writes and serving reads.
TAG_SHA256 = "sha256"
TAG_VARIANT = "variant"
TAG_FILE = "file"


class RegistryError(RuntimeError):
    """A registry lookup or change that cannot be done; the message says which model or alias and why."""


@dataclass(frozen=True)
class ResolvedModel:
    uri: str
    model: str
    version: str
    sha256: str
    variant: str
    path: Path


def is_registry_uri(text: str) -> bool:
    return text.startswith(URI_PREFIX)


def version_uri(model: str, version: str) -> str:
    return f"{URI_PREFIX}{model}/{version}"


def alias_uri(model: str, alias: str) -> str:
    return f"{URI_PREFIX}{model}@{alias}"


def resolve(uri: str) -> ResolvedModel:
    """Download the version's files (a no-op for a local store) and check the file against the recorded sha256."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not is_registry_uri(uri):
        raise RegistryError(
            f"{uri!r} is not an MLflow model URI (expected models:/NAME@alias or models:/NAME/VERSION)"
        )
    tracking = get_settings().resolved_tracking_uri()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = MlflowClient(tracking, registry_uri=tracking)
    body = uri[len(URI_PREFIX) :]
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, version = body.rsplit("/", 1)
            mv = client.get_model_version(name, version)
    except (MlflowException, ValueError) as exc:
        raise RegistryError(f"cannot resolve {uri}: {exc}") from None
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, tracking_uri=tracking))
    file_name = mv.tags.get(TAG_FILE)
    path = local / file_name if file_name else local
    expected = mv.tags.get(TAG_SHA256, "")
    actual = sha256_file(path)
    if expected and actual != expected:
        raise ArtifactError(
            f"{uri} (version {mv.version}): sha256 of {path} is {actual[:12]}…, registry says {expected[:12]}…"
        )
    return ResolvedModel(uri, name, str(mv.version), actual, mv.tags.get(TAG_VARIANT, ""), path)
