"""Forecast metrics, cross-validation ranking, the ensemble the plan uses, and on real traces its error against
the best seasonal naive and the coverage of its conformal bands on the held-out tail."""

from __future__ import annotations

import dataclasses
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
    # split conformal on 0, 0.02, ..., 2: the ceil(102 * 0.9) = 92nd smallest score
    assert fc.conformal_quantile(np.linspace(0, 2, 101), 0.9) == pytest.approx(1.82)
    with pytest.raises(fc.ForecastError, match="no cross-validation errors"):
        fc.conformal_quantile(np.array([np.nan]), 0.9)


def test_seasonal_naive_repeats_last_season_and_bands_are_relative() -> None:
    idx = pd.date_range("2024-01-01", periods=6 * 24 * 3, freq="600s")
    series = pd.Series(np.tile(np.arange(1, 145, dtype=float), 3), index=idx)
    index = fc.future_index(series, 1)
    out = fc.forecast_members(series, ["seasonal-naive-daily"], index)
    assert np.array_equal(out["seasonal-naive-daily"].to_numpy(), np.arange(1, 145, dtype=float))
    banded = fc.banded(index, out["seasonal-naive-daily"].to_numpy(), {0.9: 0.5}, "x")
    assert banded.upper[0.9][9] == 15.0 and banded.lower[0.9][9] == 5.0 and banded.yhat[9] == 10.0
    with pytest.raises(fc.ForecastError, match="must follow the history"):
        fc.forecast_members(series, ["seasonal-naive-daily"], pd.DatetimeIndex(series.index[-10:]))


def test_cross_validation_ranks_the_model_that_fits_and_the_plan_uses_the_best_two() -> None:
    """A daily cycle with a weekend dip: the weekly seasonal naive repeats it exactly, so it ranks first; the
    plan forecasts with the mean of the two lowest cross-validated sMAPE."""
    idx = pd.date_range("2024-01-01", periods=6 * 24 * 16, freq="600s")
    daily = 100.0 + 40.0 * np.sin(np.arange(len(idx)) * 2 * np.pi / 144)
    weekend = np.where(idx.dayofweek >= 5, 0.5, 1.0)
    series = pd.Series(daily * weekend, index=idx)
    series.iloc[500:520] = np.nan  # a masked gap: interpolated to fit, left out of the scores
    # every forecaster of the policy takes part once the first fold keeps a whole week
    assert fc.candidate_names(series, 2.0, POLICY.backtest_folds, POLICY) == POLICY.forecasters
    # the cheap ones are enough to show the ranking and the ensemble
    cheap = ["seasonal-naive-weekly", "seasonal-naive-daily", "mstl-daily", "prophet"]
    result = fc.backtest(series, POLICY, levels=LEVELS, candidates=cheap)
    ranked = sorted((c for c in result.candidates.values() if not c.members), key=lambda c: c.smape)
    # exact but where a fold repeats the interpolated gap of a week before
    assert ranked[0].name == "seasonal-naive-weekly" and ranked[0].smape < 1e-3
    assert result.candidates["seasonal-naive-daily"].smape > 0.05  # the weekend breaks the daily repeat
    assert result.winner == fc.ensemble_name((ranked[0].name, ranked[1].name))
    assert result.members == (ranked[0].name, ranked[1].name) and result.folds == POLICY.backtest_folds
    assert set(result.half_widths) == set(LEVELS)
    assert result.half_widths[0.8] <= result.half_widths[0.9] <= result.half_widths[0.95]
    assert set(cheap) < set(result.candidates)


def test_fold_coverage_leaves_each_fold_out_of_its_own_calibration() -> None:
    """Fold A's scores all 0.1, fold B's all 0.5: calibrated on B, A's windows are all inside (coverage 1.0);
    calibrated on A, none of B's are (0.0). The mean is what a single window's coverage moves around."""
    cutoffs = np.repeat(pd.to_datetime(["2024-01-01", "2024-01-02"]), 10)
    calibration = pd.DataFrame({"cutoff": cutoffs, "score": np.r_[np.full(10, 0.1), np.full(10, 0.5)]})
    result = fc.BacktestResult({}, "x", None, 0.0, 1.0, 2, calibration=calibration)
    assert list(result.fold_coverage(0.8).values()) == [1.0, 0.0]


