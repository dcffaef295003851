"""Demand forecasts: Prophet and seasonal-naive, a rolling-origin backtest, conformal interval calibration."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from tasks.policy import Capacity

# Backtest shape (policy capacity.backtest_*): few, fast Prophet fits (2-core machines). Four two-day folds span
# eight days, so the backtest always sees a weekend; fewer folds on short histories.
PROPHET_SAMPLES = 300
# Multiplicative seasonality measured worse on the ServeGen traces.
PROPHET_SEASONALITY_MODE: Literal["additive", "multiplicative"] = "additive"
# Calibration widens a level's interval only when its backtest coverage falls short of nominal by more than
# policy capacity.calibration_tolerance; never narrows it (over-covering is the safe side for capacity).
MIN_HALF_WIDTH_SHARE = 0.01
# Short-term burstiness: the policy capacity.burst_quantile (p99) over hours of (max 10-min window / hourly mean).
BURST_PERIOD = "1h"
TREND_TAIL_DAYS = 7.0
SEASON_DAYS = {"daily": 1.0, "weekly": 7.0}

for _noisy in ("cmdstanpy", "prophet"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)
# Prophet logs the missing optional plotly at ERROR on import; we plot with matplotlib.
logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)


class ForecastError(ValueError):
    """A series that cannot be forecast (too short, all gaps)."""


@dataclass
class Forecast:
    """Central forecast and (lower, upper) bounds per confidence level on a time index."""

    index: pd.DatetimeIndex
    yhat: np.ndarray
    lower: dict[float, np.ndarray]
    upper: dict[float, np.ndarray]
    method: str

    def frame(self) -> pd.DataFrame:
        data: dict[str, Any] = {"yhat": self.yhat}
        for level in sorted(self.lower):
            data[f"lower_{level:g}"] = self.lower[level]
            data[f"upper_{level:g}"] = self.upper[level]
        return pd.DataFrame(data, index=self.index)

    def scaled(self, factors: dict[float, float]) -> Forecast:
        """Interval half-widths multiplied per level (conformal calibration); the centre is unchanged."""
        lower, upper = {}, {}
        for level, k in factors.items():
            lower[level] = np.maximum(self.yhat - k * (self.yhat - self.lower[level]), 0.0)
            upper[level] = self.yhat + k * (self.upper[level] - self.yhat)
        return Forecast(self.index, self.yhat, lower, upper, self.method)


class Forecaster(Protocol):
    name: str

    def fit(self, series: pd.Series) -> Forecaster: ...

    def predict(self, index: pd.DatetimeIndex) -> Forecast: ...


def _freq_s(series: pd.Series) -> float:
    index = pd.DatetimeIndex(series.index)
    return float((index[1] - index[0]).total_seconds())


class ProphetForecaster:
    """Prophet with daily and weekly seasonality and a linear growth trend; bounds from predictive samples."""

    name = "prophet"

    def __init__(self, levels: list[float], seasonalities: tuple[str, ...] = ("daily", "weekly")) -> None:
        self.levels = levels
        self.seasonalities = seasonalities
        self._model: Any = None

    def fit(self, series: pd.Series) -> ProphetForecaster:
        from prophet import Prophet

        logging.getLogger("cmdstanpy").disabled = True
        frame = pd.DataFrame({"ds": series.index, "y": series.to_numpy()}).dropna()
        if len(frame) < 2:
            raise ForecastError("Prophet needs at least two non-gap windows")
        model = Prophet(
            growth="linear",
            daily_seasonality="daily" in self.seasonalities,
            weekly_seasonality="weekly" in self.seasonalities,
            yearly_seasonality=False,
            seasonality_mode=PROPHET_SEASONALITY_MODE,
            uncertainty_samples=PROPHET_SAMPLES,
        )
        self._model = model.fit(frame)
        return self

    def predict(self, index: pd.DatetimeIndex) -> Forecast:
        future = pd.DataFrame({"ds": index})
        # One fit gives every level: quantiles of the predictive samples (trend + noise uncertainty).
        np.random.seed(0)
        samples = self._model.predictive_samples(future)["yhat"]
        yhat = np.maximum(self._model.predict(future)["yhat"].to_numpy(), 0.0)
        lower, upper = {}, {}
        for level in self.levels:
            lo, hi = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=1)
            lower[level], upper[level] = np.maximum(lo, 0.0), np.maximum(hi, yhat)
        return Forecast(index, yhat, lower, upper, self.name)


class SeasonalNaive:
    """Each window repeats the last observed value one season earlier; bounds from in-sample seasonal errors."""

    def __init__(self, levels: list[float], season: Literal["daily", "weekly"]) -> None:
        self.levels = levels
        self.season = season
        self.name = f"seasonal-naive-{season}"
        self._profile: np.ndarray | None = None

    def fit(self, series: pd.Series) -> SeasonalNaive:
        freq = _freq_s(series)
        period = int(round(SEASON_DAYS[self.season] * 86400 / freq))
        if len(series) < period:
            raise ForecastError(f"{self.name} needs one full season ({period} windows), got {len(series)}")
        values = series.to_numpy(dtype=float)
        phase = self._phase(pd.DatetimeIndex(series.index), freq, period)
        profile = np.full(period, np.nan)
        for p, v in zip(phase, values, strict=True):
            if not np.isnan(v):
                profile[p] = v  # later windows overwrite: the last observed value per phase
        profile[np.isnan(profile)] = np.nanmean(profile)
        errors = values[period:] - values[:-period]
        errors = errors[~np.isnan(errors)]
        self._errors = errors if errors.size else np.zeros(1)
        self._profile, self._period, self._freq = profile, period, freq
        return self

    @staticmethod
    def _phase(index: pd.DatetimeIndex, freq: float, period: int) -> np.ndarray:
        seconds = (index - pd.Timestamp("1970-01-05")).total_seconds().to_numpy()  # a Monday: weekly phase 0
        return (np.floor(seconds / freq).astype(np.int64)) % period

    def predict(self, index: pd.DatetimeIndex) -> Forecast:
        assert self._profile is not None, "fit() first"
        yhat = self._profile[self._phase(index, self._freq, self._period)]
        lower, upper = {}, {}
        for level in self.levels:
            half = float(np.quantile(np.abs(self._errors), level))
            lower[level] = np.maximum(yhat - half, 0.0)
            upper[level] = yhat + half
        return Forecast(index, yhat, lower, upper, self.name)


def make_forecaster(
    name: str, levels: list[float], seasonalities: tuple[str, ...] = ("daily", "weekly")
) -> Forecaster:
    """A forecaster by name: prophet, seasonal-naive-daily, seasonal-naive-weekly."""
    if name == "prophet":
        return ProphetForecaster(levels, seasonalities)
    if name == "seasonal-naive-daily":
        return SeasonalNaive(levels, "daily")
    if name == "seasonal-naive-weekly":
        return SeasonalNaive(levels, "weekly")
    raise ValueError(
        f"unknown forecaster {name!r}; use prophet, seasonal-naive-daily or seasonal-naive-weekly"
    )


def smape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Symmetric MAPE in [0, 2]; NaN actuals (masked gaps) are skipped."""
    ok = ~np.isnan(actual)
    a, p = actual[ok], predicted[ok]
    denom = np.abs(a) + np.abs(p)
    return float(np.mean(np.where(denom > 0, 2 * np.abs(a - p) / np.where(denom > 0, denom, 1), 0.0)))


