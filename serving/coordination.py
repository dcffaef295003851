"""Actors that every replica of an app shares, so what must be counted or written once is.

- `SharedRateLimiter`: the per-key rate limit, counted across replicas (N replicas must not allow N times the rate).
- `ConfigWriter`: the one writer of Serve's declarative config. An admin change reads the whole config, changes
  one deployment and submits it all back; two such changes made at once from two replicas (or an app deployed in
  between) would each submit what they read, and the later would silently undo the earlier. Sent through one
  actor, changes run one after another, each on the config the previous one left. A caller that read a version
  (the ETag of `GET /admin/models/{name}/serving`) can also ask for compare-and-swap with `If-Match`: a change made
  since is refused with 409 and both versions, never overwritten.

Both live in Serve's namespace, detached (they outlive the replica that made them) and restart on failure.
`serve deploy` run by hand bypasses the writer: that is the operator's own change, made outside inferops.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import ray
from ray import serve

from serving.auth import RateLimiter

NAMESPACE = "serve"
WRITER_NAME = "inferops-config-writer"
LIMITER_PREFIX = "inferops-rate-limit-"
VERSION_CHARS = 16

log = logging.getLogger(__name__)


def config_version(entry: dict[str, Any]) -> str:
    """A short digest of one deployment's declared config: changes whenever anything in it does."""
    blob = json.dumps(entry, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:VERSION_CHARS]


@ray.remote(num_cpus=0, max_restarts=-1)
class SharedRateLimiter:
    """One token bucket per key for a whole app."""

    def __init__(self, rate_per_s: float, burst: float | None = None) -> None:
        self.limiter = RateLimiter(rate_per_s, burst)

    def configure(self, rate_per_s: float, burst: float | None = None) -> None:
        if (rate_per_s, burst if burst is not None else max(1.0, rate_per_s)) != (
            self.limiter.rate,
            self.limiter.burst,
        ):
            self.limiter = RateLimiter(rate_per_s, burst)

    def allow(self, key_id: str) -> tuple[bool, float]:
        return self.limiter.allow(key_id)


class ReplicaRateLimit:
    """What an ingress replica asks per request: the app's shared bucket, or (while that actor restarts) a
    bucket of its own, so a limit is never simply switched off."""

    def __init__(self, app_name: str, rate_per_s: float, burst: float | None = None) -> None:
        self.local = RateLimiter(rate_per_s, burst)
        self.rate = rate_per_s
        try:
            self.shared: Any = SharedRateLimiter.options(  # type: ignore[attr-defined]
                name=LIMITER_PREFIX + app_name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
            ).remote(rate_per_s, burst)
            self.shared.configure.remote(rate_per_s, burst)
        except Exception as exc:  # no Ray here (a unit test): this replica counts alone
            log.warning("rate limit counted per replica: shared limiter unavailable (%s)", exc)
            self.shared = None

    async def allow(self, key_id: str) -> tuple[bool, float]:
        if self.shared is not None:
            try:
                allowed, retry = await self.shared.allow.remote(key_id)
                return bool(allowed), float(retry)
            except Exception as exc:  # the actor is restarting: count here until it is back
                log.warning("shared rate limiter unavailable, counting on this replica: %s", exc)
        return self.local.allow(key_id)


@ray.remote(num_cpus=0, max_restarts=-1)
class ConfigWriter:
    """Serializes every read-modify-write of Serve's declarative config that inferops makes (one call at a time)."""

    def _fresh_client(self) -> None:
        # Serve may have been restarted since the last call: find the controller by name again
        from ray.serve.context import _disconnect

        _disconnect()

    def read(self, app_name: str, deployment: str) -> dict[str, Any]:
        self._fresh_client()
        return deployment_serving_config(app_name, deployment)

    def update(
        self,
        app_name: str,
        deployment: str,
        patch: dict[str, Any],
        num_replicas: int | None,
        autoscaling: dict[str, Any] | None,
        expect_version: str | None,
    ) -> dict[str, Any]:
        self._fresh_client()
        return update_deployment_now(app_name, deployment, patch, num_replicas, autoscaling, expect_version)

    def deploy(self, entry: dict[str, Any]) -> None:
        self._fresh_client()
        deploy_entry_now(entry)


# ---- Serve's declarative config: read, change one deployment, submit (run by the writer) -----------------------


