"""A typed client of the serving HTTP API: health, metadata, inference, hot switch, rollback, serving knobs and
autoscaling, and waiting until every replica has converged on a change.

Everything above the serving floor that talks to an endpoint (the optimization cycle, the gate, the rollback
command, the benchmarks, the tests) goes through this client, so each route is written once (`serving/routes.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from serving import routes
from serving.routes import Route

DEFAULT_TIMEOUT_S = 30.0
# A switch loads and verifies a model before it answers; a model of hundreds of MB takes tens of seconds.
SWITCH_TIMEOUT_S = 300.0
HEALTH_TIMEOUT_S = 5.0
# Connections the client keeps: enough for the gate's concurrency check (not the load generator, which has its own).
CONNECTIONS = 32
# Metadata reads per expected replica before concluding one is missing: the router picks replicas at random, so a
# few reads per replica see them all with near certainty.
READS_PER_REPLICA = 6
POLL_INTERVAL_S = 0.5
# Reads that snapshot the knobs before a change (enough to see each of a handful of replicas).
SNAPSHOT_READS = 24
DEFAULT_CONVERGE_TIMEOUT_S = 180.0
# How much of a server's answer an error message quotes (enough for the JSON error body's field, rule and limit).
EXCERPT_CHARS = 300


def excerpt(text: str) -> str:
    """The start of a server's answer, for an error message."""
    return text[:EXCERPT_CHARS]


class EndpointError(RuntimeError):
    """The endpoint is unreachable, refused a request or did not converge; the message says which and why."""


def auth_headers(api_key: str | None) -> dict[str, str]:
    """`Authorization: Bearer <key>` when a key is given."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def infer_payload(inputs: Sequence[str] | np.ndarray) -> dict[str, Any]:
    """An Open Inference Protocol request for a text list or a numeric array."""
    if isinstance(inputs, np.ndarray):
        arr = np.asarray(inputs, dtype=np.float32)
        tensor = {
            "name": "input",
            "shape": list(arr.shape),
            "datatype": "FP32",
            "data": arr.reshape(-1).tolist(),
        }
    else:
        tensor = {"name": "text", "shape": [len(inputs)], "datatype": "BYTES", "data": list(inputs)}
    return {"inputs": [tensor]}


def oip_rows(body: dict[str, Any]) -> np.ndarray:
    """The first output of an Open Inference Protocol response as an array of its declared shape."""
    out = body["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def replica_view(meta: dict[str, Any]) -> dict[str, Any]:
    """The parts of a model's metadata that describe how one replica serves."""
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


@dataclass(frozen=True)
class AdminReply:
    """What an admin route answered: the status and the decoded body (the switch's verdict and reason)."""

    status: int
    body: dict[str, Any]
    text: str

    @property
    def ok(self) -> bool:
        return self.status in (200, 202)


@dataclass
class Convergence:
    """What the replicas reported: their ids, how each serves, and the seconds until all matched."""

    converged: bool
    seconds: float
    replicas: dict[str, dict[str, Any]] = field(default_factory=dict)
    reason: str = ""