def mase_scale(train: pd.Series, season_windows: int) -> float:
    """Mean absolute in-sample seasonal-naive error: MASE's denominator."""
    values = train.to_numpy(dtype=float)
    diffs = np.abs(values[season_windows:] - values[:-season_windows])
    diffs = diffs[~np.isnan(diffs)]
    return float(diffs.mean()) if diffs.size else float("nan")


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of non-gap actuals inside [lower, upper]."""
    ok = ~np.isnan(actual)
    return float(np.mean((actual[ok] >= lower[ok]) & (actual[ok] <= upper[ok]))) if ok.any() else float("nan")


def interval_scores(actual: np.ndarray, forecast: Forecast, level: float) -> np.ndarray:
    """Conformal scores: distance outside the centre in units of the interval's half-width on that side."""
    ok = ~np.isnan(actual)
    y, c = actual[ok], forecast.yhat[ok]
    # A floor on the half-width so a degenerate (zero-width) side cannot blow the factor up.
    floor = np.maximum(MIN_HALF_WIDTH_SHARE * np.abs(c), 1e-9)
    up = np.maximum(forecast.upper[level][ok] - c, floor)
    down = np.maximum(c - forecast.lower[level][ok], floor)
    return np.where(y >= c, (y - c) / up, (c - y) / down)


