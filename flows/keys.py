"""Names that Prefect and Ray Serve accept: artifact keys and app names from model names like `onnx:/a/b.onnx`."""

from __future__ import annotations

import re


def slug(model: str) -> str:
    """Lowercase letters, digits and dashes only (Prefect artifact keys, Serve app names and route prefixes)."""
    return re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "model"
