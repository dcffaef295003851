"""History loaders: files (rates, offsets, per-request rows, Parquet), Prometheus over real loopback HTTP, MLflow."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import mlflow
import pandas as pd
import pytest

from tasks.capacity.history import HistoryError, load_file, load_mlflow_metric, load_prometheus, when
from tasks.records.store import ensure_experiment
from tests.shared_data import shared_file


def test_servegen_offsets_become_timestamps() -> None:
    raw = load_file(shared_file("traces", "servegen_m-small_agg_rate_10min.csv"))
    assert len(raw.frame) == 2016
    assert raw.frame["timestamp"].iloc[1] - raw.frame["timestamp"].iloc[0] == pd.Timedelta(minutes=10)


def test_per_request_trace_is_aggregated() -> None:
    path = shared_file("traces", "azure_llm_2023_conv.csv")
    raw = load_file(path, request_window_s=60)
    total = (raw.frame["rate_rps"] * 60).sum()
    assert total == pytest.approx(len(pd.read_csv(path)))


def test_parquet_and_bad_files(tmp_path: Path) -> None:
    frame = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=3, freq="1h"), "qps": [1.0, 2.0, 3.0]})
    frame.to_parquet(tmp_path / "h.parquet")
    assert load_file(tmp_path / "h.parquet").frame["rate_rps"].tolist() == [1.0, 2.0, 3.0]
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(HistoryError, match="is empty"):
        load_file(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("timestamp,rate_rps\n")
    with pytest.raises(HistoryError, match="no rows"):
        load_file(tmp_path / "header.csv")
    (tmp_path / "nocol.csv").write_text("a,b\n1,2\n")
    with pytest.raises(HistoryError, match="no time column"):
        load_file(tmp_path / "nocol.csv")
    with pytest.raises(HistoryError, match="does not exist"):
        load_file(tmp_path / "missing.csv")


class _Prometheus(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        q = parse_qs(url.query)
        start, step = float(q["start"][0]), int(q["step"][0].rstrip("s"))
        values = [[start + i * step, str(float(i))] for i in range(5)]
        body = {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [
                    {"metric": {"instance": "a"}, "values": values},
                    {"metric": {"instance": "b"}, "values": values},
                ],
            },
        }
        payload = json.dumps(body).encode() if url.path == "/api/v1/query_range" else b"{}"
        self.send_response(200 if url.path == "/api/v1/query_range" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def prometheus() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_prometheus_range_query_sums_series(prometheus: str) -> None:
    raw = load_prometheus(
        prometheus, "sum(rate(http_requests_total[5m]))", datetime(2024, 1, 1), datetime(2024, 1, 2), 600
    )
    assert raw.frame["rate_rps"].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert (raw.frame["timestamp"].diff().dropna() == pd.Timedelta(seconds=600)).all()
    with pytest.raises(HistoryError, match="cannot be reached"):
        load_prometheus(
            "http://127.0.0.1:9", "up", datetime(2024, 1, 1), datetime(2024, 1, 2), 600, timeout_s=2
        )


def test_mlflow_metric_history() -> None:
    ensure_experiment("inferops-bench")
    now = int(time.time() * 1000)
    with mlflow.start_run():
        mlflow.set_tag("inferops.model", "histmodel")
        for i in range(3):
            mlflow.log_metric("throughput_rps", 10.0 + i, timestamp=now + i * 600_000)
    raw = load_mlflow_metric("throughput_rps", model="histmodel", window_s=600)
    assert raw.frame["rate_rps"].tolist() == [10.0, 11.0, 12.0]
    with pytest.raises(HistoryError, match="no MLflow metric"):
        load_mlflow_metric("nope", model="histmodel")


def test_relative_times_for_scheduled_prometheus_queries() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert when("now", now) == now
    assert when("-90d", now) == now - timedelta(days=90)
    assert when("-30m", now) == now - timedelta(minutes=30)
    assert when("2025-12-01T00:00:00+00:00", now) == datetime(2025, 12, 1, tzinfo=UTC)
    with pytest.raises(HistoryError, match="not a datetime"):
        when("last tuesday", now)
