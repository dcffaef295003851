"""The serving floor's configuration: bounds of the live knobs, serving defaults and the endpoint's limits.

`tasks/policy.py` reuses `ServingDefaults` and `EndpointLimits` as the policy's `serving:` and `endpoint:`
sections, so every bound is written once. Their shipped values live beside this file in `defaults.yaml`, the
base layer of the policy: an operator's policy file overrides them like any other key, and the edge that
starts the app (`inferops serve`, a flow) passes the merged values in as app arguments. The floor itself
reads only its own file, for an app started on its own (`serve run serving.app:build_app`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.cache import MAX_ENTRIES

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
SERVE_HEALTH_CHECK_FAILURES = (
    3  # ray.serve._private.constants.REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD (tested)
)

# Bounds of the live serving knobs: one definition for the defaults below, the deployment's user_config, the
# app's arguments and the admin API.
BatchSize = Annotated[int, Field(ge=1, le=1024)]
BatchWaitS = Annotated[float, Field(ge=0.0, le=1.0)]
CacheEntries = Annotated[int, Field(ge=0, le=MAX_ENTRIES)]
Threads = Annotated[int, Field(ge=1, le=256)]
Replicas = Annotated[int, Field(ge=1, le=64)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServingDefaults(_Frozen):
    """What a deployment serves with until an optimization cycle measures better (policy `serving:`)."""

    max_batch_size: BatchSize
    batch_wait_timeout_s: BatchWaitS
    max_ongoing_requests: int = Field(ge=1)
    intra_op_threads: Threads
    call_overhead_tokens: int = Field(ge=0)
    cache_entries: CacheEntries

    def default_knobs(self) -> dict[str, int]:
        """The knobs of `PUT /admin/models/{name}/serving` that these defaults set."""
        return {
            "intra_op_threads": self.intra_op_threads,
            "max_batch_size": self.max_batch_size,
            "num_replicas": 1,
            "cache_entries": self.cache_entries,
        }


class EndpointLimits(_Frozen):
    """The endpoint contract of SPEC §7 (policy `endpoint:`)."""

    max_body_bytes: int = Field(gt=0)
    max_items: int = Field(gt=0)
    max_text_chars: int = Field(gt=0)
    rate_limit_per_key_per_s: float | None = Field(default=None, gt=0)
    health_check_failures: int = Field(ge=1)
    health_check_period_s: float = Field(gt=0)
    health_check_timeout_s: float = Field(gt=0)

    @field_validator("health_check_failures")
    @classmethod
    def _serve_counts_three(cls, value: int) -> int:
        # Ray Serve replaces a replica after a fixed number of failed checks in a row (its
        # REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD); a policy asking for another number could not be honoured.
        if value != SERVE_HEALTH_CHECK_FAILURES:
            raise ValueError(
                f"Ray Serve replaces a replica after {SERVE_HEALTH_CHECK_FAILURES} failed health checks and cannot "
                f"be told otherwise; set health_check_failures: {SERVE_HEALTH_CHECK_FAILURES} and tune "
                "health_check_period_s / health_check_timeout_s instead"
            )
        return value


class FloorDefaults(_Frozen):
    serving: ServingDefaults
    endpoint: EndpointLimits


def defaults_data() -> dict[str, Any]:
    """The raw `serving:` and `endpoint:` sections of defaults.yaml (the policy deep-merges over them)."""
    data = yaml.safe_load(DEFAULTS_FILE.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{DEFAULTS_FILE} must hold a mapping with `serving:` and `endpoint:` sections")
    return data


@lru_cache(maxsize=1)
def floor_defaults() -> FloorDefaults:
    """The shipped defaults, validated (a broken package file fails at the first app start, naming the file)."""
    return FloorDefaults.model_validate(defaults_data())
