"""Change a live endpoint's serving knobs over its admin API and wait until every replica shows the change."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tasks.measure.loadgen import auth_headers

# How many metadata reads per expected replica before concluding a replica is missing: the router picks
# replicas at random, so a few reads per replica see them all with near certainty.
READS_PER_REPLICA = 6
POLL_INTERVAL_S = 0.5
# Reads that snapshot the knobs before a change (enough to see each of a handful of replicas).
SNAPSHOT_READS = 24


class EndpointConfigError(RuntimeError):
    """The endpoint refused the change or did not converge in time; the message says which replica and why."""


@dataclass
class Convergence:
    """What the replicas reported: their ids, the sha256 each serves, and the seconds until all matched."""

    converged: bool
    seconds: float
    replicas: dict[str, dict[str, Any]] = field(default_factory=dict)
    reason: str = ""


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
    last_error = ""
    with httpx.Client(base_url=url.rstrip("/"), timeout=30, headers=auth_headers(api_key)) as client:
        while True:
            for _ in range(READS_PER_REPLICA * replicas):
                try:
                    response = client.get(f"/v2/models/{model}")
                except httpx.HTTPError as exc:  # a replica restarting may drop a connection: read again
                    last_error = f"{type(exc).__name__}: {exc}"
                    continue
                if response.status_code in (401, 403, 404):  # waiting cannot fix these
                    raise EndpointConfigError(f"endpoint {url}: reading {model}'s metadata gave HTTP "
                                              f"{response.status_code} {response.text[:200]}")  # fmt: skip
                if response.status_code != 200:
                    last_error = f"HTTP {response.status_code} {response.text[:200]}"
                    continue
                meta = response.json()
                seen[str(meta.get("replica"))] = replica_view(meta)
            good = [r for r, view in seen.items() if matches(view)]
            if len(good) >= replicas and len(seen) == len(good) and (not exact or len(seen) == replicas):
                return Convergence(True, time.monotonic() - start, seen)
            if time.monotonic() - start > timeout_s:
                bad = {r: v for r, v in seen.items() if not matches(v)}
                return Convergence(False, time.monotonic() - start, seen,
                                   f"{len(good)} of {replicas} replicas match after {timeout_s:.0f} s; "
                                   f"not matching: {bad or 'none seen'}"
                                   + (f"; last error: {last_error}" if last_error else ""))  # fmt: skip
            # a replica being replaced or scaled away may still answer for a moment: forget what we saw
            seen = {}
            time.sleep(POLL_INTERVAL_S)


def apply_knobs(
    url: str,
    model: str,
    api_key: str | None,
    knobs: dict[str, Any],
    expect_sha256: str | None = None,
    timeout_s: float = 180.0,
) -> dict[str, Any]:
    """PUT the knobs, then wait until every replica (the requested count) serves with them (and serves
    `expect_sha256` when given). If they do not converge, the knobs that served before are put back."""
    replicas = int(knobs.get("num_replicas") or 1)
    expected = {k: v for k, v in knobs.items() if k != "num_replicas"}
    if expect_sha256:
        expected["sha256"] = expect_sha256

    def matches(view: dict[str, Any]) -> bool:
        return all(view.get(k) == v for k, v in expected.items())

    try:
        before = _current_knobs(url, model, api_key)
        _put(url, model, api_key, knobs)
        done = wait_until(url, model, api_key, matches, replicas, timeout_s, exact="num_replicas" in knobs)
    except httpx.HTTPError as exc:
        raise EndpointConfigError(f"endpoint {url}: {type(exc).__name__}: {exc}") from None
    if not done.converged:
        try:
            _put(url, model, api_key, before)
            reverted = f"; put back the knobs that served before: {before}"
        except (httpx.HTTPError, EndpointConfigError) as exc:
            reverted = f"; could not put back {before}: {exc}"
        raise EndpointConfigError(f"endpoint {url}: {model} did not take {knobs}: {done.reason}{reverted}")
    return {"knobs": knobs, "seconds": round(done.seconds, 1), "replicas": done.replicas}


def _put(url: str, model: str, api_key: str | None, knobs: dict[str, Any]) -> None:
    with httpx.Client(base_url=url.rstrip("/"), timeout=60, headers=auth_headers(api_key)) as client:
        response = client.put(f"/admin/models/{model}/serving", json=knobs)
    if response.status_code != 202:
        raise EndpointConfigError(f"endpoint {url} refused serving knobs {knobs} for {model}: HTTP "
                                  f"{response.status_code} {response.text[:300]}")  # fmt: skip


def _current_knobs(url: str, model: str, api_key: str | None) -> dict[str, Any]:
    """The knobs one replica serves with now, and how many replicas answer (to put them back on failure)."""
    seen: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=30, headers=auth_headers(api_key)) as client:
        for _ in range(SNAPSHOT_READS):
            response = client.get(f"/v2/models/{model}")
            if response.status_code != 200:
                raise EndpointConfigError(f"endpoint {url}: reading {model}'s metadata gave HTTP "
                                          f"{response.status_code} {response.text[:200]}")  # fmt: skip
            meta = response.json()
            seen[str(meta.get("replica"))] = replica_view(meta)
    views = list(seen.values())
    view = views[0]
    return {"intra_op_threads": view["intra_op_threads"], "max_batch_size": view["max_batch_size"],
            "cache_entries": view["cache_entries"], "num_replicas": max(1, len(views))}  # fmt: skip
