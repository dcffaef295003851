"""A production rehearsal on loopback: every deployment of prefect.yaml run by a real worker against real servers.

What it starts, each on a free loopback port and stopped at the end: a Prefect server and a process worker for
`inferops-pool`, an `mlflow server` (SQLite + an artifact root served over HTTP), `inferops serve` (the production
Ray Serve app, on a Ray of its own that exports metrics) and a Prometheus scraping that Ray. It sets the Prefect
variables prefect.yaml names, runs `prefect --no-prompt deploy --all`, then starts a run of every deployment with
short parameters (the weekly cycle first, alone, as on a Monday, then again as the next Monday, with the champion
it served named as an A/A control; the suites and the capacity plan together; a
release through `phase-gate`, approved as a reviewer would in the UI) and prints, per deployment, how long from
`prefect deploy` to Completed, and what the weekly cycle's gate and risk window did on production.

Run: `.venv/bin/python benchmarks/rehearsal.py` (about 5 minutes here; needs `prometheus` on PATH, e.g. Debian's
package). `--json` prints the figures as JSON; `--keep` leaves the servers up for browsing until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path[0] = str(ROOT)  # run as a script: this folder must not shadow the project's packages

from serving.network import free_port  # noqa: E402

MODEL = "digits-cnn"  # trains in seconds: the rehearsal is about the wiring, not the model
API_KEY = "rehearsal-key"
ADMIN_KEY = "rehearsal-admin-key"
POOL = "inferops-pool"
BIN = Path(sys.executable).parent
# Thresholds a shared 2-core box meets while six flow runs share it: the rehearsal checks that every deployment
# does what it should, not this box's tail latency (the thresholds themselves are tested elsewhere).
REHEARSAL_POLICY = """\
rollout_gate:
  sla_p99_ms: 2000.0
rollout_risk:
  perf_deviation_rollback: 10.0
optimization:  # a ~0.2 ms batch's P99 spread on a busy 2-core box must not decide whether the release is rehearsed
  scoring: {spread_risk_weight: 0}
  # the serving level's knee search in 1 s steps: the rehearsal runs its wiring, not the knee's precision (with the
  # gate's 2 s SLA each overloaded 3 s step and its drain took up to a minute)
  serving_search: {step_duration_s: 1.0, max_steps: 8, bisect_steps: 0, warmup_s: 1.0}
capacity:  # the wiring is rehearsed, not the forecasters (benchmarks/forecast.py scores the whole set)
  forecasters: [mstl-daily, autotheta, seasonal-naive-daily, seasonal-naive-weekly]
monitoring:  # the slowdown is rolled back within a minute or two, not the production 5 min + Alertmanager's 1 min
  pending: {ServeP99OffBaseline: 10s}
  alert_types:
    threshold: {handle_within_min: 0.5}
