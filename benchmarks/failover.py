"""Failover across two Ray nodes: open-loop load keeps running while the node holding one of two replicas dies.

    .venv/bin/python benchmarks/failover.py --rate 25 --duration 40 --kill-at 10 [--json]

A head node and a worker node on this machine (`ray.cluster_utils.Cluster`, `--node-cpus` CPUs each, enough for
the head to take both replicas once the worker is gone), the inferops app with two replicas placed one per node
by Serve's default SPREAD scheduling (checked from the controller's replica details, not assumed) and the HTTP
proxy on the head only. Open-loop load (tasks.measure.loadgen's schedule and loop) runs throughout; `--kill-at`
seconds in, every process of the worker node is SIGKILLed (`remove_node(allow_graceful=False)`), as a machine
that loses power. Printed: requests and errors before the kill, during failover and after recovery, the errors by
status, the failover window, and how long until Serve ran two replicas again. The cluster is shut down on every
exit path (error, Ctrl-C, SIGTERM); `--json` prints the figures as one JSON object instead of the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script, this file's folder comes first on sys.path and its name would shadow the `serving` package.
    sys.path[0] = str(ROOT)

from serving import routes  # noqa: E402 (after the path fix above)
from serving.client import InferopsClient, auth_headers  # noqa: E402
from serving.network import free_port  # noqa: E402
from tasks.measure.disruption import (  # noqa: E402
    DisruptedRun,
    failure_window,
    per_second,
    phase,
    run_across,
    sent_between,
)
from tasks.measure.suites import oip_body_factory  # noqa: E402
from tasks.policy import default_policy  # noqa: E402

APP = "failover"
KEY = "failover-key"
REPLICAS = 2
POLL_S = 0.25  # how often the watcher reads the controller's replica table
DEPLOY_TIMEOUT_S = 180.0
# Every request may wait this long: a request stuck on the dead replica shows up as a timeout, not as a hang.
DEFAULT_REQUEST_TIMEOUT_S = 30.0
EXAMPLES = 64


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@dataclass(frozen=True)
class Replica:
    replica_id: str
    node_id: str | None
    state: str
    pid: int | None = None


# A condition on one snapshot: the deployment's replicas and the ids of the nodes Ray holds alive.
Check = Callable[[list["Replica"], set[str]], bool]


@dataclass
class ReplicaWatch:
    """Reads the controller's replica table (and which nodes Ray holds alive) every POLL_S, in a thread."""

    app: str
    deployment: str = "InferenceIngress"
    snapshots: list[tuple[float, list[Replica], set[str]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def read(self) -> tuple[list[Replica], set[str]]:
        import ray
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        assert client is not None
        details = client.get_serve_details()
        deployment = details["applications"][self.app]["deployments"][self.deployment]
        replicas = [
            Replica(
                r["replica_id"], r.get("node_id"), str(getattr(r["state"], "value", r["state"])), r.get("pid")
            )
            for r in deployment["replicas"]
        ]
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        return replicas, alive

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                replicas, alive = self.read()
            except Exception:  # noqa: BLE001 - a controller busy with the dead node may miss one read: read again
                pass
            else:
                self.snapshots.append((time.monotonic(), replicas, alive))
            self._stop.wait(POLL_S)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="replica-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def first_after(self, t: float, test: Check) -> float | None:
        """The first snapshot time after `t` whose (replicas, alive nodes) pass `test`."""
        return next((when for when, reps, alive in self.snapshots if when >= t and test(reps, alive)), None)

    def last_before(self, t: float) -> list[Replica]:
        before = [reps for when, reps, _ in self.snapshots if when < t]
        return before[-1] if before else []

    def wait(self, test: Check, timeout_s: float, since: float) -> float | None:
        """The first snapshot time after `since` that passes `test`, waiting up to `timeout_s` for one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (found := self.first_after(since, test)) is not None:
                return found
            time.sleep(POLL_S)
        return None


def running(replicas: list[Replica]) -> list[Replica]:
    return [r for r in replicas if r.state == "RUNNING"]


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from serving.app import ingress_env
    from serving.variants import ensure_variant

    # Built here, before Ray starts, so the replicas only load it (both nodes read this machine's disk).
    artifact = ensure_variant(args.model, args.variant)
    env, ingress = ingress_env(args.ingress)  # before Ray starts: Serve reads the ingress mode when it boots
    os.environ.update(env)

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="inferops-failover-")
    cluster: Cluster | None = None
    watch = ReplicaWatch(APP)
    try:
        started = time.monotonic()
        # Cluster's head would bind the dashboard agent's default port, which another Ray on this host may hold.
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": args.node_cpus,
                "temp_dir": temp_dir,
                "include_dashboard": False,
                "dashboard_agent_listen_port": free_port(),
            },
        )
        worker = cluster.add_node(num_cpus=args.node_cpus, temp_dir=temp_dir)
        head = cluster.head_node
        assert head is not None
        head_id, worker_id = head.node_id, worker.node_id
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        # SIGTERM stops like Ctrl-C (the finally below shuts the cluster down); set once Ray is up, whose own
        # handler installed as it starts would abort the process.
        signal.signal(signal.SIGTERM, _interrupt)
        log(f"two nodes up in {time.monotonic() - started:.1f} s: head {head_id[:8]}, worker {worker_id[:8]}")

        from serving.app import run_local

        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        app_args = default_policy().app_args(
            model=args.model,
            variant=args.variant,
            num_replicas=REPLICAS,
            api_keys=[KEY],
            health_check_period_s=args.health_check_period_s,
        )
        url = run_local(app_args, name=APP, port=port)
        with InferopsClient(url, KEY) as client:
            client.wait_ready()
        watch.start()
        placed = watch.wait(
            lambda reps, alive: len(running(reps)) == REPLICAS, timeout_s=DEPLOY_TIMEOUT_S, since=0.0
        )
        if placed is None:
            raise RuntimeError(f"Serve did not run {REPLICAS} replicas within {DEPLOY_TIMEOUT_S:.0f} s")
        before = running(watch.last_before(math.inf))
        log(
            f"deployed in {time.monotonic() - started:.1f} s: "
            + ", ".join(_where(r, head_id) for r in before)
        )

        def kill_worker() -> list[int]:
            assert cluster is not None
            killed = [] if args.daemons_only else kill_workers_of(worker)
            cluster.remove_node(worker, allow_graceful=False)
            return killed

        load = run_across(
            url + routes.INFER.path(args.model),
            oip_body_factory(args.model, {}, EXAMPLES),
            rate=args.rate,
            duration_s=args.duration,
            event=kill_worker,
            event_name="kill worker node",
            event_at_s=args.kill_at,
            arrivals="poisson",
            headers=auth_headers(KEY),
            timeout_s=args.request_timeout_s,
            concurrency_cap=max(256, int(args.rate * args.request_timeout_s) + 1),
        )
        assert load.event is not None
        if load.event.error:
            raise RuntimeError(f"killing the worker node failed: {load.event.error}")
        killed = load.event.started

        def recovered(reps: list[Replica], alive: set[str]) -> bool:
            up = running(reps)
            return len(up) == REPLICAS and all(r.node_id in alive and r.node_id != worker_id for r in up)

        back = watch.wait(recovered, timeout_s=args.recovery_timeout_s, since=killed)
        watch.stop()
        return report(args, ingress, artifact.sha256, load, watch, head_id, worker_id, killed, back, temp_dir)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the shutdown half-way
        watch.stop()
        with contextlib.suppress(Exception):
            serve.shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def kill_workers_of(node: Any) -> list[int]:
    """SIGKILL the worker processes the node's raylet started (the replica among them), as when the machine dies.

    `remove_node` kills only the node's Ray daemons; a replica outlives its raylet for a moment and finishes the
    requests it holds, which a machine that loses power would not.
    """
    import psutil
    from ray._private import ray_constants

    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    killed = []
    for child in psutil.Process(raylet).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
            killed.append(child.pid)
    return killed


def _where(r: Replica, head_id: str) -> str:
    node = "head" if r.node_id == head_id else f"node {str(r.node_id)[:8]}"
    return f"{r.replica_id} on {node}"


def report(
    args: argparse.Namespace,
    ingress: str,
    sha256: str,
    load: DisruptedRun,
    watch: ReplicaWatch,
    head_id: str,
    worker_id: str,
    killed: float,
    back: float | None,
    temp_dir: str,
) -> dict[str, Any]:
    """The figures of one failover run, as plain data (the table and the JSON are both rendered from it)."""
    before = running(watch.last_before(killed))
    after = running(watch.last_before(math.inf))
    noticed = watch.first_after(
        killed, lambda reps, alive: not any(r.node_id == worker_id for r in running(reps))
    )
    node_dead = watch.first_after(killed, lambda reps, alive: worker_id not in alive)
    end = back if back is not None else math.inf
    phases = [
        phase("before kill", sent_between(load.samples, -math.inf, killed)),
        phase("failover", sent_between(load.samples, killed, end)),
        phase("after recovery", sent_between(load.samples, end)),
    ]
    window = failure_window(load.samples)
    total = phase("all", load.samples)
    seconds = per_second(sent_between(load.samples, killed), killed)
    last_short = max((s["second"] for s in seconds if s["ok"] < s["sent"]), default=None)

    def since_kill(t: float | None) -> float | None:
        return round(t - killed, 2) if t is not None else None

    return {
        "model": args.model,
        "variant": args.variant,
        "sha256": sha256,
        "rate_rps": args.rate,
        "duration_s": args.duration,
        "kill_at_s": args.kill_at,
        "node_cpus": args.node_cpus,
        "ingress": ingress,
        "killed": "node daemons" if args.daemons_only else "node daemons and worker processes",
        "killed_worker_pids": load.event.result if load.event is not None else None,
        "health_check_period_s": args.health_check_period_s,
        "nodes": {"head": head_id, "worker": worker_id},
        "replicas_before": [asdict(r) for r in before],
        "replicas_after": [asdict(r) for r in after],
        "spread_before": len(before) == REPLICAS and {r.node_id for r in before} == {head_id, worker_id},
        "running_after": len(after),
        "sent": total.requests,
        "ok": total.ok,
        "failed": total.failed,
        "success_share": total.ok / total.requests if total.requests else 0.0,
        "failures": total.failures,
        "phases": [p.as_dict() for p in phases],
        "failure_window_s": [since_kill(window[0]), since_kill(window[1])] if window else None,
        "replica_gone_s": since_kill(noticed),
        "node_dead_s": since_kill(node_dead),
        "recovery_s": since_kill(back),
        # the first whole second after the kill from which every second's requests all succeeded
        "success_back_s": (last_short + 1) if last_short is not None else 0,
        "per_second_after_kill": seconds,
        "generator_send_lag_p99_ms": load.load.generator.send_lag_p99_ms,
        "temp_dir": temp_dir,
    }


def _fmt(value: float | None, unit: str = " s") -> str:
    return "never" if value is None else f"{value:.1f}{unit}"


def render(result: dict[str, Any]) -> str:
    """The figures as a plain-text table and a few lines (what the other benchmarks print)."""
    lines = [
        f"failover: {result['model']} {result['variant']}, {REPLICAS} replicas on two Ray nodes "
        f"({result['node_cpus']} CPUs each, {result['ingress']} ingress on the head), open loop {result['rate_rps']:g} req/s for {result['duration_s']:g} s, "
        f"worker node SIGKILLed at {result['kill_at_s']:g} s ({result['killed']})",
        "replicas before the kill: "
        + ", ".join(
            f"{r['replica_id']} on {'head' if r['node_id'] == result['nodes']['head'] else 'worker'}"
            for r in result["replicas_before"]
        )
        + f" (spread over two nodes: {'yes' if result['spread_before'] else 'NO'})",
        "",
        f"{'phase':16} {'requests':>9} {'errors':>7} {'p50 ms':>9} {'p99 ms':>9}  errors by status",
    ]
    for p in result["phases"]:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(p["failures"].items())) or "-"
        lines.append(
            f"{p['name']:16} {p['requests']:9d} {p['failed']:7d} {p['p50_ms']:9.1f} {p['p99_ms']:9.1f}  {statuses}"
        )
    window = result["failure_window_s"]
    lines += [
        "",
        f"overall: {result['sent']} sent, {result['ok']} ok, {result['failed']} failed "
        f"({result['success_share']:.2%} ok)",
        "failover window (first to last failed answer, from the kill): "
        + (f"{window[0]:.1f} s .. {window[1]:.1f} s" if window else "no request failed"),
        f"Serve stopped routing to the dead node's replica after {_fmt(result['replica_gone_s'])}; "
        f"Ray marked the node dead after {_fmt(result['node_dead_s'])}",
        f"recovery: {REPLICAS} RUNNING replicas again {_fmt(result['recovery_s'])} after the kill "
        f"(now: {', '.join(r['replica_id'] + ' on head' for r in result['replicas_after'] if r['node_id'] == result['nodes']['head'])}); "
        f"every second fully successful again from second {result['success_back_s']} after the kill",
    ]
    return "\n".join(lines)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--variant", default="onnx-fp32")
    parser.add_argument("--rate", type=float, default=25.0, help="open-loop requests per second")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of load")
    parser.add_argument(
        "--kill-at", type=float, default=10.0, help="seconds into the load to kill the worker"
    )
    parser.add_argument(
        "--node-cpus", type=int, default=2, help="CPUs each node offers (the head must fit both replicas)"
    )
    parser.add_argument(
        "--health-check-period-s",
        type=float,
        default=default_policy().endpoint.health_check_period_s,
        help="Serve's replica health-check period (default: the policy's)",
    )
    parser.add_argument(
        "--ingress",
        default="proxy",
        choices=["auto", "proxy", "haproxy"],
        help="Serve's Python proxy (default) or its HAProxy ingress, on the head node only",
    )
    parser.add_argument(
        "--daemons-only",
        action="store_true",
        help="kill only the worker node's Ray daemons (remove_node alone): its replica finishes what it holds",
    )
    parser.add_argument("--request-timeout-s", type=float, default=DEFAULT_REQUEST_TIMEOUT_S)
    parser.add_argument(
        "--recovery-timeout-s",
        type=float,
        default=120.0,
        help="how long after the load to wait for two running replicas",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    if not 0 < args.kill_at < args.duration:
        parser.error(f"--kill-at {args.kill_at} must fall inside the load (0 < kill-at < --duration)")
    out = sys.stdout
    try:
        # Ray's driver prints the cluster's error messages (a raylet that died, say) to sys.stdout: send them to
        # stderr with the progress lines, so stdout holds only the table or the JSON.
        with contextlib.redirect_stdout(sys.stderr):
            result = run(args)
    except KeyboardInterrupt:
        log("interrupted; the cluster was shut down")
        raise SystemExit(130) from None
    print(json.dumps(result, indent=2) if args.json else render(result), file=out, flush=True)


if __name__ == "__main__":
    main()
