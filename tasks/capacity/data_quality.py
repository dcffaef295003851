"""Validate a request-rate history with a Great Expectations suite; find gaps; always write the report."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from serving.artifacts import slug, write_json_atomic
from serving.settings import get_settings
from tasks.capacity.history import RawHistory
from tasks.decision import Decision, decisions_markdown, markdown_table
from tasks.policy import Capacity

Severity = Literal["fatal", "gap"]
Seasonality = Literal["daily", "weekly"]

# A zero window is an outage, not idle time, when the neighbouring level predicts at least policy
# capacity.zero_outage_min_expected_requests in it: for Poisson arrivals P(0 | 10 expected) = e^-10 ≈ 5e-5.
# Daily seasonality needs two full days; weekly needs policy.capacity.min_history_days (two weeks).
DAILY_MIN_HISTORY_DAYS = 2.0
SUITE_NAME = "inferops-history"


class DataQualityError(ValueError):
    """A history that failed validation; `.report` holds every check and where the report was written."""

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Gap:
    """A stretch of missing or outage windows."""

    kind: Literal["missing", "zero_run"]
    start: str
    end: str
    windows: int


@dataclass
class ValidationReport:
    """Everything validation found; `verdict` is pass | masked | stop | fail."""

    source: str
    rows: int
    freq_s: int | None
    history_days: float
    required_days: float
    seasonalities: list[str]
    gap_policy: str
    checks: list[Decision] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    verdict: str = "pass"
    reason: str = ""
    report_path: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)  # how the source's columns became the series

    @property
    def zero_windows(self) -> int:
        return sum(g.windows for g in self.gaps if g.kind == "zero_run")

    @property
    def missing_windows(self) -> int:
        return sum(g.windows for g in self.gaps if g.kind == "missing")

    @property
    def failed(self) -> list[Decision]:
        return [c for c in self.checks if c.passed is False]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["zero_windows"] = self.zero_windows
        out["missing_windows"] = self.missing_windows
        return out


def _severity(check: Decision) -> str:
    return str(check.extra["severity"])


def required_history_days(seasonalities: list[str] | tuple[str, ...], policy: Capacity) -> float:
    """Days of history the asked-for seasonalities need (weekly: the policy's min_history_days)."""
    needs = {"daily": DAILY_MIN_HISTORY_DAYS, "weekly": policy.min_history_days}
    unknown = [s for s in seasonalities if s not in needs]
    if unknown:
        raise ValueError(f"unknown seasonality {unknown}; use daily and/or weekly")
    return max((needs[s] for s in seasonalities), default=0.0)


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Parse timestamps to naive UTC; anything unparsable becomes NaT (reported, never dropped silently)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        parsed = pd.to_datetime(values.astype("string"), errors="coerce", utc=True, format="mixed")
    return parsed.dt.tz_localize(None)


def infer_freq_s(ts: pd.Series) -> int | None:
    """The most common positive step between consecutive timestamps, in seconds."""
    steps = ts.dropna().diff().dt.total_seconds()
    steps = steps[steps > 0]
    if steps.empty:
        return None
    return int(round(float(steps.mode().iloc[0])))


def derive_frame(
    raw: RawHistory, policy: Capacity, freq_s: int | None = None
) -> tuple[pd.DataFrame, int | None]:
    """Add the columns the suite checks: parsed seconds, step regularity, missing windows, zero outages (a zero
    where policy capacity.zero_outage_min_expected_requests were expected)."""
    frame = pd.DataFrame({"ts": parse_timestamps(raw.frame["timestamp"]), "rate_rps": raw.frame["rate_rps"]})
    frame["rate_rps"] = pd.to_numeric(frame["rate_rps"], errors="coerce").astype(float)
    freq_s = freq_s or infer_freq_s(frame["ts"])
    epoch = pd.Timestamp("1970-01-01")
    frame["ts_s"] = (frame["ts"] - epoch).dt.total_seconds()
    step = frame["ts_s"].diff()
    step_freq = float(freq_s or 1)
    ratio = step / step_freq
    is_multiple = (ratio > 0) & np.isclose(ratio, ratio.round())
    frame["step_multiple"] = np.where(step.isna() | (step <= 0) | is_multiple, 1, 0)
    frame["missing_after"] = np.where(is_multiple, ratio.round() - 1, 0).astype(int)
    frame["span_s"] = frame["ts_s"] - frame["ts_s"].min() + step_freq
    # Local level from a day of neighbours, ignoring zeros, to tell an outage from a quiet night.
    day_rows = max(1, int(86400 / step_freq))
    level = (
        frame["rate_rps"].where(frame["rate_rps"] > 0).rolling(day_rows, center=True, min_periods=1).median()
    )
    expected = level.fillna(0.0) * step_freq
    frame["zero_outage"] = (
        (frame["rate_rps"] == 0) & (expected >= policy.zero_outage_min_expected_requests)
    ).astype(int)
    return frame, freq_s


def _builtin_expectations(required_s: float) -> list[tuple[str, Severity, Any]]:
    import great_expectations as gx

    e = gx.expectations
    return [
        ("not_empty", "fatal", e.ExpectTableRowCountToBeBetween(min_value=1)),
        ("timestamps_parse", "fatal", e.ExpectColumnValuesToNotBeNull(column="ts")),
        ("rates_numeric", "fatal", e.ExpectColumnValuesToNotBeNull(column="rate_rps")),
        ("timestamps_increase", "fatal", e.ExpectColumnValuesToBeIncreasing(column="ts_s")),
        ("no_duplicates", "fatal", e.ExpectColumnValuesToBeUnique(column="ts_s")),
        ("rates_non_negative", "fatal", e.ExpectColumnValuesToBeBetween(column="rate_rps", min_value=0)),
        ("regular_frequency", "fatal", e.ExpectColumnValuesToBeInSet(column="step_multiple", value_set=[1])),
        ("no_missing_windows", "gap", e.ExpectColumnValuesToBeInSet(column="missing_after", value_set=[0])),
        ("no_zero_outages", "gap", e.ExpectColumnValuesToBeInSet(column="zero_outage", value_set=[0])),
        ("enough_history", "fatal", e.ExpectColumnMaxToBeBetween(column="span_s", min_value=required_s)),
    ]


def load_extra_expectations(suite_file: str | Path) -> list[Any]:
    """User expectations from JSON: a GX suite (`{"expectations": [...]}`) or a list of `{type, kwargs, meta}`."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    path = Path(suite_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"expectation suite file {path} cannot be read as JSON: {exc}") from None
    items = data.get("expectations", []) if isinstance(data, dict) else data
    out = []
    for i, item in enumerate(items):
        try:
            config = ExpectationConfiguration(
                type=item["type"], kwargs=item.get("kwargs", {}), meta=item.get("meta") or {}
            )
            out.append(config.to_domain_obj())
        except Exception as exc:  # GX raises many kinds here; the user needs the item and the cause
            raise ValueError(
                f"expectation #{i} in {path} is not a valid GX expectation ({item!r}): {exc}"
            ) from None
    return out


def run_suite(frame: pd.DataFrame, expectations: list[Any]) -> list[Any]:
    """Validate `frame` against `expectations` in an ephemeral GX context; return GX results in order."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        context.data_sources.add_pandas("history")
        .add_dataframe_asset("rates")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME))
    for expectation in expectations:
        suite.add_expectation(expectation)
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE", "partial_unexpected_count": 5})
    by_id = {r.expectation_config.id: r for r in result.results if r.expectation_config is not None}
    return [by_id[e.id] for e in suite.expectations]