"""
SHORT = {  # parameters each run overrides: seconds, not the schedule's hours
    "optimization-cycle/optimization-cycle-weekly": {
        "model": MODEL,
        "candidates": ["onnx-fp32"],
        "repeats": 2,
        "thread_options": [1],
        "batch_options": [8],
        "replica_options": [1],
        "cache_options": [0],
        "gate_stability_s": 4,
        "gate_performance_s": 10,  # a window of seconds: one slow answer at its end must not decide the rate
        "gate_risk_window_s": 4,
        "gate_benchmark_s": 2,
    },
    "measurement-suite/load-test-weekly": {"model": MODEL, "rate": 5, "duration_s": 4},
    "measurement-suite/stress-test-monthly": {"model": MODEL, "stress_budget_s": 12},
    "measurement-suite/stability-test-quarterly": {"model": MODEL, "rate": 5, "duration_s": 8},
    # A fresh Prometheus holds minutes and a plan needs weeks (policy capacity): these runs plan on the bundled
    # synthetic history (its path added at launch); reading a quarter from a real Prometheus is
    # tests/tasks/capacity/test_prometheus_history.py's. The yearly plan applies its autoscaling to production.
    "capacity-planning/capacity-trends-quarterly": {"model": MODEL, "prometheus": None, "synthetic": True},
    "capacity-planning/capacity-model-half-yearly": {"model": MODEL, "prometheus": None, "synthetic": True},
    # Applying autoscaling to a live deployment is tests/flows/test_capacity_planning.py's: here production keeps
    # the replicas its release set (a 2-core box cannot start a year's worth of them).
    "capacity-planning/capacity-plan-yearly": {
        "model": MODEL,
        "prometheus": None,
        "synthetic": True,
        "apply": False,
    },
    "phase-gate/phase-gate": {
        "model": MODEL,
        "stability_duration_s": 4,
        "performance_duration_s": 10,
        "risk_window_s": 4,
        "benchmark_duration_s": 2,
        "approval_timeout_s": 600,
    },
    # Reads the four layers of production from the rehearsal's Prometheus (its variable), as every five minutes.
    "monitoring/monitoring-5min": {"model": MODEL},
    # Nothing in a fresh store is past its retention: the run reads every run's class and deletes nothing.
    "history-retention/history-retention-weekly": {"dry_run": False},
}
# Not launched: run by its trigger when the rehearsal resolves the remediation's incident as a person would.
RISK = "risk-assessment/risk-assessment-monthly"
TRIGGER_TIMEOUT_S = 180.0
START_S, RUN_S = 240.0, 900.0
REMEDIATION = "remediation/remediation-on-alert"
SLOWDOWN_FACTOR = 2.0  # the slowed champion answers in about twice the rollback threshold
ROLLBACK_TIMEOUT_S = 300.0


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@dataclass
class Rehearsal:
    work: Path
    env: dict[str, str]
    servers: list[Server] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Server:
        log = self.work / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**self.env, **(extra_env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        server = Server(name, proc, log)
        self.servers.append(server)
        return server

    def cli(self, *args: str, timeout_s: float = 180.0) -> str:
        done = subprocess.run(
            [str(BIN / "prefect"), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        with (self.work / "prefect-cli.out").open("a") as log:  # what each command printed, for the README
            log.write(f"$ prefect {' '.join(args)}\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0:
            raise RuntimeError(
                f"prefect {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def stop(self) -> None:
        for server in reversed(self.servers):  # the worker first, the servers it talks to after
            # the leader only: it stops what it started (Ray, Prefect's services) in order; the group after
            with contextlib.suppress(ProcessLookupError):
                server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.proc.pid, signal.SIGKILL)
                server.proc.wait()
            # what a server started in its group (Ray's raylet, a Prefect service) goes with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGKILL)


def wait_for(what: str, ready: Callable[[], bool], server: Server, timeout_s: float = START_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited ({server.proc.returncode}) before {what}:\n{server.tail()}"
            )
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.5)
    raise RuntimeError(f"{server.name}: no {what} within {timeout_s:.0f} s:\n{server.tail()}")


def http_ok(url: str) -> bool:
    import httpx

    return httpx.get(url, timeout=2.0).status_code == 200


def banner_value(server: Server, marker: str) -> str | None:
    """The word after `marker` on the first log line holding it (the serve banner's RAY_ADDRESS, say)."""
    for line in server.log.read_text(errors="replace").splitlines():
        if marker in line:
            return line.split(marker, 1)[1].split()[0]
    return None


def prometheus_config(path: Path, ray_metrics: str, rules_dir: Path, alertmanager: str) -> Path:
    """Scrape production's Ray node every second, load the alert rules the weekly cycle writes (the worker's data
    dir), as a team's Prometheus would from where inferops writes them, and send alerts to Alertmanager."""
    path.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - '{rules_dir}/*.rules.yml'\n"
        f"alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{alertmanager}']\n"
        "scrape_configs:\n  - job_name: ray\n    static_configs:\n"
        f"      - targets: ['{ray_metrics}']\n"
    )
    return path


def loaded_rules(prometheus: str) -> dict[str, Any]:
    """Ask Prometheus to re-read its rule files (what a config-reloader does), then what it has loaded."""
    import httpx

    httpx.post(f"{prometheus}/-/reload", timeout=30).raise_for_status()
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=30).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    return {
        "files": sorted({group["file"] for group in groups}),
        "alerts": sorted(r["name"] for r in rules if r["type"] == "alerting"),
        "recording": sorted(r["name"] for r in rules if r["type"] == "recording"),
        "unhealthy": [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") == "err"],
    }


@contextlib.contextmanager
def servers(work: Path) -> Iterator[Rehearsal]:
    """Prefect server, MLflow server, `inferops serve` with Ray metrics, Prometheus, then the worker."""
    prometheus = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if prometheus is None:
        raise SystemExit("prometheus is not installed: `apt-get install prometheus` (Debian), then run again")
    ports = {
        k: free_port()
        for k in ("prefect", "mlflow", "serve", "ray_metrics", "prometheus", "alertmanager", "receiver")
    }
    policy = work / "policy.yaml"
    policy.write_text(REHEARSAL_POLICY)
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{ports['prefect']}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",  # the runs' return values, read back below
        "INFEROPS_DATA_DIR": str(work / "inferops-data"),
        "INFEROPS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports['mlflow']}",
        # what a team sets on the serving host and the worker alike: server and client read the same variables
        "INFEROPS_API_KEYS": API_KEY,
        "INFEROPS_ADMIN_KEYS": ADMIN_KEY,
        "INFEROPS_POLICY_FILE": str(policy),
        "INFEROPS_HOME": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
    }
    for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "INFEROPS_RAY_ADDRESS"):
        env.pop(key, None)
    # This process talks to the same Prefect server and reads the runs' results from the same Prefect home: set
    # before Prefect is first imported (it reads its settings then).
    assert "prefect" not in sys.modules, (
        "benchmarks/rehearsal.py must set Prefect's settings before importing it"
    )
    os.environ.update({k: env[k] for k in env if k.startswith("PREFECT_")})
    r = Rehearsal(work, env)
    scrape_config = prometheus_config(
        work / "prometheus.yml",
        f"127.0.0.1:{ports['ray_metrics']}",
        work / "inferops-data" / "monitoring",
        f"127.0.0.1:{ports['alertmanager']}",
    )
    try:
        prefect = r.start(
            "prefect-server",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(ports["prefect"])],
        )
        mlflow = r.start(
            "mlflow-server",
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["mlflow"]),
                "--backend-store-uri",
                f"sqlite:///{work / 'mlflow.db'}",
                "--artifacts-destination",
                str(work / "mlflow-artifacts"),
                "--workers",
                "1",
            ],
        )
        serve = r.start(
            "inferops-serve",
            [
                str(BIN / "inferops"),
                "serve",
                "--model",
                MODEL,
                "--port",
                str(ports["serve"]),
                "--metrics-port",
                str(ports["ray_metrics"]),
                "--num-cpus",
                "4",
                # Serve's own proxy: HAProxy binds fixed host ports (8404, 9101), which a second Serve on this
                # host (a test session's) would hold already.
                "--ingress",
                "proxy",
            ],
        )
        prom = r.start(
            "prometheus",
            [
                prometheus,
                f"--config.file={scrape_config}",
                f"--storage.tsdb.path={work / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                "--web.enable-lifecycle",  # POST /-/reload picks up the rules the cycle writes
            ],
        )
        r.urls = {
            "prefect": f"http://127.0.0.1:{ports['prefect']}",
            "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
            "serve": f"http://127.0.0.1:{ports['serve']}",
            "prometheus": f"http://127.0.0.1:{ports['prometheus']}",
            "alertmanager": f"http://127.0.0.1:{ports['alertmanager']}",
            "receiver": f"http://127.0.0.1:{ports['receiver']}",
        }
        wait_for("health", lambda: http_ok(r.urls["prefect"] + "/api/health"), prefect)
        wait_for("health", lambda: http_ok(r.urls["mlflow"] + "/health"), mlflow)
        wait_for("readiness", lambda: http_ok(r.urls["prometheus"] + "/-/ready"), prom)
        wait_for("banner", lambda: banner_value(serve, "export RAY_ADDRESS=") is not None, serve)
        r.urls["ray"] = str(banner_value(serve, "export RAY_ADDRESS="))
        yield r
    finally:
        r.stop()


