"""Where the model level is timed: on the serving cluster, as a Ray task pinned to the node a production replica runs
on and holding the GPUs a replica holds, so a candidate is timed on the hardware it will be served on (FP16 and
TensorRT on the GPU even when the Prefect worker has none); in this process when no serving cluster is connected.
Baseline and candidates of one cycle are timed at the same place, and every figure names the node and device."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from serving.app import PRODUCTION_APP, join_ray
from serving.artifacts import sha256_file
from serving.settings import get_settings
from tasks.optimize.candidates import Candidate
from tasks.optimize.trials import REPLICA_TIMEOUT_S, Measured, measure
from tasks.policy import Optimization


@dataclass(frozen=True)
class Placement:
    """Where one cycle's model-level figures are measured, and why there."""

    on_cluster: bool
    reason: str
    node_id: str | None = None  # Ray's id of the node a production replica runs on
    node: str = ""  # that node's address, for people
    num_gpus: float = 0.0  # what one production replica holds

    @classmethod
    def here(cls, reason: str) -> Placement:
        return cls(False, reason, node=socket.gethostname())

    @property
    def on_gpu(self) -> bool | None:
        """Whether candidates are timed on a GPU: known on the cluster (what a replica holds), None here (the
        variants' own check of this process's providers decides)."""
        return self.num_gpus > 0 if self.on_cluster else None


def served_app(applications: dict[str, Any], url: str | None) -> str:
    """The Serve app answering at `url`: the one whose route prefix is the URL's path (production's at "/")."""

    def prefix(path: str | None) -> str:
        return (path or "/").rstrip("/") or "/"

    wanted = prefix(urlsplit(url).path if url else None)
    found = [name for name, app in applications.items() if prefix(app.get("route_prefix")) == wanted]
    return found[0] if found else PRODUCTION_APP


def place_timing(url: str | None = None) -> Placement:
    """Beside the first running replica of the app serving `url` (production's, `inferops`, when no app has its
    path): its node, and the GPUs its deployment gives each replica. With no Ray connection, or no running replica
    to stand beside, the figures are timed in this process, which the placement's reason says."""
    import ray

    if not ray.is_initialized():
        if not os.environ.get("RAY_ADDRESS"):
            return Placement.here("no Ray cluster is connected (RAY_ADDRESS unset): timed in this process")
        join_ray()  # the cluster the trial apps will be deployed on too
    from ray.serve.context import _get_global_client

    try:
        client = _get_global_client(raise_if_no_controller_running=False)
        details = client.get_serve_details() if client is not None else {}
    except Exception as exc:  # noqa: BLE001 - no Serve to ask: nothing serves to stand beside
        return Placement.here(
            f"Serve could not be asked where {url or 'production'} runs ({exc}): timed here"
        )
    applications = details.get("applications") or {}
    app = served_app(applications, url)
    for name, deployment in (applications.get(app) or {}).get("deployments", {}).items():
        running = [
            r for r in deployment.get("replicas") or [] if r.get("state") == "RUNNING" and r.get("node_id")
        ]
        if not running:
            continue
        options = (deployment.get("deployment_config") or {}).get("ray_actor_options") or {}
        gpus = float(options.get("num_gpus") or 0.0)
        node = str(running[0].get("node_ip") or running[0]["node_id"])
        return Placement(
            True,
            f"a Ray task on node {node}, beside {app}'s {name} replica"
            + (f", holding {gpus:g} GPU as each replica does" if gpus else ", on its CPUs"),
            running[0]["node_id"],
            node,
            gpus,
        )
    return Placement.here(
        f"no running replica of {app} on the cluster to stand beside: timed in this process"
    )


def _measure_located(
    model: str,
    candidate: Candidate,
    repeats: int,
    policy: Optimization,
    workload: Any,
    in_ray_task: bool = False,
) -> Measured:
    """`measure` where it runs, its figures labelled with the host (and Ray node, in a Ray task) and the device they
    came from."""
    import ray

    measured = measure(model, candidate, repeats, policy, workload)
    node = f"Ray node {ray.get_runtime_context().get_node_id()[:12]}, " if in_ray_task else ""
    measured.details["measured_on"] = f"{socket.gethostname()} ({node}{device_of(measured.provider)})"
    measured.details["timed_in_pid"] = os.getpid()
    # when the timing ended (epoch s): what ran beside it can be told
    measured.details["timed_at"] = time.time()
    return measured


def device_of(provider: str) -> str:
    """The device an engine's provider computes on, for people: the GPU's name where CUDA runs it."""
    if "CUDA" in provider or "Tensorrt" in provider or provider == "torch-cuda":
        try:
            import torch

            return f"{provider} on {torch.cuda.get_device_name(0)}"
        except Exception:  # noqa: BLE001 - the provider alone still says it ran on a GPU
            return provider
    return f"{provider} on CPU"


def measure_at(
    where: Placement | None,
    model: str,
    candidate: Candidate,
    repeats: int,
    policy: Optimization,
    workload: Any = None,
) -> Measured:
    """`measure`, at `where` (None: in this process). On the cluster it is a Ray task on the replica's node holding
    the replica's GPUs and no logical CPU (production holds those; its replicas' CPUs are shared as the trial apps
    share them); a task that does not finish within the replica timeout fails with the reason. The artifact it
    measured may be on that node only: `artifact_here` brings the one registered."""
    if where is None or not where.on_cluster:
        return _measure_located(model, candidate, repeats, policy, workload)
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    timed = ray.remote(_measure_located).options(
        num_cpus=0,
        num_gpus=where.num_gpus,
        max_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(str(where.node_id), soft=False),
    )
    ref = timed.remote(model, candidate, repeats, policy, workload, True)
    try:
        measured: Measured = ray.get(ref, timeout=REPLICA_TIMEOUT_S * max(1, repeats))
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise RuntimeError(
            f"timing {candidate.name} on node {where.node} did not finish within "
            f"{REPLICA_TIMEOUT_S * max(1, repeats):.0f} s (is a GPU of the size a replica holds free there?)"
        ) from None
    except ray.exceptions.RayTaskError as exc:
        raise exc.as_instanceof_cause() from None
    return measured


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def artifact_here(measured: Measured, where: Placement | None) -> Measured:
    """The measured artifact as a file on this host, where the registry uploads it from: the same file when the node
    shares this host's data dir, else its bytes fetched from the node (a task pinned there) into this host's models
    dir, checked against the sha256 that was timed."""
    if (
        where is None
        or not where.on_cluster
        or (measured.path.exists() and sha256_file(measured.path) == measured.sha256)
    ):
        return measured
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    read = ray.remote(_read_file).options(
        num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(str(where.node_id), soft=False)
    )
    local = get_settings().models_dir / "from-cluster" / measured.sha256[:16] / measured.path.name
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_suffix(local.suffix + ".part")
    partial.write_bytes(ray.get(read.remote(str(measured.path))))
    if sha256_file(partial) != measured.sha256:
        partial.unlink()
        raise RuntimeError(
            f"{measured.path.name} fetched from node {where.node} is not the artifact timed there (sha256 "
            f"{measured.sha256[:12]}): it changed on the node while the cycle ran; run the cycle again"
        )
    partial.replace(local)  # whole or not at all: a reader never sees half a file
    return replace(measured, path=local)
