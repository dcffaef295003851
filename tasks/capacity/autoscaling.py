"""The plan's Ray Serve autoscaling, as a Serve config file anyone can `serve deploy`, and applied to the live
deployment through the serving client (read back from Serve before it counts as applied)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from serving.artifacts import atomic_path
from serving.client import InferopsClient
from serving.settings import get_settings
from tasks.capacity.plan import AutoscalingConfig

# What `inferops serve` deploys when nothing else is named: the app and the deployment that serves its model.
DEFAULT_APP = "inferops"
DEFAULT_DEPLOYMENT = "InferenceIngress"


@dataclass(frozen=True)
class AppliedAutoscaling:
    """What the live deployment holds after the plan was applied (as read back from Serve)."""

    url: str
    model: str
    app: str
    deployment: str
    autoscaling_config: dict[str, Any]

    def sentence(self) -> str:
        c = self.autoscaling_config
        return (
            f"applied to {self.model} at {self.url} (app {self.app}, deployment {self.deployment}): "
            f"{c['min_replicas']}..{c['max_replicas']} replicas, target {c['target_ongoing_requests']:g} "
            "ongoing requests per replica, as Serve now holds it"
        )


def serve_config(
    config: AutoscalingConfig, app: str = DEFAULT_APP, deployment: str = DEFAULT_DEPLOYMENT
) -> dict[str, Any]:
    """The autoscaling as a Serve config fragment (`applications[].deployments[].autoscaling_config`)."""
    return {
        "applications": [
            {"name": app, "deployments": [{"name": deployment, "autoscaling_config": config.ray_config()}]}
        ]
    }


def write_serve_config(
    model: str,
    config: AutoscalingConfig,
    *,
    app: str = DEFAULT_APP,
    deployment: str = DEFAULT_DEPLOYMENT,
    path: str | Path | None = None,
) -> Path:
    """Write the plan's autoscaling as a Serve config file (default `capacity/serve-autoscaling-<model>.yaml`
    under the data dir), atomically, with the reason as a comment."""
    path = Path(path) if path else get_settings().data_dir / "capacity" / f"serve-autoscaling-{model}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        f"# Ray Serve autoscaling for {model}, from the capacity plan of {stamp}.\n"
        f"# {config.reason}\n"
        "# Merge into the app's Serve config (serve deploy), or apply it live: inferops capacity plan --apply.\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(
            header + yaml.safe_dump(serve_config(config, app, deployment), sort_keys=False), "utf-8"
        )
    return path


def apply_autoscaling(
    url: str, api_key: str | None, model: str, config: AutoscalingConfig, timeout_s: float = 120.0
) -> AppliedAutoscaling:
    """PUT the autoscaling to `model`'s deployment and wait until Serve holds it (EndpointError otherwise)."""
    with InferopsClient(url, admin_key=api_key) as client:  # an admin route: the key is an admin key
        held = client.apply_autoscaling(model, config.ray_config(), timeout_s=timeout_s)
    return AppliedAutoscaling(url, model, held["app"], held["deployment"], dict(held["autoscaling_config"]))


@dataclass(frozen=True)
class PublishedAutoscaling:
    """Where the plan's autoscaling went: the Serve config file, and the live deployment when it was applied."""

    serve_config: Path
    applied: AppliedAutoscaling | None

    def sentence(self) -> str:
        if self.applied:
            return self.applied.sentence()
        return f"autoscaling written to {self.serve_config}; apply it with --apply --url"


def publish_autoscaling(
    model: str, config: AutoscalingConfig, url: str | None = None, api_key: str | None = None
) -> PublishedAutoscaling:
    """Apply the autoscaling at `url` (when given) and write it as a Serve config file naming the app and
    deployment that hold it (Serve's own names once applied, else `inferops serve`'s)."""
    applied = apply_autoscaling(url, api_key, model, config) if url else None
    path = write_serve_config(
        model,
        config,
        app=applied.app if applied else DEFAULT_APP,
        deployment=applied.deployment if applied else DEFAULT_DEPLOYMENT,
    )
    return PublishedAutoscaling(path, applied)


def output(published: PublishedAutoscaling) -> dict[str, Any]:
    """The plan output's keys for it: the file written and the config the live deployment holds (None: not applied)."""
    return {
        "serve_config": str(published.serve_config),
        "applied": published.applied.autoscaling_config if published.applied else None,
    }