def state_of(client: Any, run_id: Any) -> Any:
    return client.read_flow_run(run_id)


def wait_runs(
    client: Any,
    runs: dict[str, Any],
    t_deploy: float,
    timeout_s: float = RUN_S,
    on_paused: Callable[[str, Any], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Poll until every run is final; a paused run is handed to `on_paused` once (a reviewer answering)."""
    done: dict[str, dict[str, Any]] = {}
    answered: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while len(done) < len(runs) and time.monotonic() < deadline:
        for name, run in runs.items():
            if name in done:
                continue
            current = state_of(client, run.id)
            state = current.state
            if state is not None and state.type.value == "PAUSED" and on_paused and name not in answered:
                answered.add(name)
                on_paused(name, current)
            if state is not None and state.is_final():
                done[name] = {
                    "state": state.name,
                    "from_deploy_s": round(time.monotonic() - t_deploy, 1),
                    "run_s": round(current.total_run_time.total_seconds(), 1),
                    "flow_run": str(run.id),
                    "message": (state.message or "")[:300],
                }
        time.sleep(1.0)
    for name, run in runs.items():
        done.setdefault(name, {"state": "TIMED OUT", "from_deploy_s": None, "flow_run": str(run.id)})
    return done


def result_of(client: Any, run_id: str) -> Any:
    """A finished run's return value, from the result the worker's run persisted."""
    state = client.read_flow_run(run_id).state
    return state.result(raise_on_failure=False)


def subflows(client: Any, run_id: str) -> list[str]:
    """Names of the flows run as subflows of `run_id`, at any depth."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    names, frontier = [], [run_id]
    while frontier:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier))
        )
        frontier = [str(c.id) for c in children]
        names += [client.read_flow(c.flow_id).name for c in children]
    return sorted(names)