def _rules(outage_min: float) -> dict[str, str]:
    """The built-in checks' thresholds as people read them (`outage_min`: the policy's outage floor)."""
    return {
        "not_empty": "at least 1 row",
        "timestamps_parse": "every timestamp parses",
        "rates_numeric": "every rate is a number",
        "timestamps_increase": "timestamps non-decreasing",
        "no_duplicates": "no timestamp twice",
        "rates_non_negative": "rate_rps >= 0",
        "regular_frequency": "every step a multiple of the window",
        "no_missing_windows": "no missing windows",
        "no_zero_outages": f"no zero window where >= {outage_min:g} requests were expected",
    }


_LOCATED = {
    "timestamps_increase",
    "no_duplicates",
    "regular_frequency",
    "no_missing_windows",
    "no_zero_outages",
}


def _check(
    name: str, severity: Severity, res: Any, frame: pd.DataFrame, required_days: float, outage_min: float
) -> Decision:
    info = res.result or {}
    success = bool(res.success)
    rules = _rules(outage_min)
    exp_type = res.expectation_config.type
    if name == "enough_history":
        observed_days = (info.get("observed_value") or 0.0) / 86400.0
        threshold, observed = f">= {required_days:g} days", f"{observed_days:.2f} days"
        reason = (
            "long enough"
            if success
            else "history shorter than the seasonality needs; collect more or ask for less seasonality"
        )
    elif name == "not_empty":
        threshold, observed = rules[name], f"{info.get('observed_value', len(frame))} rows"
        reason = "has rows" if success else "no rows to plan on"
    else:
        threshold = rules.get(name, json.dumps(res.expectation_config.kwargs, default=str))
        count = int(info.get("unexpected_count") or 0)
        if name == "no_missing_windows" and not success:
            count = int(frame["missing_after"].sum())
        sample = info.get("partial_unexpected_list") or []
        index = [i for i in (info.get("unexpected_index_list") or [])[:3] if i in frame.index]
        if name in {"timestamps_parse", "rates_numeric"} and not success:
            # The values are nulls after parsing; the row numbers are what a person can act on.
            sample = [f"row {i}" for i in index]
        elif name in _LOCATED and not success:
            sample = [str(frame.at[i, "ts"]) for i in index]
        observed = f"{count} offending" + (f" (e.g. {sample[:5]})" if sample else "")
        reason = "ok" if success else f"{count} value(s) break '{threshold}'"
        if exp_type and name not in rules:
            reason = "ok" if success else f"user expectation {exp_type} failed"
    return Decision(
        name, threshold, observed, success, reason, {"severity": severity, "expectation": exp_type}
    )


