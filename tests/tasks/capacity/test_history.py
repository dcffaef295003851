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

from tasks.capacity import data_quality as dq
from tasks.capacity.history import (
    ColumnMapping,
    HistoryError,
    load_file,
    load_mlflow_metric,
    load_prometheus,
    when,
)
from tasks.policy import default_policy
from tasks.records.store import ensure_experiment
from tests.shared_data import shared_file


def test_servegen_offsets_become_timestamps() -> None:
    raw = load_file(shared_file("traces", "servegen_m-small_agg_rate_10min.csv"))
    assert len(raw.frame) == 2016
    assert raw.frame["timestamp"].iloc[1] - raw.frame["timestamp"].iloc[0] == pd.Timedelta(minutes=10)


def test_per_request_trace_is_aggregated() -> None:
    path = shared_file("traces", "azure_llm_2023_conv.csv")
    raw = load_file(path, ColumnMapping(request_window_s=60))
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


def _per_container_trace(path: Path, days: int = 15) -> pd.DataFrame:
    """A per-container QPS trace as public ones come: `timestamp_anon,value,container_ip,request_type`, epoch
    seconds, three containers and two request types sharing every 10-minute timestamp."""
    stamps = pd.date_range("2025-03-03", periods=days * 144, freq="600s")
    epoch = (stamps - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    rows = []
    for k, ip in enumerate(["10.0.0.1", "10.0.0.2", "10.0.0.3"]):
        for kind, scale in (("embed", 1.0), ("rerank", 0.25)):
            rows.append(
                pd.DataFrame(
                    {
                        "timestamp_anon": epoch,
                        "value": (k + 1) * scale * 10.0,
                        "container_ip": ip,
                        "request_type": kind,
                    }
                )
            )
    frame = pd.concat(rows).sample(frac=1.0, random_state=0)  # rows arrive in no order
    frame.to_csv(path, index=False)
    return frame


def test_per_container_trace_maps_filters_and_sums_and_the_report_says_so(tmp_path: Path) -> None:
    path = tmp_path / "containers.csv"
    _per_container_trace(path)
    with pytest.raises(HistoryError, match="no time column.*--time-column"):
        load_file(path)
    mapping = ColumnMapping(
        time_column="timestamp_anon", value_column="value", time_unit="s", filters={"request_type": "embed"}
    )
    raw = load_file(path, mapping)
    assert len(raw.frame) == 15 * 144  # one window per timestamp
    assert raw.frame["timestamp"].iloc[0] == pd.Timestamp("2025-03-03")
    assert raw.frame["timestamp"].is_monotonic_increasing
    assert (raw.frame["rate_rps"] == 10.0 + 20.0 + 30.0).all()  # the three embed containers, summed
    peak = load_file(
        path, ColumnMapping(time_column="timestamp_anon", value_column="value", time_unit="s", combine="max")
    ).frame["rate_rps"]
    assert (peak == 30.0).all()  # every container and request type, the largest
    policy = default_policy().capacity
    report = dq.validate_history(raw, policy, report_dir=tmp_path)
    assert report.verdict == "pass", report.reason
    text = dq.render_validation_markdown(report)
    assert "## Column mapping" in text
    assert "timestamp_anon (named by --time-column), read as epoch s" in text
    assert "request_type=embed: kept" in text and "combined by sum" in text
    assert len(dq.prepare_series(raw, report, policy)) == 15 * 144


def test_bad_mappings_name_the_column_the_value_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "containers.csv"
    frame = _per_container_trace(path, days=2)
    base = {"time_column": "timestamp_anon", "value_column": "value", "time_unit": "s"}
    with pytest.raises(HistoryError, match="time column 'stamp' .*not in the file.*timestamp_anon"):
        load_file(path, ColumnMapping(**{**base, "time_column": "stamp"}))
    with pytest.raises(HistoryError, match="value column 'qps' .*not in the file"):
        load_file(path, ColumnMapping(**{**base, "value_column": "qps"}))
    with pytest.raises(HistoryError, match="filter request_type=chat leaves no rows.*embed"):
        load_file(path, ColumnMapping(**{**base, "filters": {"request_type": "chat"}}))
    with pytest.raises(HistoryError, match="filter column 'zone'"):
        load_file(path, ColumnMapping(**{**base, "filters": {"zone": "a"}}))
    # epoch seconds read as milliseconds: 1970, a wrong unit, said before anything is forecast
    with pytest.raises(HistoryError, match="read as epoch ms runs from 1970.*--time-unit"):
        load_file(path, ColumnMapping(**{**base, "time_unit": "ms"}))
    # epoch seconds read as seconds from the start: 55 years after the origin
    with pytest.raises(HistoryError, match="look like epoch timestamps; pass --time-unit s"):
        load_file(path, ColumnMapping(**{**base, "time_unit": "offset-s"}))
    broken = frame.astype({"timestamp_anon": "object"})
    broken.iloc[3, 0] = "yesterday"
    broken.to_csv(tmp_path / "broken.csv", index=False)
    with pytest.raises(HistoryError, match="time column 'timestamp_anon' value 'yesterday' \\(row 5\\)"):
        load_file(tmp_path / "broken.csv", ColumnMapping(**base))
    with pytest.raises(HistoryError, match="time unit 'hours' is not one of"):
        ColumnMapping.from_dict({**base, "time_unit": "hours"})
    with pytest.raises(HistoryError, match="unknown key"):
        ColumnMapping.from_dict({"time_col": "x"})
    with pytest.raises(HistoryError, match="is not COL=VALUE"):
        ColumnMapping.parse_filters(["request_type"])
    assert ColumnMapping.parse_filters(["request_type=embed"]) == {"request_type": "embed"}


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
