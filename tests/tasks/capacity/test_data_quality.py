"""Each expectation fires on data built to break it; the real traces' outage runs are found; reports are written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.capacity import data_quality as dq
from tasks.capacity.history import HistoryError, RawHistory, load_file
from tasks.capacity.synthetic import synthetic_history
from tasks.policy import default_policy
from tests.shared_data import shared_file

POLICY = default_policy().capacity


def _clean(days: float = 15, freq_s: int = 600) -> pd.DataFrame:
    n = int(days * 86400 / freq_s)
    ts = pd.date_range("2024-01-01", periods=n, freq=f"{freq_s}s")
    rate = 50 + 20 * np.sin(np.arange(n) / n * 40)
    return pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "rate_rps": rate})


def _failed(report: dq.ValidationReport) -> set[str]:
    return {c.name for c in report.failed}


def test_clean_history_passes(tmp_path: Path) -> None:
    report = dq.validate_history(RawHistory(_clean(), "clean"), POLICY, report_dir=tmp_path)
    assert report.verdict == "pass", report.reason
    assert (
        Path(report.report_path or "").exists() and Path(report.report_path or "").with_suffix(".md").exists()
    )


@pytest.mark.parametrize(
    ("name", "breaker", "verdict"),
    [
        (
            "timestamps_parse",
            lambda f: f.assign(timestamp=f["timestamp"].where(f.index != 10, "not-a-time")),
            "fail",
        ),
        ("rates_numeric", lambda f: f.assign(rate_rps=f["rate_rps"].where(f.index != 5, np.nan)), "fail"),
        (
            "timestamps_increase",
            lambda f: f.iloc[[*range(0, 100), 101, 100, *range(102, len(f))]].reset_index(drop=True),
            "fail",
        ),
        ("no_duplicates", lambda f: pd.concat([f.iloc[:50], f.iloc[49:]]).reset_index(drop=True), "fail"),
        ("rates_non_negative", lambda f: f.assign(rate_rps=f["rate_rps"].where(f.index != 7, -3.0)), "fail"),
        (
            "regular_frequency",
            lambda f: f.assign(
                timestamp=pd.to_datetime(f["timestamp"])
                + pd.to_timedelta(np.where(f.index == 30, 17, 0), unit="s")
            ),
            "fail",
        ),
        ("no_missing_windows", lambda f: f.drop(index=range(200, 206)).reset_index(drop=True), "masked"),
        (
            "no_zero_outages",
            lambda f: f.assign(rate_rps=f["rate_rps"].where(~f.index.isin(range(300, 304)), 0.0)),
            "masked",
        ),
        ("enough_history", lambda f: f.iloc[: 6 * 24 * 5], "fail"),
    ],
)
def test_each_expectation_fires(name: str, breaker, verdict: str, tmp_path: Path) -> None:
    report = dq.validate_history(RawHistory(breaker(_clean()), f"broken-{name}"), POLICY, report_dir=tmp_path)
    assert name in _failed(report), [c for c in report.checks if c.name == name]
    assert report.verdict == verdict
    assert Path(report.report_path or "").exists()


def test_gap_windows_counted_and_masked_not_zero(tmp_path: Path) -> None:
    frame = _clean().drop(index=range(200, 206)).reset_index(drop=True)
    frame.loc[300:303, "rate_rps"] = 0.0
    raw = RawHistory(frame, "gaps")
    report = dq.validate_history(raw, POLICY, report_dir=tmp_path)
    assert (report.missing_windows, report.zero_windows) == (6, 4)
    series = dq.prepare_series(raw, report, POLICY)
    assert series.isna().sum() == 10 and (series.dropna() > 0).all()


def test_gap_policy_stop_raises_after_writing_report(tmp_path: Path) -> None:
    stop = POLICY.model_copy(update={"gap_policy": "stop"})
    frame = _clean().drop(index=range(200, 206)).reset_index(drop=True)
    report = dq.validate_history(RawHistory(frame, "gaps"), policy=stop, report_dir=tmp_path)
    assert report.verdict == "stop"
    with pytest.raises(dq.DataQualityError, match="gap_policy=stop") as err:
        dq.enforce(report)
    assert Path(err.value.report.report_path or "").exists()


def test_quiet_night_zero_is_not_an_outage(tmp_path: Path) -> None:
    frame = _clean()
    frame["rate_rps"] = 0.002  # ~1 request per window: a zero is plausible idle time
    frame.loc[100:103, "rate_rps"] = 0.0
    report = dq.validate_history(RawHistory(frame, "quiet"), POLICY, report_dir=tmp_path)
    assert report.zero_windows == 0


def test_user_suite_file_extends_the_suite(tmp_path: Path) -> None:
    suite = tmp_path / "suite.json"
    suite.write_text(
        json.dumps(
            {
                "expectations": [
                    {
                        "type": "expect_column_max_to_be_between",
                        "kwargs": {"column": "rate_rps", "max_value": 10},
                        "meta": {"name": "rate_cap"},
                    }
                ]
            }
        )
    )
    report = dq.validate_history(RawHistory(_clean(), "clean"), POLICY, suite_file=suite, report_dir=tmp_path)
    assert "rate_cap" in _failed(report) and report.verdict == "fail"


def test_bad_inputs_have_clear_errors_and_reports(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(HistoryError, match="empty") as err:
        load_file(empty)
    report = dq.failed_load_report(str(empty), err.value, POLICY, report_dir=tmp_path)
    assert Path(report.report_path or "").exists() and report.verdict == "fail"

    short = tmp_path / "short.csv"
    _clean(days=3).to_csv(short, index=False)
    report = dq.validate_history(load_file(short), POLICY, report_dir=tmp_path)
    with pytest.raises(dq.DataQualityError, match="enough_history.*shorter than the seasonality"):
        dq.enforce(report)


@pytest.mark.parametrize(
    ("trace", "zeros"),
    [("servegen_m-mid_agg_rate_10min.csv", 84), ("servegen_m-small_agg_rate_10min.csv", 37)],
)
def test_servegen_zero_runs_found(trace: str, zeros: int, tmp_path: Path) -> None:
    raw = load_file(shared_file("traces", trace))
    report = dq.validate_history(raw, POLICY, report_dir=tmp_path)
    actual_zeros = int((raw.frame["rate_rps"] == 0).sum())
    assert report.zero_windows == actual_zeros == zeros
    assert report.verdict == "masked" and report.missing_windows == 0


def test_synthetic_outage_found(tmp_path: Path) -> None:
    report = dq.validate_history(RawHistory(synthetic_history(), "synthetic"), POLICY, report_dir=tmp_path)
    assert report.verdict == "masked" and report.zero_windows == 5


def test_report_files_are_named_after_the_source_file(tmp_path: Path) -> None:
    report = dq.failed_load_report(
        "file:/data/My Trace.CSV", ValueError("unreadable"), POLICY, report_dir=tmp_path
    )
    assert Path(report.report_path or "").name.startswith("my-trace-csv-")
    report = dq.failed_load_report(
        "file:/data/" + "a" * 80, ValueError("unreadable"), POLICY, report_dir=tmp_path
    )
    assert Path(report.report_path or "").name.startswith("a" * 60 + "-2")
    report = dq.failed_load_report("prometheus:*", ValueError("unreadable"), POLICY, report_dir=tmp_path)
    assert Path(report.report_path or "").name.startswith("history-")