def find_gaps(frame: pd.DataFrame, freq_s: int | None) -> list[Gap]:
    """Missing windows and runs of outage zeros, each with start, end and length."""
    gaps: list[Gap] = []
    if freq_s is None or frame.empty:
        return gaps
    step = pd.Timedelta(seconds=freq_s)
    for _, row in frame[frame["missing_after"] > 0].iterrows():
        n = int(row["missing_after"])
        start = row["ts"] + step
        gaps.append(Gap("missing", str(start), str(start + step * (n - 1)), n))
    zero = frame["zero_outage"].to_numpy() == 1
    run_id = np.cumsum(np.r_[True, zero[1:] != zero[:-1]])
    for rid in np.unique(run_id[zero]):
        rows = frame["ts"][run_id == rid]
        gaps.append(Gap("zero_run", str(rows.iloc[0]), str(rows.iloc[-1]), len(rows)))
    return sorted(gaps, key=lambda g: g.start)


def _report_stem(source: str) -> str:
    """The report file's name: the slug of the source's file name (60 characters at most), or "history"."""
    name = Path(source.split(":", 1)[-1]).name or source
    return slug(name)[:60] if re.search(r"[a-z0-9]", name.lower()) else "history"


def write_report(report: ValidationReport, report_dir: str | Path | None = None) -> Path:
    """Write the report as JSON and markdown under the data dir; return the JSON path."""
    folder = Path(report_dir) if report_dir else get_settings().data_dir / "capacity" / "validation"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{_report_stem(report.source)}-{stamp}.json"
    report.report_path = str(path)
    write_json_atomic(path, report.to_dict())
    path.with_suffix(".md").write_text(render_validation_markdown(report), encoding="utf-8")
    return path


