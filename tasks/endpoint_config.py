"""Change a live endpoint's serving knobs over its admin API and wait until every replica shows the change."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

# How many metadata reads per expected replica before concluding a replica is missing: the router picks
# replicas at random, so a few reads per replica see them all with near certainty.
READS_PER_REPLICA = 6
POLL_INTERVAL_S = 0.5


class EndpointConfigError(RuntimeError):
    """The endpoint refused the change or did not converge in time; the message says which replica and why."""


@dataclass
class Convergence:
    """What the replicas reported: their ids, the sha256 each serves, and the seconds until all matched."""

    converged: bool
    seconds: float
    replicas: dict[str, dict[str, Any]] = field(default_factory=dict)
    reason: str = ""


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def replica_view(meta: dict[str, Any]) -> dict[str, Any]:
    """The parts of a model's metadata that describe how this replica serves."""
    batching = meta.get("batching") or {}
    cache = meta.get("cache") or {}
    return {
        "sha256": meta.get("sha256"),
        "variant": meta.get("variant"),
        "intra_op_threads": meta.get("intra_op_threads"),
        "max_batch_size": batching.get("max_batch_size"),
        "batch_wait_timeout_s": batching.get("batch_wait_timeout_s"),
        "cache_entries": cache.get("capacity"),
        "last_switch": (meta.get("switch_history") or [{}])[-1].get("reason"),
    }


def wait_until(
    url: str,
    model: str,
    api_key: str | None,
    matches: Callable[[dict[str, Any]], bool],
    replicas: int,
    timeout_s: float = 120.0,
    exact: bool = False,
) -> Convergence:
    """Read the model's metadata until `replicas` distinct replicas all satisfy `matches` (or time runs out);
    `exact`: and no other replica answers (a scale-down is done only when the extra replicas are gone)."""
    start = time.monotonic()
    seen: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=30, headers=_headers(api_key)) as client:
        while True:
            for _ in range(READS_PER_REPLICA * replicas):
                response = client.get(f"/v2/models/{model}")
                if response.status_code == 200:
                    meta = response.json()
                    seen[str(meta.get("replica"))] = replica_view(meta)
            good = [r for r, view in seen.items() if matches(view)]
            if len(good) >= replicas and len(seen) == len(good) and (not exact or len(seen) == replicas):
                return Convergence(True, time.monotonic() - start, seen)
            if time.monotonic() - start > timeout_s:
                bad = {r: v for r, v in seen.items() if not matches(v)}
                return Convergence(False, time.monotonic() - start, seen,
                                   f"{len(good)} of {replicas} replicas match after {timeout_s:.0f} s; "
                                   f"not matching: {bad or 'none seen'}")  # fmt: skip
            # a replica being replaced or scaled away may still answer for a moment: forget what we saw
            seen = {}
            time.sleep(POLL_INTERVAL_S)


def apply_knobs(
    url: str, model: str, api_key: str | None, knobs: dict[str, Any], timeout_s: float = 180.0
) -> dict[str, Any]:
    """PUT the knobs, then wait until every replica (the requested count) serves with them."""
    with httpx.Client(base_url=url.rstrip("/"), timeout=60, headers=_headers(api_key)) as client:
        response = client.put(f"/admin/models/{model}/serving", json=knobs)
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 202:
        raise EndpointConfigError(f"endpoint {url} refused serving knobs {knobs} for {model}: HTTP {response.status_code} "
                                  f"{body or response.text[:300]}")  # fmt: skip
    replicas = int(knobs.get("num_replicas") or 1)
    expected = {k: v for k, v in knobs.items() if k != "num_replicas"}

    def matches(view: dict[str, Any]) -> bool:
        return all(view.get(k) == v for k, v in expected.items())

    done = wait_until(url, model, api_key, matches, replicas, timeout_s, exact="num_replicas" in knobs)
    if not done.converged:
        raise EndpointConfigError(f"endpoint {url}: {model} did not take {knobs}: {done.reason}")
    return {"knobs": knobs, "seconds": round(done.seconds, 1), "replicas": done.replicas}