def declared_apps(app_name: str) -> dict[str, dict[str, Any]]:
    """`live_app_configs()`, refused when `app_name` is not among them (nothing to read or update)."""
    apps = live_app_configs()
    if app_name not in apps:
        raise RuntimeError(
            f"application {app_name!r} was not deployed from a config (serve deploy / inferops serve)"
        )
    return apps


def update_deployment_now(
    app_name: str,
    deployment: str,
    user_config_patch: dict[str, Any],
    num_replicas: int | None = None,
    autoscaling: dict[str, Any] | None = None,
    expect_version: str | None = None,
) -> dict[str, Any]:
    """Merge `user_config_patch` (and a replica count or an autoscaling config) into one deployment of a
    declaratively deployed app; run only by the config writer, one call at a time.

    Only `user_config`, `num_replicas` and `autoscaling_config` change, which Serve applies without restarting
    anything: running replicas get `reconfigure()`, new ones start with the same user_config. With
    `expect_version`, a deployment whose config has changed since that version is left as it is and the answer
    says `conflict`.
    """
    apps = declared_apps(app_name)
    deployments = apps[app_name].setdefault("deployments", [])
    target = next((d for d in deployments if d.get("name") == deployment), None)
    if target is None:
        target = {"name": deployment}
        deployments.append(target)
    before = config_version(target)
    if expect_version is not None and expect_version != before:
        return {
            "app": app_name,
            "deployment": deployment,
            "conflict": True,
            "version": before,
            "reason": f"the deployment's config changed since version {expect_version} (it is {before} now): "
            "read it again (GET /admin/models/<name>/serving) and retry on what it holds",
        }
    target["user_config"] = {**(target.get("user_config") or {}), **user_config_patch}
    # Serve's DeploymentSchema refuses an int num_replicas beside an autoscaling_config: each drops the other
    if autoscaling is not None:
        target["autoscaling_config"] = autoscaling
        target.pop("num_replicas", None)
    elif num_replicas is not None:
        target["num_replicas"] = num_replicas
        target.pop("autoscaling_config", None)
    submit_app_configs(list(apps.values()))
    return {"app": app_name, "deployment": deployment, "version": config_version(target)}


def deployment_serving_config(app_name: str, deployment: str) -> dict[str, Any]:
    """One deployment's replica count, autoscaling and user_config in the app's declarative config (None:
    the config leaves it to the code, which builds a fixed count without autoscaling)."""
    apps = declared_apps(app_name)
    deployments = apps[app_name].get("deployments") or []
    target: dict[str, Any] = next((d for d in deployments if d.get("name") == deployment), {})
    return {
        "app": app_name,
        "deployment": deployment,
        "version": config_version(target or {"name": deployment}),
        "num_replicas": target.get("num_replicas"),
        "autoscaling_config": target.get("autoscaling_config"),
        "user_config": target.get("user_config") or {},
    }


def deploy_entry_now(mine: dict[str, Any]) -> None:
    """Put one app entry into the declarative config beside the others (run only by the config writer)."""
    apps = [
        cfg
        for app_name, cfg in live_app_configs().items()
        if app_name != mine["name"] and cfg.get("route_prefix", "/") != mine["route_prefix"]
    ]
    apps.append(mine)
    submit_app_configs(apps)


def serve_client() -> Any:
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("Serve is not running: call serve.start() first")
    return client


def live_app_configs() -> dict[str, dict[str, Any]]:
    """The config of every declaratively deployed app that still runs, by name, as `serve deploy` would take it
    back. Not an app being deleted: the controller's checkpoint still lists apps deleted since, and one submitted
    back while its removal is under way would be deployed again (a trial app brought back by the next deploy)."""
    from ray.serve.schema import ApplicationStatus

    live = {
        name for name, app in serve.status().applications.items() if app.status != ApplicationStatus.DELETING
    }
    current = ray.get(serve_client()._controller.get_app_configs.remote())
    return {name: cfg.model_dump(exclude_unset=True) for name, cfg in current.items() if name in live}


def submit_app_configs(apps: list[dict[str, Any]]) -> Any:
    """Submit the whole declarative config (Serve replaces it as one); returns the client for waiting."""
    from ray.serve.schema import ServeDeploySchema

    client = serve_client()
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": apps}))
    return client


def config_writer() -> Any:
    """The cluster's config writer (made on first use)."""
    return ConfigWriter.options(  # type: ignore[attr-defined]
        name=WRITER_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote()