def rehearse(work: Path, keep: bool, say: Callable[[str], None]) -> dict[str, Any]:
    with servers(work) as r:
        say(
            f"servers up: Prefect {r.urls['prefect']}, MLflow {r.urls['mlflow']}, inferops {r.urls['serve']}, "
            f"Prometheus {r.urls['prometheus']}, Ray {r.urls['ray']}"
        )
        r.cli("variable", "set", "inferops_endpoint_url", r.urls["serve"], "--overwrite")
        r.cli("variable", "set", "inferops_prometheus_url", r.urls["prometheus"], "--overwrite")
        r.cli("variable", "set", "inferops_alertmanager_url", r.urls["alertmanager"], "--overwrite")
        r.cli("work-pool", "create", POOL, "--type", "process", "--overwrite")
        worker = r.start(
            "prefect-worker",
            [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
            # Ray (>= 2.59) turns token auth on for the cluster `inferops serve` starts; the token is this user's
            # ~/.ray/auth_token, which the worker on the same host reads once told the mode.
            # polling every 2 s (10 by default): a remediation run starts within seconds of its alert
            {"RAY_ADDRESS": r.urls["ray"], "RAY_AUTH_MODE": "token", "PREFECT_WORKER_QUERY_SECONDS": "2"},
        )
        wait_for("polling", lambda: "started" in worker.log.read_text(errors="replace").lower(), worker)
        t_deploy = time.monotonic()
        r.cli("--no-prompt", "deploy", "--all", timeout_s=300)
        deploy_s = round(time.monotonic() - t_deploy, 1)
        say(f"prefect --no-prompt deploy --all: {deploy_s} s")

        from prefect.client.orchestration import SyncPrefectClient
        from prefect.deployments import run_deployment

        out: dict[str, Any] = {"deploy_s": deploy_s, "urls": r.urls}
        with SyncPrefectClient(r.env["PREFECT_API_URL"]) as client:
            deployments = {
                f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()
            }
            out["deployments"] = sorted(deployments)

            def launch(name: str, params: dict[str, Any]) -> Any:
                return run_deployment(name, parameters=params, timeout=0, client=None)

            cycle_name = "optimization-cycle/optimization-cycle-weekly"
            say("production's own traffic first (a Monday 03:00 production has some), seen by Prometheus ...")
            warm_production(r)
            say("weekly cycle (alone, as on a Monday 03:00) ...")
            runs = {cycle_name: launch(cycle_name, SHORT[cycle_name])}
            results = wait_runs(client, runs, t_deploy)
            out["prometheus_rules"] = loaded_rules(r.urls["prometheus"])
            first = result_of(client, results[cycle_name]["flow_run"])
            serving = (
                (first.get("champion") or first["baseline"]["variant"]).split("+")[
                    0
                ]  # the variant, not its knobs
                if isinstance(first, dict)
                else None
            )
            say(
                f"the weekly cycle again, as the next Monday, on the champion it served ({serving}), named as a "
                "candidate: an A/A control of the measurement ..."
            )
            # the serving level's budget is what serves now alone (measured for the breakdown): the run checks that
            # baseline and candidates are measured alike, not the knobs again. Four repeats each: with two, an A/A
            # pair of identical noisy measurements falls outside the range of its repeats one time in five.
            again = {
                cycle_name: launch(
                    cycle_name,
                    {**SHORT[cycle_name], "candidates": [serving], "serving_trials": 1, "repeats": 4},
                )
            }
            week_two = wait_runs(client, again, t_deploy)[cycle_name]
            out["cycle_again"] = {
                "state": week_two["state"],
                "named": serving,
                **summarize_week_two(result_of(client, week_two["flow_run"])),
            }
            say("the weekly cycle once more, cancelled from the UI while a serving trial's app is up ...")
            out["cancelled"] = cancelled_mid_trial(r, client, launch, cycle_name)
            from tasks.capacity.synthetic import write_synthetic_history

            history = write_synthetic_history(r.work / "synthetic_history.csv")
            trends_name = "capacity-planning/capacity-trends-quarterly"
            suites = [n for n in SHORT if n.startswith("measurement-suite/")]
            say("load, stress and stability suites on production, and the capacity trends, together ...")
            together = {n: launch(n, SHORT[n]) for n in suites}
            together["monitoring/monitoring-5min"] = launch(
                "monitoring/monitoring-5min", SHORT["monitoring/monitoring-5min"]
            )
            together[trends_name] = launch(trends_name, {**SHORT[trends_name], "history": str(history)})
            results |= wait_runs(client, together, t_deploy)
            say(
                "the capacity model and plan (on the champion's fresh knee), then a release through phase-gate, approved "
                "in the UI's place ..."
            )
            out["release_candidate"] = register_candidate(r)
            approvals: list[dict[str, Any]] = []

            def approve(name: str, run: Any) -> None:
                from prefect.flow_runs import resume_flow_run

                resume_flow_run(run.id, run_input={"approve": True, "comment": "rehearsal: approved"})
                approvals.append({"deployment": name, "paused_at_s": round(time.monotonic() - t_deploy, 1)})

            gate_name = "phase-gate/phase-gate"
            # the plans first: the release below moves the champion, and a plan rests on the champion's own knee
            capacity = {
                n: launch(n, {**SHORT[n], "history": str(history)})
                for n in SHORT
                if n.startswith("capacity-planning/") and n != trends_name
            }
            results |= wait_runs(client, capacity, t_deploy)
            last = {gate_name: launch(gate_name, SHORT[gate_name])}
            results |= wait_runs(client, last, t_deploy, on_paused=approve)
            say("history retention (weekly, Sunday 04:00) ...")
            retention_name = "history-retention/history-retention-weekly"
            results |= wait_runs(
                client, {retention_name: launch(retention_name, SHORT[retention_name])}, t_deploy
            )
            say(
                "a slowed champion promoted on production, rolled back by the alert chain without a person ..."
            )
            out["remediation"] = slowdown_rolled_back(r, client, say)
            results[REMEDIATION] = out["remediation"]["run"]
            say("a person resolves the remediation's incident: its event triggers the risk assessment ...")
            out["risk"] = risk_after_resolved(r, client, out["remediation"].get("incident", {}).get("id"))
            results[RISK] = out["risk"]["run"]
            out["approvals"] = approvals
            out["runs"] = results
            cycle_run = results[cycle_name]["flow_run"]
            out["cycle_subflows"] = subflows(client, cycle_run)
            out["cycle"] = summarize_cycle(result_of(client, cycle_run))
            out["release"] = summarize_gate(result_of(client, results[gate_name]["flow_run"]))
            out["production"] = serving_now(r)
            monitoring = result_of(client, results["monitoring/monitoring-5min"]["flow_run"])
            out["monitoring"] = (
                {k: monitoring.get(k) for k in ("coverage", "by_layer", "missing")}
                if isinstance(monitoring, dict)
                else {"error": str(monitoring)[:300]}
            )
        if keep:
            say("servers stay up for browsing; Ctrl-C to stop them")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
        return out


def warm_production(r: Rehearsal, requests: int = 40, timeout_s: float = 120.0) -> None:
    """Production answers some requests and Prometheus holds its series (requests, batches, the fidelity probe)
    before the cycle checks that production is monitored."""
    import httpx
    import numpy as np

    from serving.client import InferopsClient

    wanted = (
        "ray_serve_num_http_requests_total",
        "ray_inferops_batch_size_count",
        "ray_inferops_accuracy_fidelity",
    )
    pixels = np.zeros((1, 1, 8, 8), dtype=np.float32)
    deadline = time.monotonic() + timeout_s
    with InferopsClient(r.urls["serve"], API_KEY) as client:
        while True:
            for _ in range(requests):
                client.infer(MODEL, pixels)
            seen = [
                bool(
                    httpx.get(
                        f"{r.urls['prometheus']}/api/v1/query",
                        params={"query": f'count({m}{{application="inferops"}})'},
                        timeout=10,
                    ).json()["data"]["result"]
                )
                for m in wanted
            ]
            if all(seen):
                return
            if time.monotonic() > deadline:
                missing = [m for m, ok in zip(wanted, seen, strict=True) if not ok]
                raise RuntimeError(
                    f"production's series did not reach Prometheus within {timeout_s:.0f} s: {missing}"
                )
            time.sleep(2)


def risk_after_resolved(r: Rehearsal, client: Any, incident_id: int | None) -> dict[str, Any]:
    """Resolve the incident (the inferops incident store, as `inferops incident resolve` does), then wait for the
    run of the risk-assessment deployment its `inferops.incident.resolved` event triggers, and read its result."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    none = {"state": "NOT STARTED", "from_deploy_s": None, "flow_run": None}
    if incident_id is None:
        return {"run": none, "error": "the remediation recorded no incident to resolve"}
    t0 = time.monotonic()
    resolved = run_in_env(
        r,
        "import json; from tasks.risk.incidents import IncidentStore; "
        f"s = IncidentStore(); i = s.get({int(incident_id)}); "
        "i = s.advance(i.id, 'resolved', by='rehearsal', note='slow release rolled back') "
        "if i.state == 'mitigated' else i; "  # the receiver resolves what inferops mitigated once the alert clears
        "print(json.dumps({'state': i.state, 'model': i.model}))",
        "resolving the incident",
    )
    deadline, found = time.monotonic() + TRIGGER_TIMEOUT_S, None
    name = RISK.split("/", 1)[1]
    while found is None and time.monotonic() < deadline:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name]))
        )
        # not a run its monthly schedule put in the future (the scheduler creates those whenever it likes)
        triggered = [run for run in runs if not run.auto_scheduled]
        found = triggered[0] if triggered else None
        time.sleep(1.0)
    if found is None:
        return {"run": none, "resolved": resolved, "error": f"no run within {TRIGGER_TIMEOUT_S:.0f} s"}
    run = wait_runs(client, {RISK: found}, t0, timeout_s=300)[RISK]
    result = result_of(client, run["flow_run"]) if run["state"] == "Completed" else None
    summary = (
        {k: result.get(k) for k in ("model", "overall", "overall_level", "high", "table", "mlflow_run_id")}
        if isinstance(result, dict)
        else {"error": str(result)[:300]}
    )
    return {
        "run": run,
        "resolved": resolved,
        "parameters": dict(found.parameters),
        "triggered_after_s": round(time.monotonic() - t0, 1),
        **summary,
    }


def run_in_env(r: Rehearsal, code: str, what: str, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `code` in a fresh interpreter with the rehearsal's environment (its MLflow server, data dir, keys);
    its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**r.env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def start_alerting(r: Rehearsal) -> None:
    """Alertmanager with the config `inferops alerts config` writes, and the receiver it notifies (`inferops alerts
    receive`), sharing one token file as a team's would."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    binary = binary or next((b for b in ("/usr/bin/prometheus-alertmanager",) if Path(b).exists()), None)
    if binary is None:
        raise SystemExit(
            "alertmanager is not installed: `apt-get install prometheus-alertmanager`, then run again"
        )
    token = r.work / "alert-receiver-token"
    am_port = r.urls["alertmanager"].rsplit(":", 1)[1]
    receiver_port = r.urls["receiver"].rsplit(":", 1)[1]
    done = subprocess.run(
        [str(BIN / "inferops"), "alerts", "config", "--webhook-url", r.urls["receiver"] + "/alerts",
         "--token-file", str(token)],
        cwd=ROOT, env=r.env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"inferops alerts config failed:\n{done.stdout}\n{done.stderr}")
    receiver = r.start(
        "alert-receiver",
        [str(BIN / "inferops"), "alerts", "receive", "--port", receiver_port, "--token-file", str(token)],
    )
    alertmanager = r.start(
        "alertmanager",
        [
            binary,
            f"--config.file={r.work / 'inferops-data' / 'monitoring' / 'alertmanager.yml'}",
            f"--storage.path={r.work / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",  # one Alertmanager, no gossip port to collide with a test session's
        ],
    )
    wait_for("health", lambda: http_ok(r.urls["receiver"] + "/healthz"), receiver)
    wait_for("readiness", lambda: http_ok(r.urls["alertmanager"] + "/-/ready"), alertmanager)


def promote_slowed(r: Rehearsal, delay_ms: float) -> dict[str, Any]:
    """What a bad release looks like from production: a version of the served model that answers the same, about
    `delay_ms` slower per call, registered, promoted champion and rolled out to production as a release would."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        # appended, not first: benchmarks/serving.py must not shadow the serving package
        f"sys.path.append({str(ROOT / 'benchmarks')!r})\n"
        "from slow_model import slowed_copy\n"
        "from serving.artifacts import sha256_file\n"
        "from serving.client import InferopsClient\n"
        "from serving.variants import ensure_variant\n"
        "from tasks.records import registry\n"
        "from tasks.release.rollout import rollout\n"
        f"a = ensure_variant({MODEL!r}, 'onnx-fp32')\n"
        f"path, ms = slowed_copy(a.path, Path({str(r.work / 'slowed.onnx')!r}), {delay_ms!r})\n"
        "manifest = {**a.manifest, 'variant': 'onnx-fp32-slowed', 'sha256': sha256_file(path)}\n"
        f"v = registry.register({MODEL!r}, path, manifest)\n"
        f"moved = registry.promote({MODEL!r})\n"
        f"with InferopsClient({r.urls['serve']!r}, {API_KEY!r}) as client:\n"
        f"    done = rollout(client, {MODEL!r}, v)\n"
        "print(json.dumps({'version': v.version, 'sha256': v.sha256, 'call_ms': ms, 'how': done.how,\n"
        "                  'previous_champion': moved['previous_champion']}))\n"
    )
    return run_in_env(r, code, "promoting the slowed version")


def slowdown_rolled_back(r: Rehearsal, client: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """Promote a slowed champion, send production its usual trickle of requests, and time the chain: Prometheus
    fires ServeP99OffBaseline, Alertmanager notifies the receiver, the receiver starts a remediation run, the run
    rolls the registry and the endpoint back. No step here touches the registry or the endpoint after the
    promotion: the rehearsal only watches."""
    import threading

    import httpx
    import numpy as np
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from serving.client import InferopsClient

    rules = httpx.get(f"{r.urls['prometheus']}/api/v1/rules", timeout=30).json()["data"]["groups"]
    rule = next(x for g in rules for x in g["rules"] if x["name"] == "ServeP99OffBaseline")
    threshold_ms = float(rule["annotations"]["threshold"])
    before = serving_now(r)
    start_alerting(r)
    slowed = promote_slowed(r, threshold_ms * SLOWDOWN_FACTOR)
    t0 = time.monotonic()
    say(
        f"  v{slowed['version']} answers in {slowed['call_ms']:.0f} ms a call (rollback threshold {threshold_ms:g} ms), "
        f"promoted over v{slowed['previous_champion']} and serving ({slowed['how']})"
    )
    stop, answered = threading.Event(), []

    def trickle() -> None:
        pixels = np.zeros((1, 1, 8, 8), dtype=np.float32)
        with InferopsClient(r.urls["serve"], API_KEY, timeout_s=60) as c:
            while not stop.is_set():
                with contextlib.suppress(Exception):  # a request cut by the switch back is not the point here
                    c.infer(MODEL, pixels)
                    answered.append(time.monotonic() - t0)
                stop.wait(0.5)

    load = threading.Thread(target=trickle, daemon=True)
    load.start()
    timings: dict[str, float | None] = {"firing_s": None, "run_started_s": None, "rolled_back_s": None}
    found_run: Any = None
    deadline = t0 + ROLLBACK_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            now = round(time.monotonic() - t0, 1)
            if timings["firing_s"] is None:
                alerts = httpx.get(f"{r.urls['prometheus']}/api/v1/alerts", timeout=10).json()["data"][
                    "alerts"
                ]
                if any(
                    a["labels"]["alertname"] == "ServeP99OffBaseline" and a["state"] == "firing"
                    for a in alerts
                ):
                    timings["firing_s"] = now
            if found_run is None:
                found = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(
                        name=DeploymentFilterName(any_=[REMEDIATION.split("/")[1]])
                    )
                )
                if found:
                    found_run, timings["run_started_s"] = found[0], now
            current = serving_now(r)
            if current["sha256"] == before["sha256"]:
                timings["rolled_back_s"] = now
                break
            time.sleep(1.0)
    finally:
        stop.set()
        load.join(timeout=90)
    run_id = found_run.id if found_run is not None else None
    runs = {REMEDIATION: found_run} if found_run is not None else {}
    finished = wait_runs(client, runs, t0, timeout_s=120) if runs else {}
    run = finished.get(REMEDIATION, {"state": "NOT STARTED", "from_deploy_s": None, "flow_run": None})
    result = result_of(client, str(run_id)) if run_id and run["state"] == "Completed" else None
    recorded: dict[str, Any] = {}
    if isinstance(result, dict) and result.get("mlflow_run"):
        from mlflow import MlflowClient

        mlflow_run = MlflowClient(r.urls["mlflow"]).get_run(result["mlflow_run"])
        recorded = {"tags": dict(mlflow_run.data.tags), "status": mlflow_run.info.status}
    incident: dict[str, Any] = {}
    if isinstance(result, dict) and result.get("incident") is not None:
        from tasks.risk.incidents import IncidentStore

        found = IncidentStore(f"sqlite:///{r.work / 'inferops-data' / 'incidents.db'}").get(
            int(result["incident"])
        )
        incident = {**found.row(), "steps": [(s.step, s.by) for s in found.steps], "source": found.source}
    return {
        "recorded": recorded,
        "incident": incident,
        "threshold_ms": threshold_ms,
        "slowed": slowed,
        "before": before,
        "after": serving_now(r),
        "answered": len(answered),
        **timings,
        "run": run,
        "result": result if isinstance(result, dict) else {"error": str(result)[:300]},
        "receiver_log": (r.work / "alert-receiver.log").read_text(errors="replace")[-2000:],
    }


# Polls production's Serve (as the worker reaches it) until an app whose name starts with the prefix is RUNNING, or
# until every such app is gone; prints the apps it saw last.
SERVE_APPS = """
import json, time, ray
from ray import serve
ray.init(log_to_driver=False, configure_logging=False, include_dashboard=False)
want, prefix, deadline = {want!r}, {prefix!r}, time.monotonic() + {timeout_s!r}
t0 = time.monotonic()
while True:
    apps = {{n: a.status.value if hasattr(a.status, 'value') else str(a.status)
            for n, a in serve.status().applications.items()}}
    mine = [n for n, status in apps.items() if n.startswith(prefix) and (want == 'gone' or status == 'RUNNING')]
    if (want == 'running') == bool(mine) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps({{'apps': apps, 'matching': mine, 'after_s': round(time.monotonic() - t0, 1)}}))
