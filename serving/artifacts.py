"""File artifacts with a sha256 and a manifest, written atomically so nothing is ever half-written; and the one
slug that turns a model name into a name files, Prefect artifact keys and Serve apps accept."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def slug(text: str) -> str:
    """Lowercase letters, digits and dashes only (`onnx:/a/B.onnx` -> `onnx-a-b-onnx`)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


class ArtifactError(RuntimeError):
    """A model artifact that is missing, unreadable or not what its manifest says."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise ArtifactError(f"model file {path} does not exist") from None
    except OSError as exc:
        raise ArtifactError(f"model file {path} cannot be read: {exc.strerror}") from None
    return digest.hexdigest()


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; it is renamed over `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; served models must be readable by replicas and containers
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str), encoding="utf-8")


def write_artifact(
    final: str | Path, writer: Callable[[Path], object], manifest: dict[str, Any]
) -> dict[str, Any]:
    """Run `writer(tmp_path)`, then publish the file and `<file>.manifest.json` with its sha256."""
    final = Path(final)
    with atomic_path(final) as tmp:
        writer(tmp)
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise ArtifactError(f"writing {final.name} produced no file")
        digest = sha256_file(tmp)
        full = {**manifest, "file": final.name, "sha256": digest, "bytes": tmp.stat().st_size}
        write_json_atomic(manifest_path(final), full)
    return full


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".manifest.json")


def read_manifest(artifact: str | Path) -> dict[str, Any]:
    path = manifest_path(artifact)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(
            f"manifest {path} is missing: was {Path(artifact).name} built by inferops?"
        ) from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"manifest {path} is not valid JSON: {exc}") from None


def verify_artifact(path: str | Path, expected_sha256: str | None = None) -> str:
    """Check the file's sha256 against `expected_sha256` (or its manifest); return the digest."""
    path = Path(path)
    actual = sha256_file(path)
    expected = expected_sha256 or read_manifest(path)["sha256"]
    if actual != expected:
        raise ArtifactError(
            f"sha256 mismatch for {path}: expected {expected[:12]}…, file has {actual[:12]}… "
            "(the file changed since it was registered; rebuild or re-register it)"
        )
    return actual