def validate_history(
    raw: RawHistory,
    policy: Capacity,
    *,
    seasonalities: tuple[str, ...] = ("daily", "weekly"),
    extra_expectations: list[Any] | None = None,
    suite_file: str | Path | None = None,
    report_dir: str | Path | None = None,
) -> ValidationReport:
    """Run the suite (built-in + the user's), find gaps, set the verdict, write the report. Never raises on bad data."""
    required_days = required_history_days(seasonalities, policy)
    frame, freq_s = derive_frame(raw, policy)
    expectations = _builtin_expectations(required_days * 86400.0)
    extras = list(extra_expectations or []) + (load_extra_expectations(suite_file) if suite_file else [])
    for i, extra in enumerate(extras):
        meta = extra.meta or {}
        severity: Severity = "gap" if meta.get("severity") == "gap" else "fatal"
        expectations.append((str(meta.get("name", f"user_{i}_{extra.expectation_type}")), severity, extra))
    results = run_suite(frame, [e for _, _, e in expectations])
    outage_min = policy.zero_outage_min_expected_requests
    checks = [
        _check(name, sev, res, frame, required_days, outage_min)
        for (name, sev, _), res in zip(expectations, results, strict=True)
    ]
    span = float(frame["span_s"].max()) / 86400.0 if len(frame) and frame["ts_s"].notna().any() else 0.0
    # Gaps are only located on a readable, ordered, regular series: the first seven built-in checks passed.
    structure_broken = any(_severity(c) == "fatal" and not c.passed for c in checks[:7])
    report = ValidationReport(
        source=raw.source,
        rows=len(frame),
        freq_s=freq_s,
        history_days=round(span, 4),
        required_days=required_days,
        seasonalities=list(seasonalities),
        gap_policy=policy.gap_policy,
        checks=checks,
        gaps=[] if structure_broken else find_gaps(frame, freq_s),
        mapping=dict(raw.mapping),
    )
    fatal = [c for c in report.failed if _severity(c) == "fatal"]
    gap_checks = [c for c in report.failed if _severity(c) == "gap"]
    if fatal:
        report.verdict = "fail"
        report.reason = "; ".join(f"{c.name}: {c.observed} ({c.reason})" for c in fatal)
    elif gap_checks and policy.gap_policy == "stop":
        report.verdict = "stop"
        report.reason = (
            f"{report.missing_windows} missing and {report.zero_windows} outage windows; gap_policy=stop "
            "(set capacity.gap_policy: mask to plan on the rest)"
        )
    elif gap_checks:
        report.verdict = "masked"
        report.reason = (
            f"{report.missing_windows} missing and {report.zero_windows} outage windows masked "
            f"(gap_policy=mask): left out of the fit, not treated as zero demand"
        )
    else:
        report.reason = "every check passed"
    write_report(report, report_dir)
    return report


def failed_load_report(
    source: str, error: Exception, policy: Capacity, report_dir: str | Path | None = None
) -> ValidationReport:
    """A report for a source that could not even be read (empty, missing, wrong columns); written to disk."""
    report = ValidationReport(source, 0, None, 0.0, 0.0, [], policy.gap_policy)
    readable = Decision(
        "readable",
        "source reads as timestamps and rates",
        "unreadable",
        False,
        str(error),
        {"severity": "fatal", "expectation": "load"},
    )
    report.checks = [readable]
    report.verdict, report.reason = "fail", str(error)
    write_report(report, report_dir)
    return report


def enforce(report: ValidationReport) -> None:
    """Raise DataQualityError unless the report lets a plan be built (pass or masked)."""
    if report.verdict in {"pass", "masked"}:
        return
    raise DataQualityError(
        f"history {report.source} failed validation ({report.verdict}): {report.reason}. "
        f"Full report: {report.report_path}",
        report,
    )


def prepare_series(raw: RawHistory, report: ValidationReport, policy: Capacity) -> pd.Series:
    """A regular series at the validated frequency; missing and outage windows are NaN (masked), never zeros."""
    enforce(report)
    frame, freq_s = derive_frame(raw, policy, report.freq_s)
    assert freq_s is not None  # a passing report always has a frequency
    values = frame["rate_rps"].where(frame["zero_outage"] == 0)
    series = pd.Series(values.to_numpy(), index=pd.DatetimeIndex(frame["ts"]), name="rate_rps")
    full = pd.date_range(series.index.min(), series.index.max(), freq=f"{freq_s}s")
    return series.reindex(full)


def render_validation_markdown(report: ValidationReport) -> str:
    """The validation report as markdown: verdict, every check, and the gaps found."""
    lines = [
        f"# History validation: {report.verdict.upper()}",
        "",
        f"- source: `{report.source}`",
        f"- rows: {report.rows}, window: {report.freq_s} s, span: {report.history_days:.2f} days "
        f"(needs {report.required_days:g} for {', '.join(report.seasonalities) or 'n/a'})",
        f"- gap policy: {report.gap_policy}; missing windows: {report.missing_windows}; outage (zero) windows: {report.zero_windows}",
        f"- verdict: **{report.verdict}** — {report.reason}",
        "",
        decisions_markdown(report.checks),
    ]
    if report.mapping:
        lines += ["", "## Column mapping", ""]
        lines += [f"- {what}: {how}" for what, how in report.mapping.items()]
    if report.gaps:
        lines += ["", markdown_table([asdict(g) for g in report.gaps])]
    return "\n".join(lines) + "\n"