"""


def serve_apps(r: Rehearsal, want: str, prefix: str, timeout_s: float) -> dict[str, Any]:
    """Production's Serve apps once an app named `prefix`... is RUNNING (`want` running) or none is left (gone)."""
    code = SERVE_APPS.format(want=want, prefix=prefix, timeout_s=timeout_s)
    ray_env = {"RAY_ADDRESS": r.urls["ray"], "RAY_AUTH_MODE": "token"}
    return run_in_env(r, code, f"waiting for {prefix}* apps {want}", ray_env)


def cancelled_mid_trial(
    r: Rehearsal, client: Any, launch: Callable[[str, dict[str, Any]], Any], name: str
) -> dict[str, Any]:
    """A weekly cycle cancelled as the Prefect UI's Cancel does (the run set to Cancelling) while a serving trial's
    temporary app is up: the run ends Cancelled, no trial app is left on production's cluster, none of its MLflow runs
    stays RUNNING, and production serves what it served before, untouched."""
    from prefect.states import Cancelling

    before = serving_now(r)
    run = launch(name, {**SHORT[name], "serving_trials": 2})
    seen = serve_apps(r, "running", "trial-", timeout_s=600)
    cancelled_at = time.monotonic()
    client.set_flow_run_state(run.id, Cancelling(message="rehearsal: cancelled from the UI"), force=True)
    state = wait_runs(client, {name: run}, cancelled_at, timeout_s=300)[name]
    after = serve_apps(r, "gone", "trial-", timeout_s=120)
    open_runs = run_in_env(
        r,
        "import json; from mlflow import MlflowClient; from tasks.records.store import configure; configure(); "
        "c = MlflowClient(); ids = [e.experiment_id for e in c.search_experiments()]; "
        f"rs = c.search_runs(ids, filter_string=\"tags.`inferops.prefect.flow_run_id` = '{run.id}'\"); "
        "print(json.dumps({r.info.run_name: r.info.status for r in rs}))",
        "reading the cancelled run's MLflow runs",
    )
    return {
        "state": state["state"],
        "cancelled_after_s": state["from_deploy_s"],
        "trial_app_up": seen["matching"],
        "apps_after": sorted(after["apps"]),
        "trial_apps_gone_after_s": after["after_s"],
        "mlflow_runs": open_runs,
        "production_before": before,
        "production_after": serving_now(r),
    }


