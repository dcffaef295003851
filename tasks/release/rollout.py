"""Rolling the live endpoint to a registry version: hot switch, the version's serving knobs on every replica, and
every replica verified on the version's sha256. The optimization cycle, the rollback command and the risk
actions all roll out through `rollout`.

The switch names the version (`models:/NAME/VERSION`), never an alias: an alias can move between a refused
switch and a retry (a rollback moves `champion`), and the endpoint must not follow it there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from serving.client import EndpointError, InferopsClient, excerpt
from serving.resolver import version_uri
from tasks.records.registry import VersionRef


class RolloutRefused(RuntimeError):
    """The endpoint kept serving what it served: the switch (and any fallback) was refused or unreachable."""


@dataclass
class RolloutResult:
    """What the endpoint serves after a rollout, how it got there, and whether the knobs took."""

    model: str
    version: str
    sha256: str
    how: str  # "switch" | "server rollback"
    detail: dict[str, Any]
    knobs: dict[str, int] | None = None
    knobs_applied: dict[str, Any] | None = None
    knobs_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollout(
    client: InferopsClient,
    model: str,
    target: VersionRef,
    knobs: dict[str, int] | None = None,
    *,
    fall_back_to_server_rollback: bool = False,
) -> RolloutResult:
    """Switch `model` on the endpoint to version `target`, then serve it with `knobs` on every replica.

    A refused switch raises RolloutRefused (the endpoint keeps its model), unless `fall_back_to_server_rollback`
    lets the server return to its own recorded previous model, as an emergency rollback must. Knobs that do not
    converge are put back by the client and reported in `knobs_error`: the version serves, with the old knobs.
    """
    tried = []
    try:
        reply = client.switch(model, uri=version_uri(model, target.version))
        tried.append(f"switch: HTTP {reply.status} {reply.body.get('reason', excerpt(reply.text))}")
        how = "switch" if reply.status == 200 else ""
    except EndpointError as exc:
        tried.append(f"switch: {exc}")
        how, reply = "", None
    if not how and fall_back_to_server_rollback:
        try:
            reply = client.rollback(model)
            tried.append(
                f"server rollback: HTTP {reply.status} {reply.body.get('reason', excerpt(reply.text))}"
            )
            how = "server rollback" if reply.status == 200 else ""
        except EndpointError as exc:
            tried.append(f"server rollback: {exc}")
    if not how or reply is None:
        raise RolloutRefused(
            f"endpoint {client.url} kept its model instead of {model} v{target.version}: " + "; ".join(tried)
        )
    result = RolloutResult(model, target.version, target.sha256, how, reply.body, knobs)
    if knobs is not None:
        try:
            result.knobs_applied = client.apply_knobs(model, knobs, expect_sha256=target.sha256)
        except EndpointError as exc:
            result.knobs_error = str(exc)
    return result
