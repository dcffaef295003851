"""Forecast metrics, backtest winner, and interval coverage on a real trace's held-out tail after calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.capacity import data_quality as dq
from tasks.capacity import forecasting as fc
from tasks.capacity.history import load_file
from tasks.policy import default_policy
from tests.shared_data import shared_file

LEVELS = [0.8, 0.9, 0.95]
POLICY = default_policy().capacity


def test_metrics_on_known_values() -> None:
    actual = np.array([100.0, 200.0, np.nan])
    assert fc.smape(actual, np.array([100.0, 100.0, 5.0])) == pytest.approx((0 + 2 * 100 / 300) / 2)
    assert fc.coverage(actual, np.array([90.0, 210.0, 0.0]), np.array([110.0, 220.0, 1.0])) == 0.5
    assert fc.conformal_factor(np.linspace(0, 2, 101), 0.9) == pytest.approx(1.82, abs=0.03)


def test_seasonal_naive_repeats_last_season() -> None:
    idx = pd.date_range("2024-01-01", periods=6 * 24 * 3, freq="600s")
    series = pd.Series(np.tile(np.arange(144, dtype=float), 3), index=idx)
    model = fc.SeasonalNaive(LEVELS, "daily").fit(series)
    out = model.predict(fc.future_index(series, 1))
    assert np.array_equal(out.yhat, np.arange(144, dtype=float))


def test_calibration_scales_half_widths() -> None:
    idx = pd.date_range("2024-01-01", periods=4, freq="600s")
    f = fc.Forecast(idx, np.full(4, 10.0), {0.9: np.full(4, 9.0)}, {0.9: np.full(4, 11.0)}, "x")
    wide = f.scaled({0.9: 3.0})
    assert wide.upper[0.9][0] == 13.0 and wide.lower[0.9][0] == 7.0 and wide.yhat[0] == 10.0


@pytest.mark.parametrize(
    "trace", ["servegen_m-mid_agg_rate_10min.csv", "servegen_m-small_agg_rate_10min.csv"]
)
def test_holdout_coverage_within_10_points_after_calibration(trace: str, tmp_path: Path) -> None:
    raw = load_file(shared_file("traces", trace))
    series = dq.prepare_series(raw, dq.validate_history(raw, POLICY, report_dir=tmp_path), POLICY)
    hold = 2 * 144
    train, test = series.iloc[:-hold], series.iloc[-hold:]
    planning = fc.planning_forecast(train, pd.DatetimeIndex(test.index), POLICY, levels=LEVELS)
    actual = test.to_numpy()
    report = {}
    for level in LEVELS:
        raw_cov = fc.coverage(actual, planning.raw_forecast.lower[level], planning.raw_forecast.upper[level])
        cal_cov = fc.coverage(actual, planning.forecast.lower[level], planning.forecast.upper[level])
        report[level] = (round(raw_cov, 3), round(cal_cov, 3))
        assert abs(cal_cov - level) <= 0.10, (trace, planning.forecaster, report)
    print(f"{trace}: {planning.backtest.reason}; coverage raw/calibrated {report}")
    assert planning.forecaster == planning.backtest.winner
    winner = planning.backtest.candidates[planning.forecaster]
    assert all(c.smape >= winner.smape for c in planning.backtest.candidates.values())


def test_trend_measures_on_constructed_series() -> None:
    idx = pd.date_range("2024-01-01", periods=6 * 24 * 20, freq="600s")
    days = np.arange(len(idx)) / 144
    flat = pd.Series(100.0, index=idx)
    growing = pd.Series(100.0 * (1 + 0.01 * days), index=idx)
    assert fc.volatility(flat) == pytest.approx(0.0, abs=1e-9)
    assert fc.observed_growth(flat, 90) == pytest.approx(0.0, abs=1e-9)
    assert fc.observed_growth(growing, 90) == pytest.approx(0.9 / 1.195, rel=0.02)
    bursty = flat.copy()
    bursty.iloc[::6] = 300.0  # one window in six at 3x: max/mean = 300 / (800/6)
    assert fc.burstiness(bursty, POLICY.burst_quantile) == pytest.approx(300 / (800 / 6), rel=1e-6)


def test_backtest_rejects_too_short_history() -> None:
    idx = pd.date_range("2024-01-01", periods=144, freq="600s")
    with pytest.raises(fc.ForecastError, match="collect more history"):
        fc.backtest(pd.Series(1.0, index=idx), POLICY, levels=LEVELS)


def test_split_holdout_takes_the_tail_in_whole_windows() -> None:
    idx = pd.date_range("2024-01-01", periods=6 * 24 * 3, freq="600s")
    series = pd.Series(np.arange(len(idx), dtype=float), index=idx)
    fit, holdout = fc.split_holdout(series, 1.0)
    assert (len(fit), len(holdout)) == (6 * 24 * 2, 6 * 24)
    assert fit.index[-1] + pd.Timedelta(seconds=600) == holdout.index[0] and holdout.index[-1] == idx[-1]
    fit, holdout = fc.split_holdout(series, 0.0)
    assert len(fit) == len(series) and holdout.empty