class InferopsClient:
    """A keyed HTTP client for one inferops endpoint (Open Inference Protocol v2, /v1/embeddings, admin)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        admin_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connections: int = CONNECTIONS,
    ) -> None:
        from serving.auth import client_admin_key

        self.url = url.rstrip("/")
        self.api_key = api_key
        # Admin routes take an admin key: the one given, else the one the server's variables name on this machine
        # (INFEROPS_ADMIN_KEYS, its file, the data dir's), else the inference key (refused with 403 if it is one).
        self.admin_key = client_admin_key(admin_key) or api_key
        self.timeout_s = timeout_s
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, limits=limits)

    def __enter__(self) -> InferopsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- raw calls: one per route, the response as the server sent it (for HTTP-level checks) ----------------

    def headers(self, key: str | None = "", admin: bool = False) -> dict[str, str]:
        """Auth header for `key` ('' = the client's key for the route's role, None = no key at all)."""
        if key == "":
            key = self.admin_key if admin else self.api_key
        return auth_headers(key)

    def call(
        self,
        route: Route,
        name: str | None = None,
        *,
        json: Any = None,
        content: bytes | None = None,
        key: str | None = "",
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request to `route` (for model `name`) with the client's key for the route's role (`key=None`:
        no key)."""
        return self._http.request(
            route.method,
            route.path(name),
            json=json,
            content=content,
            headers={**self.headers(key, route.admin), **(headers or {})},
            timeout=timeout if timeout is not None else self.timeout_s,
        )

    # ---- health and metadata ----------------------------------------------------------------------------------

    def live(self) -> bool:
        try:
            return self.call(routes.LIVE, timeout=HEALTH_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Poll readiness until every served model is loaded; EndpointError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.call(routes.READY, timeout=HEALTH_TIMEOUT_S).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(POLL_INTERVAL_S)
        raise EndpointError(f"endpoint {self.url} did not become ready within {timeout_s:.0f} s")

    def models(self) -> list[str]:
        """Models the endpoint says it serves (`GET /v2`)."""
        response = self.call(routes.SERVER)
        response.raise_for_status()
        return [str(m) for m in response.json().get("models", [])]

    def metadata(self, model: str) -> dict[str, Any]:
        """The model's metadata as one replica reports it (variant, sha256, knobs, replica id)."""
        response = self.call(routes.MODEL, model)
        response.raise_for_status()
        return dict(response.json())

    def check_serves(self, model: str) -> dict[str, Any]:
        """The model's metadata, or an EndpointError that says why the endpoint cannot be used for it."""
        try:
            response = self.call(routes.MODEL, model, timeout=HEALTH_TIMEOUT_S * 2)
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"endpoint {self.url} is unreachable ({exc}); start it with `inferops serve`"
            ) from None
        if response.status_code != 200:
            raise EndpointError(
                f"endpoint {self.url} does not serve model {model!r} (HTTP {response.status_code})"
            )
        return dict(response.json())

    # ---- inference ---------------------------------------------------------------------------------------------

    def infer(self, model: str, inputs: Sequence[str] | np.ndarray) -> np.ndarray:
        """Open Inference Protocol inference; the output rows as an array."""
        response = self.call(routes.INFER, model, json=infer_payload(inputs))
        response.raise_for_status()
        return oip_rows(response.json())

    def embed(self, model: str, texts: Sequence[str]) -> np.ndarray:
        """OpenAI-compatible embeddings of `texts`, one row each."""
        response = self.call(routes.EMBEDDINGS, json={"model": model, "input": list(texts)})
        response.raise_for_status()
        return np.asarray([d["embedding"] for d in response.json()["data"]], dtype=np.float32)

    # ---- admin: switch, rollback, serving knobs ----------------------------------------------------------------

    def _admin(self, route: Route, model: str, body: dict[str, Any] | None) -> AdminReply:
        try:
            response = self.call(route, model, json=body, timeout=SWITCH_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"endpoint {self.url}: {route.method} {route.path(model)} failed: {type(exc).__name__}: {exc}"
            ) from None
        try:
            decoded = response.json()
        except ValueError:
            decoded = {}
        return AdminReply(
            response.status_code, decoded if isinstance(decoded, dict) else {}, excerpt(response.text)
        )

    def switch(
        self,
        model: str,
        *,
        uri: str | None = None,
        variant: str | None = None,
        path: str | None = None,
        sha256: str | None = None,
    ) -> AdminReply:
        """Hot-switch `model` to a registry URI, a variant or a file with its sha256 (200 switched, 409 kept)."""
        body = {
            k: v for k, v in {"uri": uri, "variant": variant, "path": path, "sha256": sha256}.items() if v
        }
        return self._admin(routes.SWITCH, model, body)

    def rollback(self, model: str) -> AdminReply:
        """Back to the deployment's recorded previous model (200 switched, 409 nothing to roll back to)."""
        return self._admin(routes.ROLLBACK, model, None)

    def configure(self, model: str, knobs: dict[str, Any]) -> AdminReply:
        """Ask for serving knobs on every replica of `model`; 202 means Serve will apply them (see `apply_knobs`)."""
        reply = self._admin(routes.SERVING, model, knobs)
        if reply.status != 202:
            raise EndpointError(
                f"endpoint {self.url} refused serving knobs {knobs} for {model}: HTTP "
                f"{reply.status} {excerpt(reply.text)}"
            )
        return reply

    def serving_config(self, model: str) -> dict[str, Any]:
        """`model`'s deployment config as Serve holds it: app, deployment, num_replicas, autoscaling_config and
        user_config (num_replicas None: left to the app's code, or autoscaled)."""
        reply = self._admin(routes.SERVING_CONFIG, model, None)
        if reply.status != 200:
            raise EndpointError(
                f"endpoint {self.url} cannot read the serving config of {model}: HTTP "
                f"{reply.status} {excerpt(reply.text)}"
            )
        return reply.body

    def apply_autoscaling(
        self, model: str, autoscaling: dict[str, Any], timeout_s: float = 120.0
    ) -> dict[str, Any]:
        """PUT an autoscaling config (min_replicas, max_replicas, target_ongoing_requests) for `model`, then read
        the deployment's config back until Serve holds it; the read-back, or EndpointError after `timeout_s`."""
        self.configure(model, {"autoscaling": autoscaling})
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.serving_config(model)
            held = current.get("autoscaling_config") or {}
            if all(held.get(k) == v for k, v in autoscaling.items()):
                return current
            if time.monotonic() > deadline:
                raise EndpointError(
                    f"endpoint {self.url}: {model} was asked for autoscaling {autoscaling}, yet after "
                    f"{timeout_s:.0f} s Serve holds {current.get('autoscaling_config')}"
                )
            time.sleep(POLL_INTERVAL_S)

    # ---- convergence -------------------------------------------------------------------------------------------

    def _replica_meta(self, model: str) -> dict[str, Any]:
        response = self.call(routes.MODEL, model)
        if response.status_code in (401, 403, 404):  # waiting cannot fix these
            raise EndpointError(
                f"endpoint {self.url}: reading {model}'s metadata gave HTTP "
                f"{response.status_code} {excerpt(response.text)}"
            )
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"HTTP {response.status_code} {excerpt(response.text)}",
                request=response.request,
                response=response,
            )
        return dict(response.json())

    def wait_until(
        self,
        model: str,
        matches: Callable[[dict[str, Any]], bool],
        replicas: int,
        timeout_s: float = DEFAULT_CONVERGE_TIMEOUT_S,
        exact: bool = False,
    ) -> Convergence:
        """Read the model's metadata until `replicas` distinct replicas all satisfy `matches` (or time runs out);
        `exact`: and no other replica answers (a scale-down is done only when the extra replicas are gone)."""
        start = time.monotonic()
        seen: dict[str, dict[str, Any]] = {}
        last_error = ""
        while True:
            for _ in range(READS_PER_REPLICA * replicas):
                try:
                    meta = self._replica_meta(model)
                except httpx.HTTPError as exc:  # a replica restarting may drop a connection: read again
                    last_error = f"{type(exc).__name__}: {exc}"
                    continue
                seen[str(meta.get("replica"))] = replica_view(meta)
            good = [r for r, view in seen.items() if matches(view)]
            if len(good) >= replicas and len(seen) == len(good) and (not exact or len(seen) == replicas):
                return Convergence(True, time.monotonic() - start, seen)
            if time.monotonic() - start > timeout_s:
                bad = {r: v for r, v in seen.items() if not matches(v)}
                reason = (
                    f"{len(good)} of {replicas} replicas match after {timeout_s:.0f} s; not matching: "
                    f"{bad or 'none seen'}" + (f"; last error: {last_error}" if last_error else "")
                )
                return Convergence(False, time.monotonic() - start, seen, reason)
            # a replica being replaced or scaled away may still answer for a moment: forget what we saw
            seen = {}
            time.sleep(POLL_INTERVAL_S)

    def current_knobs(self, model: str) -> dict[str, Any]:
        """The knobs the replicas serve with now, and how many replicas answer (to put them back on failure)."""
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(SNAPSHOT_READS):
            meta = self._replica_meta(model)
            seen[str(meta.get("replica"))] = replica_view(meta)
        view = next(iter(seen.values()))
        return {
            "intra_op_threads": view["intra_op_threads"],
            "max_batch_size": view["max_batch_size"],
            "cache_entries": view["cache_entries"],
            "num_replicas": max(1, len(seen)),
        }

    def apply_knobs(
        self,
        model: str,
        knobs: dict[str, Any],
        expect_sha256: str | None = None,
        timeout_s: float = DEFAULT_CONVERGE_TIMEOUT_S,
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
            before = self.current_knobs(model)
            self.configure(model, knobs)
            done = self.wait_until(model, matches, replicas, timeout_s, exact="num_replicas" in knobs)
        except httpx.HTTPError as exc:
            raise EndpointError(f"endpoint {self.url}: {type(exc).__name__}: {exc}") from None
        if not done.converged:
            try:
                self.configure(model, before)
                reverted = f"; put back the knobs that served before: {before}"
            except (httpx.HTTPError, EndpointError) as exc:
                reverted = f"; could not put back {before}: {exc}"
            raise EndpointError(f"endpoint {self.url}: {model} did not take {knobs}: {done.reason}{reverted}")
        return {"knobs": knobs, "seconds": round(done.seconds, 1), "replicas": done.replicas}
