"""Atomic artifact writes: a failed writer leaves nothing behind; sha256 mismatches are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.artifacts import ArtifactError, read_manifest, verify_artifact, write_artifact


def test_write_and_verify(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    manifest = write_artifact(target, lambda p: p.write_bytes(b"weights"), {"transform": "none"})
    assert target.read_bytes() == b"weights"
    assert read_manifest(target)["sha256"] == manifest["sha256"] == verify_artifact(target)


def test_failed_writer_leaves_old_artifact_intact(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    write_artifact(target, lambda p: p.write_bytes(b"v1"), {})

    def explode(path: Path) -> None:
        path.write_bytes(b"partial")
        raise RuntimeError("export crashed")

    with pytest.raises(RuntimeError, match="export crashed"):
        write_artifact(target, explode, {})
    assert target.read_bytes() == b"v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.manifest.json"]


def test_tampered_file_is_named(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    write_artifact(target, lambda p: p.write_bytes(b"v1"), {})
    target.write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="sha256 mismatch for .*model.onnx"):
        verify_artifact(target)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        verify_artifact(tmp_path / "absent.onnx", "0" * 64)
