"""Load generator: Server-Timing, schedules, traces, known percentiles, queueing in open loop, errors counted."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.measure.loadgen import (
    LoadInputError,
    constant_schedule,
    embeddings_body_factory,
    load_trace,
    parse_server_timing,
    poisson_schedule,
    run_http_closed,
    run_http_open,
    run_inprocess,
)
from tests.servers import FAST_MS, SLOW_EVERY, SLOW_MS, RunningServer, free_port, serve  # tests/servers.py
from tests.shared_data import shared_file

BODY = embeddings_body_factory("minilm", ["A short sentence for the test server."])
SERVICE_MS = 20.0


@pytest.fixture(scope="module")
def distribution_server() -> Iterator[RunningServer]:
    with serve("distribution") as server:
        # warm the server's first-call paths
        run_http_closed(server.endpoint, BODY, concurrency=1, duration_s=0.3)
        yield server


@pytest.fixture(scope="module")
def capacity_server() -> Iterator[RunningServer]:
    with serve("capacity", service_ms=SERVICE_MS) as server:
        yield server


def test_parse_server_timing() -> None:
    header = (
        'queue;dur=1.2, batch_wait;dur=3.1;desc="fill", tokenize;dur=0.4, compute;dur=5.0, serialize;dur=0.2'
    )
    assert parse_server_timing(header) == {
        "queue": 1.2,
        "batch_wait": 3.1,
        "tokenize": 0.4,
        "compute": 5.0,
        "serialize": 0.2,
    }
    assert parse_server_timing("compute;dur=2, compute;dur=3, miss, cache;desc=hit") == {"compute": 5.0}
    assert parse_server_timing(None) == {}
    assert parse_server_timing('total;desc="x";dur=7.5') == {"total": 7.5}
    assert parse_server_timing("bad;dur=abc, neg;dur=-1") == {}


def test_schedules_and_bad_rates() -> None:
    offsets = poisson_schedule(50.0, 20.0, seed=1)
    assert 900 < len(offsets) < 1100  # Poisson count: mean 1000, sd ~32
    assert offsets == sorted(offsets) and offsets[-1] < 20.0
    assert constant_schedule(10.0, 2.0) == pytest.approx([i / 10 for i in range(20)])
    for rate in (-5.0, 0.0, float("nan")):
        with pytest.raises(LoadInputError, match="rate"):
            poisson_schedule(rate, 1.0)
    with pytest.raises(LoadInputError, match="duration"):
        constant_schedule(1.0, -1.0)


def test_trace_replay_scaling_real_azure_trace() -> None:
    path = shared_file("traces", "azure_llm_2023_conv.csv")
    raw = load_trace(path, max_requests=500)
    assert raw[0] == 0.0 and raw == sorted(raw) and len(raw) == 500
    fast = load_trace(path, speedup=4.0, max_requests=500)
    assert fast[-1] == pytest.approx(raw[-1] / 4.0)
    rescaled = load_trace(path, target_rps=20.0)
    # the whole trace's mean rate is the target
    assert (len(rescaled) - 1) / rescaled[-1] == pytest.approx(20.0)
    window = load_trace(path, target_rps=20.0, max_duration_s=10.0)
    assert window == rescaled[: len(window)] and 0 < len(window) and window[-1] < 10.0


def test_trace_errors_name_the_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP\n2023-11-16 18:15:46.68\nnot a time\n2023-11-16 18:15:47.00\n")
    with pytest.raises(LoadInputError, match=r"not timestamps, first at data row 2: 'not a time'"):
        load_trace(bad)
    numeric = tmp_path / "seconds.csv"
    numeric.write_text("t\n10\n10.5\n12\n")
    assert load_trace(numeric, column="t") == [0.0, 0.5, 2.0]
    with pytest.raises(LoadInputError, match="no column 'TIMESTAMP'"):
        load_trace(numeric)
    with pytest.raises(LoadInputError, match="does not exist"):
        load_trace(tmp_path / "missing.csv")


def test_percentiles_match_a_known_latency_distribution(distribution_server: RunningServer) -> None:
    # 9 in 10 requests take FAST_MS, every 10th SLOW_MS; at a light rate there is no queueing.
    result = run_http_open(distribution_server.endpoint, BODY, rate=40.0, duration_s=3.0, arrivals="constant")
    assert result.ok == result.scheduled == 120 and result.error_rate == 0.0
    hist = result.histogram
    assert hist.get_total_count() == 120
    at_least_slow = sum(
        it.count_added_in_this_iter_step
        for it in hist.get_recorded_iterator()
        if it.value_iterated_to >= SLOW_MS * 1000
    )
    pct = result.percentiles
    assert FAST_MS <= pct["p50"] < FAST_MS + 20.0
    # exactly 1 in SLOW_EVERY is slow; a few fast ones may be delayed past SLOW_MS on a shared box, never fewer
    assert 1 / SLOW_EVERY <= at_least_slow / 120 <= 1 / SLOW_EVERY + 0.05
    assert SLOW_MS <= pct["p99"] < SLOW_MS + 50.0
    # Server-Timing is aggregated: the mean compute time is the distribution's mean
    expected_mean = FAST_MS * (1 - 1 / SLOW_EVERY) + SLOW_MS / SLOW_EVERY
    assert result.server_timing_samples == 120
    assert result.server_timing_ms["compute"] == pytest.approx(expected_mean, abs=5.0)
    assert result.client_ms_with_timing >= result.server_timing_ms["compute"]
    assert result.generator.cpu_cores_used < 1.0 and result.status_counts == {"200": 120}


def test_open_loop_latency_includes_queueing_closed_loop_does_not(capacity_server: RunningServer) -> None:
    # Offered 2x capacity: in open loop the backlog grows and every later request waits behind it.
    open_run = run_http_open(capacity_server.endpoint, BODY, rate=100.0, duration_s=2.0, arrivals="constant")
    closed_run = run_http_closed(capacity_server.endpoint, BODY, concurrency=1, duration_s=2.0)
    assert open_run.percentiles["p50"] > 5 * SERVICE_MS
    assert open_run.percentiles["p99"] > 20 * SERVICE_MS
    assert open_run.throughput_rps < 1000.0 / SERVICE_MS * 1.1  # capacity caps the throughput
    assert closed_run.percentiles["p50"] < 3 * SERVICE_MS
    assert closed_run.ok > 20 and closed_run.error_rate == 0.0


def test_errors_timeouts_and_drops_stay_in_the_statistics(capacity_server: RunningServer) -> None:
    wrong_model = embeddings_body_factory("no-such-model", ["x"])
    result = run_http_open(capacity_server.endpoint, wrong_model, rate=20.0, duration_s=1.0)
    assert result.errors == result.scheduled > 0 and result.error_rate == 1.0
    assert result.status_counts == {"404": result.scheduled}
    assert result.histogram.get_total_count() == result.scheduled

    # requests abandoned after 5 ms against a 20 ms service are timeouts
    timed_out = run_http_open(capacity_server.endpoint, BODY, rate=20.0, duration_s=1.0, timeout_s=0.005)
    assert timed_out.timeouts == timed_out.scheduled and timed_out.error_rate == 1.0

    # a cap of 2 in flight at 4x capacity: the overflow is dropped, counted, and in the error rate
    capped = run_http_open(capacity_server.endpoint, BODY, rate=200.0, duration_s=1.0, concurrency_cap=2)
    assert capped.dropped > 0 and capped.status_counts["dropped"] == capped.dropped
    assert capped.ok + capped.dropped + capped.errors + capped.timeouts == capped.scheduled
    assert capped.error_rate >= capped.dropped / capped.scheduled

    unreachable = run_http_open(
        f"http://127.0.0.1:{free_port()}/v1/embeddings", BODY, rate=10.0, duration_s=0.5
    )
    assert unreachable.errors == unreachable.scheduled and any(
        k.startswith("error:") for k in unreachable.status_counts
    )


def test_in_process_target_closed_and_open() -> None:
    def fake_infer(texts: list[str]) -> int:
        time.sleep(0.01)
        return len(texts)

    closed = run_inprocess(fake_infer, lambda i: ["x"], duration_s=1.0)
    assert 50 < closed.ok <= 100 and closed.percentiles["p50"] >= 10.0
    opened = run_inprocess(fake_infer, lambda i: ["x"], rate=20.0, duration_s=1.0)
    assert opened.mode == "open" and opened.ok == opened.scheduled and opened.percentiles["p50"] >= 10.0
    assert not opened.generator.likely_bottleneck or "send lag" in opened.generator.reason