def register_candidate(r: Rehearsal) -> dict[str, Any]:
    """A new version of the model, registered `challenger` on the MLflow server (what a team's training job does)."""
    code = (
        "import json\n"
        "from serving.variants import ensure_variant\n"
        "from tasks.records import registry\n"
        f"a = ensure_variant({MODEL!r}, 'onnx-fp32-optall')\n"
        f"v = registry.register({MODEL!r}, a.path, a.manifest)\n"
        "print(json.dumps({'version': v.version, 'sha256': v.sha256, 'variant': v.variant}))\n"
    )
    return run_in_env(r, code, "registering the release candidate")


def serving_now(r: Rehearsal) -> dict[str, Any]:
    from serving.client import InferopsClient

    with InferopsClient(r.urls["serve"], API_KEY) as client:
        meta = client.metadata(MODEL)
    return {k: meta.get(k) for k in ("variant", "sha256", "registry_version", "origin")}


def summarize_gate(out: Any) -> dict[str, Any]:
    if not isinstance(out, dict):
        return {"error": f"no result: {str(out)[:300]}"}
    release = out.get("release") or {}
    return {
        "passed": out.get("passed"),
        "reason": out.get("reason"),
        "weighted_score": out.get("weighted_score"),
        "gated_at": out.get("url"),
        "decided_by": (out.get("decision") or {}).get("decided_by"),
        "promoted": bool((out.get("promotion") or {}).get("promoted")),
        "released_to": release.get("url"),
        "served_version": (release.get("served") or {}).get("version"),
        "risk_window": release.get("risk_window"),
        "risk_actions": [a["action"] for a in out.get("risk_actions") or []],
        "rolled_back": release.get("rolled_back"),
        "benchmark_run": (release.get("benchmark") or {}).get("mlflow_run_id"),
        "monitoring": release.get("monitoring"),
    }


