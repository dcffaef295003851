"""Request-rate history from a file, a Prometheus range query, or the project's own MLflow measurements."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

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
# Prometheus refuses a range query whose (end - start) / step exceeds 11,000 ("exceeded maximum resolution of
# 11,000 points per timeseries"): a quarter at a 600 s step is 12,961 points. Longer ranges are read as
# consecutive queries of at most PROMETHEUS_CHUNK_POINTS each, a margin under the server's limit.
PROMETHEUS_MAX_POINTS = 11_000
PROMETHEUS_CHUNK_POINTS = 10_000


class HistoryError(ValueError):
    """A history source that cannot be read as timestamps and request rates."""


@dataclass(frozen=True)
class Coverage:
    """How much of the asked-for range a server actually holds: its stated retention and the data's first and
    last instants (all UTC)."""

    server: str
    requested_start: datetime
    requested_end: datetime
    first: datetime
    last: datetime
    points: int
    step_s: float
    retention: str | None

    @property
    def requested_s(self) -> float:
        return (self.requested_end - self.requested_start).total_seconds()

    @property
    def covered_s(self) -> float:
        return (self.last - self.first).total_seconds()

    def sentence(self) -> str:
        """E.g. "asked for 90 days from Prometheus; it keeps 15d; data starts 2026-11-30 10:00 UTC, ..."."""
        keeps = f"it keeps {self.retention}" if self.retention else "its retention is unknown"
        return (
            f"asked for {duration_text(self.requested_s)} from {self.server}; {keeps}; "
            f"data starts {_minute(self.first)}, ends {_minute(self.last)} "
            f"({duration_text(self.covered_s)} of history: {self.points:,} point(s) at {self.step_s:g} s)"
        )


@dataclass(frozen=True)
class RawHistory:
    """Unvalidated `timestamp` (as read) and `rate_rps` columns, where they came from and, for a server, how
    much of the asked-for range it held."""

    frame: pd.DataFrame
    source: str
    coverage: Coverage | None = None
    mapping: dict[str, str] = field(default_factory=dict)  # what became the time and value columns, and why


def duration_text(seconds: float) -> str:
    """A span as people say it: "90 days", "1.2 h", "12 min", "40 s"."""
    for size, unit in ((86400, "days"), (3600, "h"), (60, "min")):
        if seconds >= size:
            value = round(seconds / size, 1)
            return f"{value:g} {'day' if unit == 'days' and value == 1 else unit}"
    return f"{round(seconds):g} s"


def _minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_coverage_markdown(coverage: Coverage | None) -> str:
    """A "History coverage" section for a report: asked for versus returned ("" when the source has none)."""
    if coverage is None:
        return ""
    rows = [
        ("asked for", coverage.requested_start, coverage.requested_end, coverage.requested_s),
        ("returned", coverage.first, coverage.last, coverage.covered_s),
    ]
    lines = [
        "",
        "## History coverage",
        "",
        coverage.sentence(),
        "",
        "| | from | to | span |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {_minute(a)} | {_minute(b)} | {duration_text(s)} |" for name, a, b, s in rows]
    return "\n".join(lines) + "\n"


def _pick(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next((lowered[w] for w in wanted if w in lowered), None)


def aggregate_requests(timestamps: pd.Series, window_s: int = DEFAULT_REQUEST_WINDOW_S) -> pd.DataFrame:
    """Turn one-row-per-request timestamps (already parsed) into a `timestamp,rate_rps` series of `window_s`
    windows."""
    parsed = pd.to_datetime(timestamps, errors="coerce")
    if parsed.isna().any():
        bad = timestamps[parsed.isna()].iloc[0]
        raise HistoryError(f"request timestamp {bad!r} cannot be parsed; fix or drop that row")
    counts = parsed.dt.floor(f"{window_s}s").value_counts().sort_index()
    full = pd.date_range(counts.index.min(), counts.index.max(), freq=f"{window_s}s")
    counts = counts.reindex(full, fill_value=0)
    return pd.DataFrame({"timestamp": full, "rate_rps": counts.to_numpy() / window_s})


TimeUnit = Literal["auto", "offset-s", "s", "ms", "us", "ns", "iso"]
TIME_UNITS: tuple[str, ...] = get_args(TimeUnit)
Combine = Literal["sum", "mean", "max"]
COMBINES: tuple[str, ...] = get_args(Combine)
# Epoch readings outside these years mean the unit is wrong (milliseconds read as seconds land in the year 50,000).
PLAUSIBLE_YEARS = (1990, 2100)
MAX_SPAN_YEARS = 20


@dataclass(frozen=True)
class ColumnMapping:
    """How a history file's columns become `timestamp, rate_rps` (every field optional: the defaults find the
    usual names). `time_unit`: `offset-s` (seconds from `origin`), epoch `s`/`ms`/`us`/`ns`, `iso` text, or `auto`
    (numbers are offsets, text is parsed). Rows left after `filters` (column -> value) that share a timestamp
    are combined by `combine`; with no value column each row is one request, counted per `request_window_s`."""

    time_column: str | None = None
    value_column: str | None = None
    time_unit: TimeUnit = "auto"
    filters: dict[str, str] = field(default_factory=dict)
    combine: Combine = "sum"
    request_window_s: int = DEFAULT_REQUEST_WINDOW_S
    origin: str = DEFAULT_OFFSET_ORIGIN

    @staticmethod
    def parse_filters(items: list[str] | None) -> dict[str, str]:
        """`COL=VALUE` items (the CLI's repeated `--filter`) as a dict; a malformed one is refused by name."""
        out: dict[str, str] = {}
        for item in items or []:
            column, sep, value = item.partition("=")
            if not sep or not column.strip():
                raise HistoryError(f"filter {item!r} is not COL=VALUE; write it as e.g. request_type=embed")
            out[column.strip()] = value.strip()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ColumnMapping:
        """A mapping from a flow parameter (keys as the fields); unknown keys are refused by name."""
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise HistoryError(f"history mapping has unknown key(s) {unknown}; use {sorted(known)}")
        if isinstance(values.get("filters"), list):
            values["filters"] = cls.parse_filters(values["filters"])
        mapping = cls(**values)
        mapping.check()
        return mapping

    def check(self) -> None:
        if self.time_unit not in TIME_UNITS:
            raise HistoryError(f"time unit {self.time_unit!r} is not one of {', '.join(TIME_UNITS)}")
        if self.combine not in COMBINES:
            raise HistoryError(f"combine {self.combine!r} is not one of {', '.join(COMBINES)}")
        if self.request_window_s < 1:
            raise HistoryError(f"request window {self.request_window_s} s must be >= 1 s")


def _column(
    frame: pd.DataFrame, named: str | None, wanted: tuple[str, ...], what: str, flag: str
) -> str | None:
    if named is None:
        return _pick(list(frame.columns), wanted)
    if named not in frame.columns:
        raise HistoryError(
            f"{what} column {named!r} ({flag}) is not in the file; its columns are {list(frame.columns)}"
        )
    return named


def _parse_times(values: pd.Series, column: str, mapping: ColumnMapping) -> tuple[pd.Series, str]:
    """Timestamps from `column` by the mapping's unit, refused (naming the column, the row and the fix) when a
    value does not parse or the unit gives an implausible calendar."""
    unit = mapping.time_unit
    numeric = pd.api.types.is_numeric_dtype(values)
    if unit == "auto":
        unit = "offset-s" if numeric else "iso"
    if unit != "iso" and not numeric:
        as_number = pd.to_numeric(values, errors="coerce")
        if as_number.isna().any():
            bad = values[as_number.isna()]
            raise HistoryError(
                f"time column {column!r} value {bad.iloc[0]!r} (row {bad.index[0] + 2}) is not a number, yet "
                f"--time-unit is {unit}; use --time-unit iso for dates, or fix that row"
            )
        values = as_number
    if unit == "iso":
        parsed = pd.to_datetime(values.astype(str), errors="coerce", utc=True).dt.tz_localize(None)
        how = "dates (ISO text)"
    elif unit == "offset-s":
        start_years = float(values.min()) / (365.25 * 86400)
        if start_years > MAX_SPAN_YEARS:
            raise HistoryError(
                f"time column {column!r} starts {start_years:,.0f} years after {mapping.origin} when read as seconds "
                "from the start: these look like epoch timestamps; pass --time-unit s (or ms, us, ns)"
            )
        parsed = pd.Timestamp(mapping.origin) + pd.to_timedelta(values, unit="s")
        how = f"seconds from {mapping.origin}"
    else:
        parsed = pd.to_datetime(values, unit=unit, errors="coerce")
        how = f"epoch {unit}"
    if parsed.isna().any():
        bad = values[parsed.isna()]
        raise HistoryError(
            f"time column {column!r} value {bad.iloc[0]!r} (row {bad.index[0] + 2}) cannot be read as {how}; "
            "fix that row, or name the unit with --time-unit (offset-s, s, ms, us, ns, iso)"
        )
    first, last = parsed.min(), parsed.max()
    years = (last - first).total_seconds() / (365.25 * 86400)
    epoch = unit in {"s", "ms", "us", "ns", "iso"}
    if years > MAX_SPAN_YEARS or (
        epoch and not PLAUSIBLE_YEARS[0] <= first.year <= last.year <= PLAUSIBLE_YEARS[1]
    ):
        raise HistoryError(
            f"time column {column!r} read as {how} runs from {first} to {last} ({years:,.1f} years): the unit is "
            "wrong; pass the right --time-unit (epoch s vs ms, or offset-s for seconds from the start)"
        )
    return parsed, how


def map_columns(
    frame: pd.DataFrame, mapping: ColumnMapping, source: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    """`timestamp, rate_rps` from any table the mapping describes, and what was mapped and why (for the
    validation report)."""
    mapping.check()
    mapped: dict[str, str] = {}
    time_col = _column(frame, mapping.time_column, TIME_COLUMNS, "time", "--time-column")
    if time_col is None:
        raise HistoryError(
            f"history file {source} has no time column (columns: {list(frame.columns)}); name it with "
            f"--time-column (found automatically: {', '.join(TIME_COLUMNS)})"
        )
    rows = len(frame)
    for column, value in mapping.filters.items():
        if column not in frame.columns:
            raise HistoryError(
                f"filter column {column!r} (--filter {column}={value}) is not in the file; its columns are "
                f"{list(frame.columns)}"
            )
        kept = frame[frame[column].astype(str) == value]
        if kept.empty:
            seen = sorted(frame[column].astype(str).unique())[:8]
            raise HistoryError(
                f"filter {column}={value} leaves no rows of {len(frame):,}; {column} holds e.g. {seen}"
            )
        frame = kept
    if mapping.filters:
        conditions = ", ".join(f"{c}={v}" for c, v in mapping.filters.items())
        mapped["filter"] = f"{conditions}: kept {len(frame):,} of {rows:,} rows"
    frame = frame.reset_index(drop=True)
    times, how = _parse_times(frame[time_col], time_col, mapping)
    named = "named by --time-column" if mapping.time_column else "found by name"
    mapped["time"] = f"{time_col} ({named}), read as {how}"
    rate_col = _column(frame, mapping.value_column, RATE_COLUMNS, "value", "--value-column")
    if rate_col is None:
        # One row per request (e.g. the Azure LLM trace): count arrivals per window.
        mapped["value"] = (
            f"no value column (none named, none of {', '.join(RATE_COLUMNS)}): one row per request, counted "
            f"per {mapping.request_window_s} s window"
        )
        return aggregate_requests(times, mapping.request_window_s), mapped
    values = pd.to_numeric(frame[rate_col], errors="coerce")
    bad = frame[rate_col][values.isna() & frame[rate_col].notna()]
    if len(bad):
        raise HistoryError(
            f"value column {rate_col!r} value {bad.iloc[0]!r} (row {bad.index[0] + 2}) is not a number; fix that "
            "row or name another column with --value-column"
        )
    named = "named by --value-column" if mapping.value_column else "found by name"
    mapped["value"] = f"{rate_col} ({named}), requests per second"
    out = pd.DataFrame({"timestamp": times, "rate_rps": values})
    if out["timestamp"].duplicated().any():
        shared = int(out["timestamp"].duplicated(keep=False).sum())
        out = out.groupby("timestamp", as_index=False, sort=True)["rate_rps"].agg(mapping.combine)
        mapped["combine"] = (
            f"{shared:,} rows share a timestamp: combined by {mapping.combine} into {len(out):,} windows"
        )
    return out, mapped


def load_file(path: str | Path, mapping: ColumnMapping | None = None) -> RawHistory:
    """Read a CSV or Parquet history: a time column and a rate column, or one row per request; `mapping` names
    the columns, their unit, filters and how rows sharing a timestamp combine."""
    mapping = mapping or ColumnMapping()
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
    out, mapped = map_columns(frame, mapping, str(path))
    kind = " (requests)" if "per request" in mapped.get("value", "") else ""
    return RawHistory(out, f"file:{path}{kind}", mapping=mapped)


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


def chunk_windows(
    start_s: float, end_s: float, step_s: float, max_points: int = PROMETHEUS_CHUNK_POINTS
) -> list[tuple[float, float]]:
    """Consecutive `[start, end]` windows (epoch seconds) of at most `max_points` evaluation instants each, on
    one step grid from `start_s`; neighbours share their boundary instant, which the reader drops once."""
    if step_s <= 0:
        raise HistoryError(f"Prometheus step {step_s} s is not positive; pass step_s >= 1")
    if max_points < 2:
        raise HistoryError(
            f"Prometheus chunks of {max_points} point(s) cannot advance; pass chunk_points >= 2"
        )
    if end_s < start_s:
        raise HistoryError(
            f"Prometheus range ends ({_minute(datetime.fromtimestamp(end_s, UTC))}) before it starts "
            f"({_minute(datetime.fromtimestamp(start_s, UTC))}); swap start and end"
        )
    span_s = step_s * (max_points - 1)
    count = max(1, int(np.ceil((end_s - start_s) / span_s)))
    return [(start_s + i * span_s, min(start_s + (i + 1) * span_s, end_s)) for i in range(count)]


def prometheus_retention(
    url: str, *, timeout_s: float = 30.0, headers: dict[str, str] | None = None
) -> str | None:
    """How long the server keeps data, as it states it ("15d", "15d or 1GiB"); None when it does not say."""
    base = url.rstrip("/")
    # runtimeinfo states the retention in force; the flag reads "0s" when left at Prometheus's default.
    for path, key in (
        ("/api/v1/status/runtimeinfo", "storageRetention"),
        ("/api/v1/status/flags", "storage.tsdb.retention.time"),
    ):
        try:
            data = httpx.get(base + path, timeout=timeout_s, headers=headers).json().get("data") or {}
        except (httpx.HTTPError, ValueError, AttributeError):
            continue
        value = data.get(key) if isinstance(data, dict) else None
        if value and value != "0s":
            return str(value)
    return None


def _query_range(
    endpoint: str,
    query: str,
    window: tuple[float, float],
    step_s: int,
    timeout_s: float,
    headers: dict[str, str] | None,
) -> list[dict[str, Any]]:
    """One `/api/v1/query_range` call: the matrix's series, each `{"metric": {...}, "values": [[t, "v"]]}`."""
    start_s, end_s = window
    params: dict[str, str | float] = {"query": query, "start": start_s, "end": end_s, "step": f"{step_s}s"}
    span = f"{_minute(datetime.fromtimestamp(start_s, UTC))} .. {_minute(datetime.fromtimestamp(end_s, UTC))}"
    try:
        response = httpx.get(endpoint, params=params, timeout=timeout_s, headers=headers)
    except httpx.HTTPError as exc:
        raise HistoryError(f"Prometheus at {endpoint} cannot be reached: {exc}; check the URL") from None
    if response.status_code != 200:
        raise HistoryError(
            f"Prometheus query {query!r} at {endpoint} failed for {span} at step {step_s} s: "
            f"HTTP {response.status_code} {response.text[:200]}; fix the query, or use a coarser step_s"
        )
    body = response.json()
    if body.get("status") != "success" or body.get("data", {}).get("resultType") != "matrix":
        raise HistoryError(
            f"Prometheus query {query!r} returned no matrix (status={body.get('status')}); use a range-vector query like rate(...[5m])"
        )
    return [item for item in body["data"]["result"] if item.get("values")]


def load_prometheus(
    url: str,
    query: str,
    start: datetime | str,
    end: datetime | str,
    step_s: int,
    *,
    timeout_s: float = 30.0,
    headers: dict[str, str] | None = None,
    chunk_points: int = PROMETHEUS_CHUNK_POINTS,
) -> RawHistory:
    """Run a Prometheus range query (`/api/v1/query_range`, in chunks of at most `chunk_points`: lower it for a
    server with a lower limit); several series are summed into one rate. `coverage` says what the server held."""
    start, end = when(start), when(end)
    start_s, end_s = start.timestamp(), end.timestamp()
    windows = chunk_windows(start_s, end_s, step_s, chunk_points)
    endpoint = url.rstrip("/") + "/api/v1/query_range"
    by_series: dict[str, list[np.ndarray]] = {}
    for window in windows:
        for item in _query_range(endpoint, query, window, step_s, timeout_s, headers):
            key = json.dumps(item.get("metric", {}), sort_keys=True)
            by_series.setdefault(key, []).append(np.asarray(item["values"], dtype=float))
    retention = prometheus_retention(url, timeout_s=timeout_s, headers=headers)
    if not by_series:
        keeps = f"it keeps {retention}" if retention else "its retention is unknown"
        raise HistoryError(
            f"Prometheus query {query!r} returned no series between {start} and {end} "
            f"(read in {len(windows)} chunk(s) of at most {chunk_points:,} points; {keeps}); "
            "check the metric name and labels, or ask for a range the server holds"
        )
    parts = []
    for chunks in by_series.values():
        values = np.concatenate(chunks)
        # Prometheus stamps samples in milliseconds: round there so a boundary instant matches across chunks.
        index = pd.to_datetime(np.round(values[:, 0] * 1000).astype("int64"), unit="ms")
        one = pd.Series(values[:, 1], index=index)
        parts.append(one[~one.index.duplicated()])
    total = pd.concat(parts, axis=1).sum(axis=1, min_count=1).sort_index()
    frame = pd.DataFrame({"timestamp": total.index, "rate_rps": total.to_numpy()})
    coverage = Coverage(
        "Prometheus",
        datetime.fromtimestamp(start_s, UTC),
        datetime.fromtimestamp(end_s, UTC),
        total.index[0].to_pydatetime().replace(tzinfo=UTC),
        total.index[-1].to_pydatetime().replace(tzinfo=UTC),
        len(total),
        step_s,
        retention,
    )
    return RawHistory(frame, f"prometheus:{query}", coverage)


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
