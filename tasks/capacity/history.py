"""Request-rate history from a file, a Prometheus range query, or the project's own MLflow measurements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd

from tasks.records import names
from tasks.records.store import configure

TIME_COLUMNS = ("timestamp", "ts", "time", "ds", "datetime", "t_seconds", "t")
RATE_COLUMNS = ("rate_rps", "rate", "rps", "qps", "value", "y", "requests_per_second")
# Numeric offsets (ServeGen's `t_seconds`) count from midnight of day 0; we anchor day 0 on a Monday so the
# weekly seasonality has calendar labels. A user with real dates should pass them as timestamps instead.
DEFAULT_OFFSET_ORIGIN = "2024-01-01"
DEFAULT_REQUEST_WINDOW_S = 60


class HistoryError(ValueError):
    """A history source that cannot be read as timestamps and request rates."""


@dataclass(frozen=True)
class RawHistory:
    """Unvalidated `timestamp` (as read) and `rate_rps` columns, plus where they came from."""

    frame: pd.DataFrame
    source: str


def _pick(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next((lowered[w] for w in wanted if w in lowered), None)


def aggregate_requests(timestamps: pd.Series, window_s: int = DEFAULT_REQUEST_WINDOW_S) -> pd.DataFrame:
    """Turn one-row-per-request timestamps into a `timestamp,rate_rps` series of `window_s` windows."""
    parsed = pd.to_datetime(timestamps, errors="coerce")
    if parsed.isna().any():
        bad = timestamps[parsed.isna()].iloc[0]
        raise HistoryError(f"request timestamp {bad!r} cannot be parsed; fix or drop that row")
    counts = parsed.dt.floor(f"{window_s}s").value_counts().sort_index()
    full = pd.date_range(counts.index.min(), counts.index.max(), freq=f"{window_s}s")
    counts = counts.reindex(full, fill_value=0)
    return pd.DataFrame({"timestamp": full, "rate_rps": counts.to_numpy() / window_s})


def load_file(
    path: str | Path, *, origin: str = DEFAULT_OFFSET_ORIGIN, request_window_s: int = DEFAULT_REQUEST_WINDOW_S
) -> RawHistory:
    """Read a CSV or Parquet history: a time column and a rate column, or one row per request."""
    path = Path(path)
    if not path.exists():
        raise HistoryError(f"history file {path} does not exist; pass a CSV/Parquet of timestamps and rates")
    if path.stat().st_size == 0:
        raise HistoryError(f"history file {path} is empty; it needs a header and at least one row")
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() in {".parquet", ".pq"} else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise HistoryError(f"history file {path} is empty; it needs a header and at least one row") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise HistoryError(f"history file {path} cannot be read as CSV/Parquet: {exc}") from None
    if frame.empty:
        raise HistoryError(f"history file {path} has a header but no rows; it needs at least one window")
    time_col = _pick(list(frame.columns), TIME_COLUMNS)
    if time_col is None:
        raise HistoryError(
            f"history file {path} has no time column (columns: {list(frame.columns)}); "
            f"name one of {', '.join(TIME_COLUMNS)}"
        )
    rate_col = _pick(list(frame.columns), RATE_COLUMNS)
    if rate_col is None:
        # One row per request (e.g. the Azure LLM trace): count arrivals per window.
        return RawHistory(aggregate_requests(frame[time_col], request_window_s), f"file:{path} (requests)")
    times = frame[time_col]
    if pd.api.types.is_numeric_dtype(times):
        times = pd.Timestamp(origin) + pd.to_timedelta(times, unit="s")
    out = pd.DataFrame({"timestamp": times, "rate_rps": pd.to_numeric(frame[rate_col], errors="coerce")})
    return RawHistory(out, f"file:{path}")


def when(value: datetime | str, now: datetime | None = None) -> datetime:
    """A datetime, ISO text, "now", or a relative "-90d" / "-12h" / "-30m" (what a scheduled deployment passes)."""
    if isinstance(value, datetime):
        return value
    now = now or datetime.now(UTC)
    text = value.strip()
    if text == "now":
        return now
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text.startswith("-") and text[-1:] in units and text[1:-1].isdigit():
        return now - timedelta(**{units[text[-1]]: int(text[1:-1])})
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise HistoryError(f"time {value!r} is not a datetime, ISO text, 'now' or '-<n>d|h|m'") from None


def load_prometheus(
    url: str,
    query: str,
    start: datetime | str,
    end: datetime | str,
    step_s: int,
    *,
    timeout_s: float = 30.0,
    headers: dict[str, str] | None = None,
) -> RawHistory:
    """Run a Prometheus range query (`/api/v1/query_range`); several series are summed into one rate."""
    start, end = when(start), when(end)
    params: dict[str, str | float] = {
        "query": query,
        "start": start.timestamp(),
        "end": end.timestamp(),
        "step": f"{step_s}s",
    }
    endpoint = url.rstrip("/") + "/api/v1/query_range"
    try:
        response = httpx.get(endpoint, params=params, timeout=timeout_s, headers=headers)
    except httpx.HTTPError as exc:
        raise HistoryError(f"Prometheus at {endpoint} cannot be reached: {exc}; check the URL") from None
    if response.status_code != 200:
        raise HistoryError(
            f"Prometheus query {query!r} at {endpoint} failed: HTTP {response.status_code} {response.text[:200]}"
        )
    body = response.json()
    if body.get("status") != "success" or body.get("data", {}).get("resultType") != "matrix":
        raise HistoryError(
            f"Prometheus query {query!r} returned no matrix (status={body.get('status')}); use a range-vector query like rate(...[5m])"
        )
    series = body["data"]["result"]
    if not series:
        raise HistoryError(f"Prometheus query {query!r} returned no series between {start} and {end}")
    parts = []
    for item in series:
        values = np.asarray(item["values"], dtype=float)
        parts.append(pd.Series(values[:, 1], index=pd.to_datetime(values[:, 0], unit="s")))
    total = pd.concat(parts, axis=1).sum(axis=1, min_count=1).sort_index()
    frame = pd.DataFrame({"timestamp": total.index, "rate_rps": total.to_numpy()})
    return RawHistory(frame, f"prometheus:{query}")


def load_mlflow_metric(
    metric: str = "throughput_rps",
    *,
    experiment: str = names.BENCH_EXPERIMENT,
    model: str | None = None,
    window_s: int = 600,
) -> RawHistory:
    """The project's own recorded serving rate: a metric's history across runs, averaged per window."""
    client = mlflow.MlflowClient(configure())
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise HistoryError(f"MLflow experiment {experiment!r} does not exist; record serving runs first")
    query = f"tags.`{names.TAG_MODEL}` = '{model}'" if model else ""
    runs = client.search_runs([exp.experiment_id], filter_string=query, max_results=5000)
    points = [
        (m.timestamp, m.value)
        for run in runs
        if metric in run.data.metrics
        for m in client.get_metric_history(run.info.run_id, metric)
    ]
    if not points:
        scope = f" for model {model!r}" if model else ""
        raise HistoryError(
            f"no MLflow metric {metric!r} in experiment {experiment!r}{scope}; log it from serving runs"
        )
    values = pd.Series([v for _, v in points], index=pd.to_datetime([t for t, _ in points], unit="ms"))
    # Windows with no sample are left out (not NaN), so validation reports them as missing windows.
    windows = values.sort_index().resample(f"{window_s}s").mean().dropna()
    frame = pd.DataFrame({"timestamp": windows.index, "rate_rps": windows.to_numpy()})
    return RawHistory(frame, f"mlflow:{experiment}/{metric}")
