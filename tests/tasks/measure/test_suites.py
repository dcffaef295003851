"""Suites: the stress search finds the knee of a server of known capacity, the leak detector, the bench CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasks.measure.loadgen import embeddings_body_factory
from tasks.measure.suites import (
    TargetSpec,
    detect_leak,
    find_knee,
    render_markdown,
    run_benchmark,
    run_stability,
    slope_per_hour,
)
from tasks.policy import load_policy
from tests.servers import RunningServer, free_port, serve  # tests/servers.py

BODY = embeddings_body_factory("minilm", ["A short sentence for the test server."])
SERVICE_MS = 20.0  # capacity 1000 / 20 = 50 req/s, one request at a time

POLICY = load_policy()


@pytest.fixture(scope="module")
def capacity_server() -> Iterator[RunningServer]:
    with serve("capacity", service_ms=SERVICE_MS) as server:
        yield server


def test_stress_search_finds_the_knee_of_a_known_capacity(capacity_server: RunningServer) -> None:
    capacity = 1000.0 / SERVICE_MS
    result = find_knee(
        capacity_server.endpoint,
        BODY,
        sla_ms=100.0,
        policy=POLICY,
        start_rps=10.0,
        step_factor=1.6,
        step_duration_s=2.0,
        bisect_steps=2,
        pids=[capacity_server.pid],
    )
    # Poisson arrivals into a single 20 ms server: P99 passes 100 ms well before saturation (M/D/1 at
    # utilisation ~0.75-0.9), and nothing above capacity can meet it.
    assert 0.4 * capacity <= result.knee_rps <= 1.1 * capacity, render_markdown(result)
    # A failing ramp step is measured once more (phase "confirm"): a rate passes when any of its windows passed.
    passed: dict[float, bool] = {}
    for s in result.steps:
        passed[s.rate_rps] = passed.get(s.rate_rps, False) or s.ok
    assert any(not ok for ok in passed.values()) and any(passed.values())
    failing = min(rate for rate, ok in passed.items() if not ok)
    assert result.knee_rps < failing
    assert all(ok for rate, ok in passed.items() if rate <= result.knee_rps)
    assert result.decisions[0].name == "knee_rps" and result.decisions[0].verdict == "pass"
    assert result.metrics()["knee_rps"] == result.knee_rps
    assert result.system is not None and result.system.metrics()["target_cpu_percent_mean"] >= 0


def test_slope_and_leak_verdicts_on_synthetic_series() -> None:
    hour = 3600.0
    steady = [(t, 100 * 2**20 + (t % 3) * 1024) for t in range(0, 600, 10)]
    leaking = [(t, 100 * 2**20 + int(t * 60 * 2**20 / hour)) for t in range(0, 600, 10)]  # 60 MB/h
    slope, r2 = slope_per_hour([(t, b / 2**20) for t, b in leaking])
    assert slope == pytest.approx(60.0, rel=0.01) and r2 > 0.99
    fail = detect_leak(leaking, 50.0)
    assert (
        fail.verdict == "fail" and fail.threshold == 50.0 and fail.observed == pytest.approx(60.0, rel=0.02)
    )
    assert "> threshold 50 MB/h" in fail.reason
    ok = detect_leak(steady, 50.0)
    assert ok.verdict == "pass" and abs(ok.observed or 0) < 1.0
    assert detect_leak(steady[:3], 50.0).verdict == "n/a"


@pytest.mark.parametrize("kind, expected", [("leaking", "fail"), ("steady", "pass")])
def test_stability_flags_a_leaking_server_and_passes_a_steady_one(kind: str, expected: str) -> None:
    with serve(kind, leak_kb=256) as server:
        spec = TargetSpec(server.endpoint, BODY, pids=[server.pid], sample_interval_s=0.2)
        result = run_stability(spec, policy=POLICY, rate=40.0, duration_s=4.0)
    leak = next(v for v in result.decisions if v.name == "rss_leak")
    assert leak.verdict == expected, leak.reason
    assert leak.threshold == 50.0  # policy test_suite.stability.leak_slope_mb_per_h
    assert result.availability == 1.0
    gpu = next(v for v in result.decisions if v.name == "gpu_memory_leak")
    assert gpu.verdict in ("pass", "n/a") and (gpu.verdict != "n/a" or "unavailable" in gpu.reason)
    if kind == "leaking":  # 40 req/s * 256 KiB = 10 MB/s held
        assert (result.rss_slope_mb_per_h or 0) > 10_000


def test_benchmark_verdicts_use_the_policy(capacity_server: RunningServer) -> None:
    result = run_benchmark(
        TargetSpec(capacity_server.endpoint, BODY), policy=POLICY, rate=10.0, duration_s=1.5
    )
    names = [v.name for v in result.decisions]
    assert names == ["p99_ms", "error_rate", "generator_not_bottleneck"]
    p99 = result.decisions[0]
    assert p99.threshold == 100.0 and p99.observed == result.load.percentiles["p99"]  # type: ignore[union-attr]
    assert result.decisions[1].threshold == 0.01
    assert result.breakdown is not None and result.breakdown.dominant is not None
    compute = next(p for p in result.breakdown.phases if p.name == "compute")
    assert compute.ms >= SERVICE_MS and compute.area == "model computation"
    # the 20 ms compute dominates unless a crowded box makes the client side slower still
    assert result.breakdown.dominant.name in ("compute", "proxy_http")


# ---------------------------------------------------------------------------------------------------------
# CLI: bad input is refused before any load is sent
# ---------------------------------------------------------------------------------------------------------
def _bench(*args: str) -> tuple[int, str]:
    from cli.bench import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_cli_rejects_bad_input_before_sending_load(capacity_server: RunningServer, tmp_path: Path) -> None:
    before = capacity_server.requests_seen()
    code, out = _bench("benchmark", "--url", capacity_server.url, "--rate", "-5", "--no-record")
    assert code == 2 and "rate -5.0 req/s is not allowed" in out
    bad_trace = tmp_path / "trace.csv"
    bad_trace.write_text("TIMESTAMP\n2023-11-16 18:15:46\nyesterday-ish\n")
    code, out = _bench("load", "--url", capacity_server.url, "--trace", str(bad_trace), "--no-record")
    assert code == 2 and "not timestamps" in out and "'yesterday-ish'" in " ".join(out.split())
    assert capacity_server.requests_seen() == before  # neither sent anything

    code, out = _bench("benchmark", "--url", capacity_server.url, "--model", "no-such-model", "--no-record")
    assert code == 2 and "404" in out and "'no-such-model'" in out
    assert capacity_server.requests_seen() == before + 1  # the preflight request only

    code, out = _bench("stress", "--url", f"http://127.0.0.1:{free_port()}", "--no-record")
    assert code == 2 and "cannot reach endpoint" in " ".join(out.split())
    code, out = _bench("benchmark", "--url", "ftp://example", "--no-record")
    assert code == 2 and "not an http(s) URL" in out
    code, out = _bench("stability", "--url", capacity_server.url, "--duration", "2", "--no-record")
    assert code == 2 and "--pid" in out


def test_cli_benchmark_prints_a_summary(capacity_server: RunningServer) -> None:
    code, out = _bench(
        "benchmark", "--url", capacity_server.url, "--rate", "10", "--duration", "1.5", "--no-record"
    )
    # 1 = a verdict failed (a crowded box can break the SLA); both print the summary
    assert code in (0, 1), out
    assert ("| fail" in out or "│ fail" in out) == (code == 1)
    assert "preflight:" in out and "p99 ms" in out and "verdicts" in out and "model computation" in out


class _RayNodeMetrics:
    """A node's metrics endpoint in Ray's own format: the replica process's resident memory, read on every scrape
    (what Ray's agent exports for a replica on another host)."""

    def __init__(self, pid: int) -> None:
        import http.server
        import threading

        import psutil

        proc = psutil.Process(pid)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's API
                rss = proc.memory_info().rss
                body = (
                    "# TYPE ray_component_rss_bytes gauge\n"
                    f'ray_component_rss_bytes{{Component="ray::ServeReplica:app:Ingress",NodeAddress="10.0.0.2"}} {rss}\n'
                    f'ray_component_rss_bytes{{Component="raylet",NodeAddress="10.0.0.2"}} 1000000000000\n'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _RayNodeMetrics:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("kind, expected", [("leaking", "fail"), ("steady", "pass")])
def test_stability_reads_replica_memory_from_ray_metrics_when_replicas_are_remote(
    kind: str, expected: str
) -> None:
    """No pid of the replica on this host: its memory comes from the node's metrics endpoint alone."""
    with serve(kind, leak_kb=256) as server, _RayNodeMetrics(server.pid) as node:
        spec = TargetSpec(server.endpoint, BODY, pids=[], replica_metrics_url=node.url, sample_interval_s=0.2)
        result = run_stability(spec, policy=POLICY, rate=40.0, duration_s=4.0)
    leak = next(v for v in result.decisions if v.name == "rss_leak")
    assert leak.verdict == expected, leak.reason
    assert result.system is not None and len(result.system.replica_memory) >= 10
    assert result.system.replica_memory_status.startswith(f"{len(result.system.replica_memory)} readings")
    # Only the replica's series counts, not the raylet's 1 TB.
    assert all(b < 10**12 for _, b in result.system.replica_memory)


def test_stability_without_pids_or_metrics_url_says_what_to_pass(capacity_server: RunningServer) -> None:
    with pytest.raises(ValueError, match="metrics URL"):
        run_stability(TargetSpec(capacity_server.endpoint, BODY), policy=POLICY, rate=5.0, duration_s=1.0)


def test_a_stress_suite_run_by_name_takes_its_step_length_from_duration_s(
    capacity_server: RunningServer,
) -> None:
    """`measurement_suite(suite="stress", duration_s=...)`: each step lasts that long, so a 12 s budget holds several
    1 s steps where the policy's 8 s steps would fit once."""
    from tasks.measure.suites import run_suite

    spec = TargetSpec(capacity_server.endpoint, BODY, pids=[capacity_server.pid])
    result = run_suite(spec, "stress", POLICY, rate=10.0, duration_s=1.0, stress_budget_s=12.0)
    assert POLICY.test_suite.stress.step_duration_s * 2 > 12.0
    assert len(result.steps) >= 3 and result.knee_rps >= 10.0, render_markdown(result)
