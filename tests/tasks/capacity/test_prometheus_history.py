"""Prometheus history: chunk windows under the server's point limit, and a real Prometheus scraping this session's
Ray node after a Serve app answered requests (a quarter at 600 s, the coverage the server states)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest

from tasks.capacity import tracking
from tasks.capacity.history import (
    PROMETHEUS_CHUNK_POINTS,
    PROMETHEUS_MAX_POINTS,
    Coverage,
    HistoryError,
    chunk_windows,
    duration_text,
    load_prometheus,
    render_coverage_markdown,
)
from tests.prometheus_server import ServeTraffic, settled_now

QUARTER_S, STEP_S = 90 * 86400, 600


def _instants(window: tuple[float, float], step_s: float) -> list[float]:
    """The instants Prometheus evaluates a range query at: start, start + step, ... up to end."""
    count = int((window[1] - window[0]) // step_s) + 1
    return [window[0] + i * step_s for i in range(count)]


def test_a_quarter_at_600_s_is_two_chunks_under_the_limit() -> None:
    start = datetime(2026, 9, 1, tzinfo=UTC).timestamp()
    windows = chunk_windows(start, start + QUARTER_S, STEP_S)
    assert QUARTER_S / STEP_S > PROMETHEUS_MAX_POINTS  # what Prometheus would refuse in one query
    assert len(windows) == 2 and windows[0][0] == start and windows[-1][1] == start + QUARTER_S
    assert windows[0][1] == windows[1][0], "neighbours share their boundary instant"
    points = [_instants(w, STEP_S) for w in windows]
    assert [len(p) for p in points] == [PROMETHEUS_CHUNK_POINTS, 12_961 - PROMETHEUS_CHUNK_POINTS + 1]
    assert all((w[1] - w[0]) / STEP_S <= PROMETHEUS_MAX_POINTS for w in windows)  # Prometheus's own check
    unique = sorted({t for p in points for t in p})
    assert len(unique) == 12_961 and unique == _instants((start, start + QUARTER_S), STEP_S)


def test_chunk_edges() -> None:
    assert chunk_windows(0, 100, 10, max_points=4) == [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert chunk_windows(0, 30, 10, max_points=4) == [(0, 30)]  # exactly one full chunk
    assert chunk_windows(50, 50, 10) == [(50, 50)]  # one instant
    assert chunk_windows(0, 9_999 * 600, 600) == [(0, 9_999 * 600)]  # 10,000 points: still one query
    with pytest.raises(HistoryError, match="swap start and end"):
        chunk_windows(100, 0, 10)
    with pytest.raises(HistoryError, match="step_s >= 1"):
        chunk_windows(0, 100, 0)
    with pytest.raises(HistoryError, match="chunk_points >= 2"):
        chunk_windows(0, 100, 10, max_points=1)


def test_coverage_sentence_markdown_and_mlflow_params() -> None:
    end = datetime(2026, 11, 30, 11, 12, tzinfo=UTC)
    first = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    coverage = Coverage("Prometheus", end - timedelta(days=90), end, first, end, 8, 600, "15d")
    assert coverage.sentence() == (
        "asked for 90 days from Prometheus; it keeps 15d; data starts 2026-11-30 10:00 UTC, "
        "ends 2026-11-30 11:12 UTC (1.2 h of history: 8 point(s) at 600 s)"
    )
    markdown = render_coverage_markdown(coverage)
    assert "## History coverage" in markdown and "| returned | 2026-11-30 10:00 UTC |" in markdown
    assert render_coverage_markdown(None) == ""
    assert tracking.coverage_params(coverage) == {
        "history_coverage": coverage.sentence(),
        "history_retention": "15d",
        "history_first": "2026-11-30T10:00:00+00:00",
        "history_last": "2026-11-30T11:12:00+00:00",
    }
    assert tracking.coverage_params(None) == {}
    unknown = Coverage("Prometheus", first, end, first, first, 1, 600, None)
    assert (
        "its retention is unknown" in unknown.sentence()
        and "(0 s of history: 1 point(s)" in unknown.sentence()
    )
    assert [duration_text(s) for s in (86400, 36 * 3600, 90, 59.6)] == [
        "1 day",
        "1.5 days",
        "1.5 min",
        "60 s",
    ]


def test_serve_request_counter_read_back_from_a_real_prometheus(
    serve_traffic_in_prometheus: ServeTraffic,
) -> None:
    traffic = serve_traffic_in_prometheus
    # Two reads of one range must agree: end it where no scrape is still in flight (CI once saw the raw read hold
    # an instant that a scrape timing out between the two reads then marked stale).
    now = settled_now()
    # The raw counter at a 1 s step: it rose by exactly the requests the fixture sent.
    raw = load_prometheus(traffic.prometheus_url, f"sum({traffic.selector})", traffic.started_at, now, 1)
    counts = raw.frame["rate_rps"]
    assert counts.max() - counts.min() == traffic.requests
    # on the 1 s step grid, each instant once (a scrape the busy box missed leaves a gap, never a half step)
    offsets = raw.frame["timestamp"] - raw.frame["timestamp"].iloc[0]
    assert (offsets % pd.Timedelta(seconds=1) == pd.Timedelta(0)).all() and offsets.is_unique
    # Tiny chunks cross many boundaries in the real data: the same frame, each boundary instant once.
    chunked = load_prometheus(
        traffic.prometheus_url, f"sum({traffic.selector})", traffic.started_at, now, 1, chunk_points=7
    )
    pd.testing.assert_frame_equal(chunked.frame, raw.frame)
    # The rate the capacity flow plans on: positive while the requests arrived.
    rate = load_prometheus(traffic.prometheus_url, traffic.rate_query("15s"), traffic.started_at, now, 1)
    assert rate.frame["rate_rps"].max() > 0 and rate.source == f"prometheus:{traffic.rate_query('15s')}"
    assert rate.coverage is not None and rate.coverage.retention == "15d"
    assert traffic.started_at <= rate.coverage.first <= rate.coverage.last <= now


def test_a_quarter_at_600_s_from_a_real_prometheus_goes_through_in_chunks(
    serve_traffic_in_prometheus: ServeTraffic,
) -> None:
    traffic = serve_traffic_in_prometheus
    # The session's traffic was sent once, minutes before this test may run: end the range within the 10-minute
    # rate window after it, so the last point holds it whatever ran in between.
    end = min(settled_now(), traffic.started_at + timedelta(minutes=5))
    start = end - timedelta(seconds=QUARTER_S)
    query = traffic.rate_query("10m")  # a window as long as the step: every request counts in one point
    unchunked = httpx.get(
        f"{traffic.prometheus_url}/api/v1/query_range",
        params={"query": query, "start": start.timestamp(), "end": end.timestamp(), "step": f"{STEP_S}s"},
        timeout=30,
    )
    assert unchunked.status_code == 400
    assert "exceeded maximum resolution of 11,000 points per timeseries" in unchunked.text

    raw = load_prometheus(traffic.prometheus_url, query, start, end, STEP_S)
    assert raw.frame["rate_rps"].iloc[-1] > 0
    coverage = raw.coverage
    assert coverage is not None and coverage.requested_s == QUARTER_S
    # The server keeps 15 days, and holds only the minutes since this session started it.
    assert coverage.retention == "15d" and coverage.covered_s < 3600 and coverage.points == len(raw.frame)
    assert coverage.sentence().startswith("asked for 90 days from Prometheus; it keeps 15d; data starts ")

    with pytest.raises(
        HistoryError, match=r"no series .* 2 chunk\(s\) of at most 10,000 points; it keeps 15d"
    ):
        load_prometheus(traffic.prometheus_url, "sum(rate(inferops_no_such_metric[10m]))", start, end, STEP_S)