@pytest.mark.parametrize(
    "trace", ["servegen_m-mid_agg_rate_10min.csv", "servegen_m-small_agg_rate_10min.csv"]
)
def test_on_real_traces_the_plan_forecast_beats_the_best_seasonal_naive(trace: str, tmp_path: Path) -> None:
    raw = load_file(shared_file("traces", trace))
    series = dq.prepare_series(raw, dq.validate_history(raw, POLICY, report_dir=tmp_path), POLICY)
    train, test = fc.split_holdout(series, 2.0)
    index = pd.DatetimeIndex(test.index)
    planning = fc.planning_forecast(train, index, POLICY, levels=LEVELS)
    check = fc.check_holdout(train, test, planning.forecast, POLICY.coverage_tolerance)
    assert check is not None and check.windows == int(test.notna().sum())
    # the check scores against both seasonal naives, fit on the same history
    naive = fc.forecast_members(train, ["seasonal-naive-daily", "seasonal-naive-weekly"], index)
    assert check.naive_smape == min(fc.smape(test.to_numpy(), naive[c].to_numpy()) for c in naive.columns)
    print(f"{trace}: {planning.backtest.reason}; {check.sentence()}")
    assert check.smape <= check.naive_smape, (planning.backtest.reason, check.sentence())
    assert abs(check.coverage[0.95] - 0.95) <= 0.05, check.sentence()
    assert planning.forecaster == planning.backtest.winner and planning.forecaster.startswith("ensemble(")


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
    idx = pd.date_range("2024-01-01", periods=144 * 3, freq="600s")
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


def daily_cycle(days: int, seed: int = 0) -> pd.Series:
    """A daily sine around 100 req/s with 2% noise, 10-minute windows."""
    idx = pd.date_range("2024-01-01", periods=144 * days, freq="600s")
    rng = np.random.default_rng(seed)
    values = 100.0 + 40.0 * np.sin(np.arange(len(idx)) * 2 * np.pi / 144)
    return pd.Series(values * (1 + 0.02 * rng.standard_normal(len(idx))), index=idx)


def test_the_holdout_check_scores_the_forecast_against_yesterday_repeated() -> None:
    """Eight days: the daily seasonal naive is the only naive that has a whole season to repeat, so the check
    compares the plan's forecast with the fit's last day, repeated over the two held-out days."""
    series = daily_cycle(8)
    analysis = fc.analyse_history(series, POLICY, holdout_days=2.0)
    check = analysis.check
    assert check is not None and check.windows == 288 and check.naive == "seasonal-naive-daily"
    yesterday = np.tile(analysis.fit.to_numpy()[-144:], 2)
    assert check.naive_smape == pytest.approx(fc.smape(analysis.holdout.to_numpy(), yesterday))
    assert set(check.coverage) == set(POLICY.confidence_levels)
    assert check.to_dict()["coverage"].keys() == {"80", "90", "95"}


def test_a_holdout_at_twice_the_level_is_reported_as_under_covered() -> None:
    """Demand doubles on the held-out days: the bands, calibrated on days like the history, hold almost none of
    them, and the sentence says so and what to do."""
    series = daily_cycle(10)
    series.iloc[-288:] *= 2.0
    check = fc.analyse_history(series, POLICY, holdout_days=2.0).check
    assert check is not None
    assert check.coverage[0.95] < 0.2 and check.gain < 0.2
    assert set(check.off()) == set(POLICY.confidence_levels) and all(d < 0 for d in check.off().values())
    assert "80/90/95% bands under-cover" in check.sentence() and "higher confidence" in check.sentence()


def test_the_holdout_check_says_which_band_is_off_and_which_way() -> None:
    check = fc.HoldoutCheck(288, 0.2, "seasonal-naive-weekly", 0.25, {0.8: 0.92, 0.9: 0.93, 0.95: 0.8}, 0.05)
    assert check.gain == pytest.approx(0.2)
    assert check.off() == pytest.approx({0.8: 0.12, 0.95: -0.15})
    sentence = check.sentence()
    assert "the 95% band under-covers (by 15.0 points)" in sentence
    assert "the 80% band over-covers (by 12.0 points)" in sentence
    calm = fc.HoldoutCheck(288, 0.2, "seasonal-naive-daily", 0.25, {0.8: 0.82, 0.9: 0.88}, 0.05)
    assert calm.off() == {} and calm.sentence().endswith("each within 5 points of its level")


def test_nothing_held_out_or_only_gaps_held_out_gives_no_check() -> None:
    series = daily_cycle(8)
    assert fc.analyse_history(series, POLICY, holdout_days=0.0).check is None
    fit, holdout = fc.split_holdout(series, 1.0)
    planning = fc.planning_forecast(fit, pd.DatetimeIndex(holdout.index), POLICY)
    assert fc.check_holdout(fit, holdout * np.nan, planning.forecast, 0.05) is None
    with pytest.raises(fc.ForecastError, match="must follow the fit"):
        fc.check_holdout(fit.iloc[:-1], holdout, planning.forecast, 0.05)
    with pytest.raises(fc.ForecastError, match="shorter than a day"):
        fc.check_holdout(fit.iloc[-100:], holdout, planning.forecast, 0.05)
    later = dataclasses.replace(planning.forecast, index=planning.forecast.index + pd.Timedelta(minutes=10))
    with pytest.raises(fc.ForecastError, match="the forecast must start at it"):
        fc.check_holdout(fit, holdout, later, 0.05)
