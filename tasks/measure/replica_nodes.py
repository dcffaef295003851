"""What a Serve app's replicas use, sampled where they run: one Ray actor per node that hosts a replica, pinned to
that node, samples the replica processes there (psutil, and the node's GPUs through NVML) while the caller measures.
The Prefect worker that drives a measurement is rarely the node that serves it; this is how its CPU and GPU
figures still come from the replicas themselves."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tasks.measure.system_metrics import DEFAULT_INTERVAL_S, RAY_REPLICA_MARKER, SystemSampler, SystemSummary
from tasks.measure.system_metrics import replica_pids as local_replica_pids

# a sampler that does not answer within this long after the measurement is left out, with the reason
STOP_TIMEOUT_S = 30.0


class NodeSampler:
    """Samples, on the node it runs on, the processes whose title holds `marker` (run as a Ray actor pinned there)."""

    def __init__(self, marker: str, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.sampler = SystemSampler(local_replica_pids(marker), interval_s=interval_s).start()

    def where(self) -> tuple[str, int]:
        return self.host, self.pid

    def stop(self) -> SystemSummary:
        return self.sampler.stop()


@dataclass
class NodeUsage:
    """What the samplers on the replicas' nodes saw, node by node (Ray node id -> summary), and what failed."""

    summaries: dict[str, SystemSummary] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)  # node id -> host name the sampler ran on
    sampler_pids: dict[str, int] = field(default_factory=dict)  # node id -> the sampler's own process
    errors: list[str] = field(default_factory=list)

    @property
    def processes(self) -> int:
        return sum(len(s.pids) for s in self.summaries.values())

    def cpu_percent(self) -> tuple[float, float]:
        """Mean and peak CPU of the replica processes (percent of one core), summed over the nodes; the peak is the
        sum of each node's peak, which never falls below the whole's."""
        sampled = [s for s in self.summaries.values() if s.pids]
        return sum(s.cpu_percent_mean for s in sampled), sum(s.cpu_percent_max for s in sampled)

    def gpu_utilisation_percent_mean(self) -> float | None:
        """The mean over every GPU reading of every node that has one (None: no node sampled a GPU)."""
        utils = [
            g.utilisation_percent
            for s in self.summaries.values()
            for _, gs in s.gpu_samples
            for g in gs
            if g.utilisation_percent is not None
        ]
        return sum(utils) / len(utils) if utils else None


def replica_nodes(app: str) -> dict[str, int]:
    """Ray node id -> RUNNING replicas of `app` (every deployment) on it, from Serve's details."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    details = client.get_serve_details() if client is not None else {}
    nodes: dict[str, int] = {}
    for deployment in ((details.get("applications") or {}).get(app) or {}).get("deployments", {}).values():
        for replica in deployment.get("replicas") or []:
            if replica.get("state") == "RUNNING" and replica.get("node_id"):
                nodes[replica["node_id"]] = nodes.get(replica["node_id"], 0) + 1
    return nodes


@contextmanager
def sampled_on_replica_nodes(app: str, interval_s: float = DEFAULT_INTERVAL_S) -> Iterator[NodeUsage]:
    """Sample `app`'s replica processes on every node that runs one, for as long as the block runs; the usage is
    filled in when the block ends. A node whose sampler cannot start or answer is left out with the reason (in
    `errors`): the measurement itself goes on."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    usage = NodeUsage()
    actors: dict[str, Any] = {}
    try:
        nodes = replica_nodes(app)
    except Exception as exc:  # noqa: BLE001 - Serve could not say where the app runs: nothing to sample
        usage.errors.append(f"Serve could not say where {app}'s replicas run: {exc}")
        nodes = {}
    if not nodes and not usage.errors:
        usage.errors.append(f"no running replica of {app} on the cluster")
    remote: Any = ray.remote(num_cpus=0, max_restarts=0)(NodeSampler)
    marker = f"{RAY_REPLICA_MARKER}:{app}:"
    for node_id in nodes:
        try:
            actor: Any = remote.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
            ).remote(marker, interval_s)
            usage.hosts[node_id], usage.sampler_pids[node_id] = ray.get(
                actor.where.remote(), timeout=STOP_TIMEOUT_S
            )
            actors[node_id] = actor
        except Exception as exc:  # noqa: BLE001 - that node goes unsampled, with the reason
            usage.errors.append(f"node {node_id[:12]}: sampler did not start ({type(exc).__name__}: {exc})")
    try:
        yield usage
    finally:
        for node_id, actor in actors.items():
            try:
                usage.summaries[node_id] = ray.get(actor.stop.remote(), timeout=STOP_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - that node's figures are missing, with the reason
                usage.errors.append(
                    f"node {node_id[:12]}: sampler did not answer ({type(exc).__name__}: {exc})"
                )
            finally:
                try:
                    ray.kill(actor)
                except Exception as exc:  # noqa: BLE001 - already gone with its node
                    usage.errors.append(f"node {node_id[:12]}: sampler not stopped ({exc})")
