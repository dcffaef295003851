"""Registry aliases on a real MLflow store: register, promote, roll back, resolve with sha256 checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.artifacts import ArtifactError, write_artifact
from tasks.records import registry


def _artifact(tmp_path: Path, name: str, payload: bytes) -> tuple[Path, dict]:
    path = tmp_path / f"{name}.onnx"
    manifest = write_artifact(path, lambda p: p.write_bytes(payload), {"variant": name})
    return path, manifest


def test_promote_and_rollback_move_aliases(tmp_path: Path) -> None:
    model = "reg-test-model"
    v1 = registry.register(model, *_artifact(tmp_path, "v1", b"one"))
    assert registry.alias_version(model, registry.CHALLENGER) == v1
    registry.promote(model)
    assert registry.alias_version(model, registry.CHAMPION).version == v1.version
    assert registry.alias_version(model, registry.CHALLENGER) is None

    v2 = registry.register(model, *_artifact(tmp_path, "v2", b"two"))
    record = registry.promote(model)
    assert record["champion"] == v2.version and record["previous_champion"] == v1.version
    resolved = registry.resolve(f"models:/{model}@champion")
    assert resolved.sha256 == v2.sha256 and resolved.path.read_bytes() == b"two"

    back = registry.rollback(model, "p99 +80% after promotion")
    assert (back.from_version, back.to_version) == (v2.version, v1.version)
    assert registry.resolve(f"models:/{model}@champion").path.read_bytes() == b"one"
    with pytest.raises(registry.RegistryError, match="previous-champion"):
        registry.rollback(model, "again")


def test_resolve_detects_tampering_and_bad_uris(tmp_path: Path) -> None:
    model = "reg-tamper"
    registry.register(model, *_artifact(tmp_path, "t", b"good"))
    resolved = registry.resolve(f"models:/{model}@challenger")
    resolved.path.write_bytes(b"evil")
    with pytest.raises(ArtifactError, match="sha256"):
        registry.resolve(f"models:/{model}@challenger")
    with pytest.raises(registry.RegistryError, match="not an MLflow model URI"):
        registry.resolve("minilm")
    with pytest.raises(registry.RegistryError, match="cannot resolve"):
        registry.resolve("models:/no-such-model@champion")
    with pytest.raises(registry.RegistryError, match="no 'challenger'"):
        registry.promote("no-such-model")
