"""A candidate served on its own temporary Ray Serve app beside production, for the gate to measure, and always
removed afterwards (also when the gate fails or is cancelled)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from ray import serve

from serving.app import run_local
from serving.artifacts import slug
from serving.network import free_port
from serving.resolver import alias_uri, version_uri
from tasks.policy import Policy
from tasks.records import registry


@contextmanager
def gated_endpoint(
    model: str, alias: str, url: str | None, api_key: str | None, policy: Policy
) -> Iterator[tuple[str, str | None]]:
    """The URL to gate and its key: `url` as given, else `models:/model@alias` served on a local Ray Serve for the
    gate's duration and deleted after it."""
    if url is not None:
        yield url, api_key
        return
    key = api_key or secrets.token_urlsafe(24)
    # Its own route prefix: an app at "/" would replace the production app on the same Serve instance.
    name = f"gate-{slug(model)}"
    # Pinned to the version, not the alias: promotion removes `challenger`, and Serve rebuilds an app from its args
    # whenever its config changes.
    ref = registry.alias_version(model, alias)
    uri = version_uri(model, ref.version) if ref else alias_uri(model, alias)
    # The candidate's app is short-lived and reserves no logical CPU, so it schedules beside a production deployment
    # whose replicas hold every CPU Ray knows of (its ORT threads still come from the policy).
    args = policy.app_args(model=uri, api_keys=[key], num_cpus=0)
    local = run_local(args, name=name, port=free_port(), route_prefix=f"/{name}")
    try:
        yield local, key
    finally:
        serve.delete(name)