def summarize_cycle(out: Any) -> dict[str, Any]:
    if not isinstance(out, dict):
        return {"error": f"no result: {str(out)[:300]}"}
    final = out.get("final") or {}
    return {
        "champion": out.get("champion"),
        "final_champion": final.get("champion"),
        "gate": summarize_gate(final["gate"]) if final.get("gate") else None,
        "monitoring_rules": final.get("monitoring_rules"),
        "monitoring_checked": (out.get("checklist") or {}).get("monitoring configured"),
    }


def summarize_week_two(out: Any) -> dict[str, Any]:
    """The second weekly run: what it measured as serving, each candidate's gain against the spread, and its verdict."""
    if not isinstance(out, dict):
        return {"error": f"no result: {str(out)[:300]}"}
    return {
        "baseline": out["baseline"].get("variant"),
        "champion": out.get("champion"),
        "final_champion": (out.get("final") or {}).get("champion"),
        "candidates": [
            {k: r.get(k) for k in ("candidate", "gain", "spread", "verdict", "reason")}
            for r in out["results"]
        ],
    }


def print_report(out: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"every deployment, run by a worker (prefect deploy --all took {out['deploy_s']} s)")
    for col in ("deployment", "state", "s from deploy to final", "run s", "note"):
        table.add_column(col, overflow="fold")
    for name, run in out["runs"].items():
        name = name.split("/", 1)[1]  # the deployment's own name; its flow is in the name already
        table.add_row(
            name, run["state"], str(run["from_deploy_s"]), str(run.get("run_s", "")), run.get("message", "")
        )
    console.print(table)
    console.print(f"weekly cycle subflows: {', '.join(out['cycle_subflows']) or 'none'}")
    again = out.get("cycle_again") or {}
    for c in again.get("candidates", []):
        console.print(
            f"weekly cycle again ({again['state']}): {c['candidate']} measured against what serves, "
            f"{again['baseline']}: gain {c['gain']:+.1%} vs spread {c['spread']:.1%}, {c['verdict']} ({c['reason']}); "
            f"ended serving {again['final_champion']}",
            highlight=False,
        )
    for label, gate in (
        ("weekly cycle's gate", (out["cycle"] or {}).get("gate")),
        ("release (phase-gate)", out["release"]),
    ):
        if not gate:
            console.print(f"{label}: no gate ran ({out['cycle']})")
            continue
        window = gate.get("risk_window") or {}
        console.print(
            f"{label}: {'PASS' if gate['passed'] else 'FAIL'} gated at {gate['gated_at']}, decided by "
            f"{gate['decided_by']}, promoted={gate['promoted']}; released to {gate['released_to']} as "
            f"v{gate['served_version']}; risk window on production: P99 {window.get('p99_ms', float('nan')):.1f} ms, "
            f"{window.get('throughput_rps', float('nan')):.1f} req/s, errors {window.get('error_rate', float('nan')):.2%}; "
            f"actions: {', '.join(gate['risk_actions']) or 'none'}; rolled back: {gate['rolled_back']}",
            highlight=False,
        )
    console.print(f"production serves: {out['production']}", highlight=False)
    fix = out.get("remediation") or {}
    if fix:
        console.print(
            f"slowed champion v{fix['slowed']['version']} ({fix['slowed']['call_ms']:.0f} ms a call vs the "
            f"{fix['threshold_ms']:g} ms rollback threshold): alert firing after {fix['firing_s']} s, remediation run "
            f"after {fix['run_started_s']} s, production back on v{fix['after'].get('registry_version')} after "
            f"{fix['rolled_back_s']} s ({fix['run']['state']})",
            highlight=False,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="leave the servers up until Ctrl-C")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where logs and stores go (default: a temp dir)"
    )
    args = parser.parse_args()
    # SIGTERM (a CI timeout, `kill`) stops like Ctrl-C: the `finally` above stops every server it started.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="inferops-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    say(f"rehearsal in {work} (server logs there)")
    out = rehearse(work, args.keep, say)
    out["workdir"] = str(work)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        print_report(out)
    failed = [n for n, run in out["runs"].items() if run["state"] != "Completed"]
    if (out.get("cycle_again") or {}).get("state") != "Completed":
        failed.append("optimization-cycle-weekly, run again")
    if failed:
        say(f"not Completed: {', '.join(failed)}; logs in {work}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
