"""Change freeze (SPEC §2, medium risk: "stop further changes"): a registered model marked frozen gets no change
from the optimization cycle or the gate until a person lifts the freeze."""

from __future__ import annotations

import json
import time
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tasks.records.store import configure

FREEZE_TAG = "inferops.frozen"


def freeze(model: str, reason: str, run_id: str | None = None) -> dict[str, Any]:
    """Mark a registered model frozen: the optimization cycle and the gate make no change until it is lifted."""
    record = {"reason": reason, "at": time.time(), "run_id": run_id}
    MlflowClient(configure()).set_registered_model_tag(model, FREEZE_TAG, json.dumps(record))
    return record


def frozen_reason(model: str) -> str | None:
    """Why `model` is frozen, or None when changes are allowed (also None for an unregistered model)."""
    try:
        tags = MlflowClient(configure()).get_registered_model(model).tags
    except MlflowException:
        return None
    raw = tags.get(FREEZE_TAG)
    if not raw:
        return None
    try:
        return str(json.loads(raw).get("reason", raw))
    except ValueError:
        return raw


def unfreeze(model: str) -> None:
    """Lift a freeze once the urgent fix is in (a person decides this, never the software)."""
    try:
        MlflowClient(configure()).delete_registered_model_tag(model, FREEZE_TAG)
    except MlflowException:
        pass