def conformal_factor(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile of the scores: the width multiplier that covers `level` of them."""
    n = scores.size
    if n == 0:
        return 1.0
    q = min(1.0, math.ceil((n + 1) * level) / n)
    return float(np.quantile(scores, q, method="higher"))


@dataclass
class CandidateScore:
    """One forecaster's backtest: errors, raw and calibrated coverage, and the calibration it needs."""

    name: str
    smape: float
    mase: float
    coverage: dict[float, float]
    factors: dict[float, float]
    calibrated_coverage: dict[float, float]
    folds: int


@dataclass
class BacktestResult:
    """Every candidate's score, the winner and by how much it won."""

    candidates: dict[str, CandidateScore]
    winner: str
    runner_up: str | None
    margin: float  # relative sMAPE improvement of the winner over the runner-up
    horizon_days: float
    folds: int
    reason: str = ""

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for c in self.candidates.values():
            row: dict[str, Any] = {"forecaster": c.name, "smape": round(c.smape, 4), "mase": round(c.mase, 4)}
            for level in sorted(c.coverage):
                row[f"coverage_{level:g}"] = round(c.coverage[level], 3)
                row[f"calibrated_{level:g}"] = round(c.calibrated_coverage[level], 3)
                row[f"factor_{level:g}"] = round(c.factors[level], 3)
            row["winner"] = c.name == self.winner
            rows.append(row)
        return rows


def candidate_names(series: pd.Series, horizon_days: float, folds: int) -> list[str]:
    """Forecasters the history can support: weekly naive only when every fold keeps a full week to learn from."""
    span_days = len(series) * _freq_s(series) / 86400.0
    names = ["prophet", "seasonal-naive-daily"]
    if span_days - folds * horizon_days >= SEASON_DAYS["weekly"]:
        names.append("seasonal-naive-weekly")
    return names


def fold_count(series: pd.Series, folds: int, horizon_days: float, policy: Capacity) -> int:
    """Drop folds until the first one keeps policy capacity.backtest_min_train_days to fit on (at least one fold)."""
    span_days = len(series) * _freq_s(series) / 86400.0
    while folds > 1 and span_days - folds * horizon_days < policy.backtest_min_train_days:
        folds -= 1
    return folds


def backtest(
    series: pd.Series,
    policy: Capacity,
    *,
    levels: list[float] | None = None,
    folds: int | None = None,
    horizon_days: float | None = None,
    candidates: list[str] | None = None,
    seasonalities: tuple[str, ...] = ("daily", "weekly"),
) -> BacktestResult:
    """Rolling-origin backtest: `folds` consecutive horizons at the end of the series, each fit on what precedes it.

    `folds` and `horizon_days` default to policy capacity.backtest_folds and capacity.backtest_horizon_days.
    """
    levels = levels or policy.confidence_levels
    folds = folds if folds is not None else policy.backtest_folds
    horizon_days = horizon_days if horizon_days is not None else policy.backtest_horizon_days
    freq = _freq_s(series)
    h = int(round(horizon_days * 86400 / freq))
    folds = fold_count(series, folds, horizon_days, policy)
    if len(series) - folds * h < int(86400 / freq):
        raise ForecastError(
            f"{len(series)} windows cannot hold {folds} backtest folds of {horizon_days:g} day(s) plus a day to "
            "fit on; collect more history or use fewer folds"
        )
    names = candidates or candidate_names(series, horizon_days, folds)
    season_windows = int(round(86400 / freq))
    collected: dict[str, dict[str, list[Any]]] = {
        n: {"actual": [], "fc": [], "abs_err": [], "scale": []} for n in names
    }
    for k in range(folds, 0, -1):
        origin = len(series) - k * h
        train, test = series.iloc[:origin], series.iloc[origin : origin + h]
        scale = mase_scale(train, season_windows)
        for name in names:
            fc = make_forecaster(name, levels, seasonalities).fit(train).predict(pd.DatetimeIndex(test.index))
            bucket = collected[name]
            bucket["actual"].append(test.to_numpy(dtype=float))
            bucket["fc"].append(fc)
            bucket["scale"].append(scale)
    scores: dict[str, CandidateScore] = {}
    for name, bucket in collected.items():
        actual = np.concatenate(bucket["actual"])
        fc = _concat(bucket["fc"])
        mase_parts = [
            np.nanmean(np.abs(a - f.yhat)) / s
            for a, f, s in zip(bucket["actual"], bucket["fc"], bucket["scale"], strict=True)
        ]
        raw_cov = {lv: coverage(actual, fc.lower[lv], fc.upper[lv]) for lv in levels}
        factors = {
            lv: (
                max(1.0, conformal_factor(interval_scores(actual, fc, lv), lv))
                if lv - raw_cov[lv] > policy.calibration_tolerance
                else 1.0
            )
            for lv in levels
        }
        cal = fc.scaled(factors)
        scores[name] = CandidateScore(
            name=name,
            smape=smape(actual, fc.yhat),
            mase=float(np.nanmean(mase_parts)),
            coverage=raw_cov,
            factors=factors,
            calibrated_coverage={lv: coverage(actual, cal.lower[lv], cal.upper[lv]) for lv in levels},
            folds=folds,
        )
    ranked = sorted(scores.values(), key=lambda c: c.smape)
    winner, runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    margin = (runner.smape - winner.smape) / runner.smape if runner and runner.smape > 0 else 0.0
    reason = f"{winner.name} has the lowest backtest sMAPE ({winner.smape:.3f})"
    if runner:
        reason += f", {margin:.1%} below {runner.name} ({runner.smape:.3f})"
    return BacktestResult(
        scores, winner.name, runner.name if runner else None, margin, horizon_days, folds, reason
    )


def _concat(forecasts: list[Forecast]) -> Forecast:
    first = forecasts[0]
    return Forecast(
        pd.DatetimeIndex(np.concatenate([f.index.to_numpy() for f in forecasts])),
        np.concatenate([f.yhat for f in forecasts]),
        {lv: np.concatenate([f.lower[lv] for f in forecasts]) for lv in first.lower},
        {lv: np.concatenate([f.upper[lv] for f in forecasts]) for lv in first.upper},
        first.method,
    )


def future_index(series: pd.Series, days: float) -> pd.DatetimeIndex:
    """The windows after the series' end, `days` long, at the series' frequency."""
    freq = _freq_s(series)
    n = int(round(days * 86400 / freq))
    start = pd.DatetimeIndex(series.index)[-1] + pd.Timedelta(seconds=freq)
    return pd.date_range(start, periods=n, freq=f"{int(freq)}s")


@dataclass
class PlanningForecast:
    """The backtest, and the winner's calibrated forecast over the index asked for."""

    backtest: BacktestResult
    forecast: Forecast
    raw_forecast: Forecast
    forecaster: str


def planning_forecast(
    series: pd.Series,
    index: pd.DatetimeIndex,
    policy: Capacity,
    *,
    levels: list[float] | None = None,
    folds: int | None = None,
    horizon_days: float | None = None,
    seasonalities: tuple[str, ...] = ("daily", "weekly"),
) -> PlanningForecast:
    """Backtest, refit the winner on the whole series, forecast `index` and apply the winner's calibration."""
    levels = levels or policy.confidence_levels
    result = backtest(
        series, policy, levels=levels, folds=folds, horizon_days=horizon_days, seasonalities=seasonalities
    )
    raw = make_forecaster(result.winner, levels, seasonalities).fit(series).predict(index)
    return PlanningForecast(result, raw.scaled(result.candidates[result.winner].factors), raw, result.winner)


@dataclass
class Trends:
    """Growth over the horizon, volatility and burstiness, each with how it was measured."""

    forecast_growth: float
    observed_growth: float
    volatility: float
    burstiness: float
    notes: dict[str, str] = field(default_factory=dict)


def observed_growth(series: pd.Series, horizon_days: float) -> float:
    """Linear trend of daily means, extrapolated over the horizon, relative to today's trend level."""
    daily = series.resample("1D").mean().dropna()
    if len(daily) < 2:
        return 0.0
    x = (daily.index - daily.index[0]).total_seconds().to_numpy() / 86400.0
    slope, intercept = np.polyfit(x, daily.to_numpy(), 1)
    now = intercept + slope * x[-1]
    return float(slope * horizon_days / now) if now > 0 else 0.0


def forecast_growth(series: pd.Series, forecast: Forecast, tail_days: float = TREND_TAIL_DAYS) -> float:
    """Mean of the forecast's last `tail_days` over the mean of the history's last `tail_days`, minus one."""
    freq = _freq_s(series)
    n = int(round(tail_days * 86400 / freq))
    recent = float(np.nanmean(series.to_numpy(dtype=float)[-n:]))
    ahead = float(np.mean(forecast.yhat[-n:]))
    return ahead / recent - 1.0 if recent > 0 else 0.0


def volatility(series: pd.Series) -> float:
    """Coefficient of variation of the series divided by its centred one-day mean (trend removed)."""
    freq = _freq_s(series)
    day = max(1, int(round(86400 / freq)))
    trend = series.rolling(day, center=True, min_periods=max(1, day // 2)).mean()
    ratio = (series / trend).replace([np.inf, -np.inf], np.nan).dropna()
    return float(ratio.std() / ratio.mean()) if len(ratio) > 1 and ratio.mean() > 0 else 0.0


def burstiness(series: pd.Series, quantile: float, period: str = BURST_PERIOD) -> float:
    """The `quantile` (policy capacity.burst_quantile) over periods of (largest window / period mean)."""
    grouped = series.resample(period)
    ratio = (grouped.max() / grouped.mean()).replace([np.inf, -np.inf], np.nan).dropna()
    return float(max(1.0, np.quantile(ratio, quantile))) if len(ratio) else 1.0


def analyse_trends(series: pd.Series, forecast: Forecast, policy: Capacity) -> Trends:
    """Growth (from the planning forecast and from a linear fit), volatility and burstiness of the history."""
    return Trends(
        forecast_growth=forecast_growth(series, forecast),
        observed_growth=observed_growth(series, policy.horizon_days),
        volatility=volatility(series),
        burstiness=burstiness(series, quantile=policy.burst_quantile),
        notes={
            "forecast_growth": f"mean of the forecast's last {TREND_TAIL_DAYS:g} days vs the history's last {TREND_TAIL_DAYS:g} days",
            "observed_growth": f"linear fit of daily means extrapolated over {policy.horizon_days} days",
            "volatility": "coefficient of variation of the series over its centred 1-day mean",
            "burstiness": f"p{policy.burst_quantile * 100:g} over {period_label()} of max window / mean",
        },
    )


def period_label() -> str:
    return f"{BURST_PERIOD} periods"


def split_holdout(series: pd.Series, holdout_days: float) -> tuple[pd.Series, pd.Series]:
    """The series without its last `holdout_days` (what the forecasters fit) and that tail (replayed against the
    plan); the tail is empty when `holdout_days` rounds to no window."""
    n_hold = int(round(holdout_days * 86400 / _freq_s(series)))
    return (series.iloc[:-n_hold], series.iloc[-n_hold:]) if n_hold else (series, series.iloc[:0])


@dataclass
class TrendAnalysis:
    """The fit / held-out split, the planning forecast over the held-out tail and the horizon, and the trends."""

    fit: pd.Series
    holdout: pd.Series
    planning: PlanningForecast
    trends: Trends


def analyse_history(series: pd.Series, policy: Capacity, holdout_days: float | None = None) -> TrendAnalysis:
    """Hold out the tail, backtest the forecasters, forecast the tail and the horizon with the winner, measure
    trends on the fit. `holdout_days` defaults to policy capacity.replay_holdout_days."""
    holdout_days = holdout_days if holdout_days is not None else policy.replay_holdout_days
    fit, holdout = split_holdout(series, holdout_days)
    planning = planning_forecast(fit, future_index(fit, holdout_days + policy.horizon_days), policy)
    return TrendAnalysis(fit, holdout, planning, analyse_trends(fit, planning.forecast, policy))
