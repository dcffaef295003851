"""Failover across two Ray nodes: the node holding one of two replicas dies under open-loop load, the endpoint keeps
answering, and Serve runs two replicas again.

The scenario runs `benchmarks/failover.py` in a subprocess: this session already has its own Ray (`ray_session`) and
a process joins one Ray cluster only, and the subprocess gives the check on leftover processes a boundary.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "failover.py"
# Short settings: kill 4 s into 24 s of load leaves room after recovery (6-16 s on this box) for the after phase.
ARGS = ["--json", "--rate", "20", "--duration", "24", "--kill-at", "4"]
RUN_TIMEOUT_S = 300.0
SETTLE_S = 15.0  # Ray's processes exit within seconds of their cluster's shutdown


def _left(sid: int, temp_dir: str) -> list[str]:
    """Processes of the script's session, and any process of its cluster (its temp dir on the command line:
    a raylet or gcs_server orphaned to init counts too), once they had SETTLE_S to exit."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        left = []
        for p in psutil.process_iter(["pid", "ppid", "name", "cmdline"]):
            try:
                in_session = os.getsid(p.pid) == sid
                of_cluster = any(temp_dir in arg for arg in p.info["cmdline"] or [])
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
            if in_session or of_cluster:
                orphaned = p.info["ppid"] in (0, 1) or not psutil.pid_exists(p.info["ppid"])
                left.append(f"{p.info['pid']} {p.info['name']}{' (orphaned)' if orphaned else ''}")
        if not left or time.monotonic() > deadline:
            return left


@pytest.fixture(scope="module")
def failover(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import ray

    session_nodes = {n["NodeID"] for n in ray.nodes()}
    log = tmp_path_factory.mktemp("failover") / "failover.log"
    started = time.monotonic()
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *ARGS],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"failover.py ran past {RUN_TIMEOUT_S:.0f} s; its log:\n{log.read_text()[-3000:]}")
    assert proc.returncode == 0, f"failover.py exited {proc.returncode}; its log:\n{log.read_text()[-3000:]}"
    result = json.loads(out)
    result["_wall_s"] = time.monotonic() - started
    result["_left"] = _left(proc.pid, result["temp_dir"])
    result["_session_nodes"] = session_nodes
    if result["_left"]:
        os.killpg(proc.pid, signal.SIGKILL)
    return result


def test_replicas_were_spread_over_two_nodes_before_the_kill(failover: dict[str, Any]) -> None:
    before = failover["replicas_before"]
    assert failover["spread_before"], before
    assert len(before) == 2 and {r["node_id"] for r in before} == set(failover["nodes"].values())
    assert all(r["state"] == "RUNNING" for r in before)


def test_the_endpoint_kept_answering_through_the_kill(failover: dict[str, Any]) -> None:
    phases = {p["name"]: p for p in failover["phases"]}
    assert phases["before kill"]["requests"] > 0 and phases["before kill"]["failed"] == 0, phases
    after = phases["after recovery"]
    assert after["requests"] > 0, f"no load left after recovery at {failover['recovery_s']} s: {phases}"
    assert after["failed"] == 0, after
    # the surviving replica answered all along: no whole second after the kill without a successful answer
    seconds = failover["per_second_after_kill"]
    assert seconds and all(s["ok"] > 0 for s in seconds if s["sent"] >= 5), seconds
    assert failover["sent"] >= 0.8 * failover["rate_rps"] * failover["duration_s"]
    assert failover["success_share"] >= 0.95, failover["failures"]


def test_serve_runs_two_replicas_again_on_the_surviving_node(failover: dict[str, Any]) -> None:
    recovery = failover["recovery_s"]
    assert recovery is not None and math.isfinite(recovery) and 0 < recovery < 120, recovery
    assert failover["replica_gone_s"] is not None and failover["replica_gone_s"] <= recovery
    after = failover["replicas_after"]
    assert failover["running_after"] == 2 and {r["node_id"] for r in after} == {failover["nodes"]["head"]}
    assert failover["nodes"]["worker"] not in {r["node_id"] for r in after}


def test_the_cluster_left_no_process_behind(failover: dict[str, Any]) -> None:
    assert failover["_left"] == [], f"processes left after failover.py exited: {failover['_left']}"
    assert not Path(failover["temp_dir"]).exists()


def test_the_sessions_own_ray_was_not_disturbed(failover: dict[str, Any]) -> None:
    import ray

    assert {n["NodeID"] for n in ray.nodes()} == failover["_session_nodes"]
    assert ray.get(ray.remote(lambda: 1).remote(), timeout=60) == 1
