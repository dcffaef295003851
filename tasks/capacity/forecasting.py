"""Demand forecasts: statsforecast's MSTL, AutoETS, AutoTheta and seasonal naive beside Prophet, chosen by the
library's rolling-origin cross-validation; the plan forecasts with the mean of the best, inside conformal bands."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from tasks.policy import Capacity

# Multiplicative seasonality measured worse on the ServeGen traces.
PROPHET_SEASONALITY_MODE: Literal["additive", "multiplicative"] = "additive"
# Conformal scores are errors relative to the forecast (demand's spread grows with its level); the forecast is
# floored at this share of the mean demand so a near-zero night window cannot blow a score up.
RELATIVE_FLOOR_SHARE = 0.05
# Short-term burstiness: the policy capacity.burst_quantile (p99) over hours of (max 10-min window / hourly mean).
BURST_PERIOD = "1h"
TREND_TAIL_DAYS = 7.0
SEASON_DAYS = {"daily": 1.0, "weekly": 7.0}
WEEKLY = {"mstl-daily-weekly", "seasonal-naive-weekly"}
NAIVE = ("seasonal-naive-daily", "seasonal-naive-weekly")
ENSEMBLE_PREFIX = "ensemble"
# statsforecast's `refit`: False fits each model once, on the first fold, and runs it forward over the later
# origins (the library's cheaper cross-validation).
REFIT_EVERY_FOLD = False

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


def _freq_s(series: pd.Series) -> float:
    index = pd.DatetimeIndex(series.index)
    return float((index[1] - index[0]).total_seconds())


def _windows(series: pd.Series, days: float) -> int:
    return int(round(days * 86400 / _freq_s(series)))


def season_windows(series: pd.Series, name: str) -> int:
    """Windows in the longest season a forecaster repeats (a week for the weekly ones, else a day)."""
    return _windows(series, SEASON_DAYS["weekly"] if name in WEEKLY else SEASON_DAYS["daily"])


def _filled(series: pd.Series) -> pd.Series:
    """Gaps (masked windows) interpolated in time for fitting; scoring still skips them."""
    if series.notna().sum() < 2:
        raise ForecastError("the history has fewer than two non-gap windows; collect more history")
    return series.interpolate(method="time").bfill().ffill()


def _statsforecast_models(names: list[str], day: int, week: int) -> list[Any]:
    from statsforecast.models import MSTL, AutoETS, AutoTheta, SeasonalNaive

    build = {
        "mstl-daily": lambda: MSTL(season_length=[day], alias="mstl-daily"),
        "mstl-daily-weekly": lambda: MSTL(season_length=[day, week], alias="mstl-daily-weekly"),
        "autoets": lambda: AutoETS(season_length=day, alias="autoets"),
        "autotheta": lambda: AutoTheta(season_length=day, alias="autotheta"),
        "seasonal-naive-daily": lambda: SeasonalNaive(season_length=day, alias="seasonal-naive-daily"),
        "seasonal-naive-weekly": lambda: SeasonalNaive(season_length=week, alias="seasonal-naive-weekly"),
    }
    return [build[n]() for n in names if n != "prophet"]


def _frame(series: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"unique_id": "demand", "ds": series.index, "y": _filled(series).to_numpy()})


def _prophet_fit_predict(train: pd.Series, index: pd.DatetimeIndex) -> np.ndarray:
    """Prophet (daily + weekly seasonality, linear trend) fit on `train`, central forecast over `index`."""
    from prophet import Prophet

    logging.getLogger("cmdstanpy").disabled = True
    frame = pd.DataFrame({"ds": train.index, "y": train.to_numpy()}).dropna()
    model = Prophet(
        growth="linear",
        daily_seasonality=True,
        weekly_seasonality=True,
        yearly_seasonality=False,
        seasonality_mode=PROPHET_SEASONALITY_MODE,
        uncertainty_samples=0,
    )
    model.fit(frame)
    return np.maximum(model.predict(pd.DataFrame({"ds": index}))["yhat"].to_numpy(), 0.0)


def forecast_members(series: pd.Series, names: list[str], index: pd.DatetimeIndex) -> pd.DataFrame:
    """Each named forecaster fit on the whole series, central forecast over `index` (which follows the series)."""
    from statsforecast import StatsForecast

    freq = _freq_s(series)
    last = pd.DatetimeIndex(series.index)[-1]
    h = int(round((index[-1] - last).total_seconds() / freq))
    if h < 1 or index[0] <= last:
        raise ForecastError(
            f"forecast index must follow the history (ends {last}); got {index[0]}..{index[-1]}"
        )
    out = pd.DataFrame(index=index)
    day, week = _windows(series, 1.0), _windows(series, 7.0)
    models = _statsforecast_models(names, day, week)
    if models:
        sf = StatsForecast(models=models, freq=f"{int(freq)}s", n_jobs=1)
        predicted = sf.forecast(df=_frame(series), h=h).set_index("ds")
        for model in models:
            out[model.alias] = np.maximum(predicted[model.alias].reindex(index).to_numpy(), 0.0)
    if "prophet" in names:
        out["prophet"] = _prophet_fit_predict(series, index)
    return out[names]


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


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """Split conformal: the ceil((n + 1) * level)-th smallest score, which covers `level` of new ones."""
    scores = scores[~np.isnan(scores)]
    n = scores.size
    if n == 0:
        raise ForecastError("no cross-validation errors to calibrate the intervals on; collect more history")
    k = min(n, math.ceil((n + 1) * level))
    return float(np.sort(scores)[k - 1])


@dataclass
class CandidateScore:
    """One forecaster's cross-validation: errors over every fold's non-gap windows."""

    name: str
    smape: float
    mase: float
    folds: int
    members: tuple[str, ...] = ()


@dataclass
class BacktestResult:
    """Every candidate's cross-validated score, the one the plan uses, and its conformal half-widths."""

    candidates: dict[str, CandidateScore]
    winner: str
    runner_up: str | None
    margin: (
        float  # relative sMAPE improvement of the winner over the runner-up (negative: an ensemble chosen)
    )
    horizon_days: float
    folds: int
    reason: str = ""
    half_widths: dict[float, float] = field(default_factory=dict)  # relative, per confidence level
    # the conformal scores the half-widths come from: each cross-validation window's fold (cutoff) and score
    calibration: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"cutoff": [], "score": []}))

    def fold_coverage(self, level: float) -> dict[pd.Timestamp, float]:
        """Leave one fold out: per fold, the share of its windows inside the band calibrated on the other folds.
        Their spread is how far one forecast window's coverage moves from nominal on this history."""
        out = {}
        for cutoff, rows in self.calibration.groupby("cutoff"):
            rest = self.calibration.loc[self.calibration["cutoff"] != cutoff, "score"].to_numpy(dtype=float)
            scores = rows["score"].to_numpy(dtype=float)
            scores = scores[~np.isnan(scores)]
            if rest.size and scores.size:
                out[pd.Timestamp(cutoff)] = float(np.mean(scores <= conformal_quantile(rest, level)))
        return out

    @property
    def members(self) -> tuple[str, ...]:
        return self.candidates[self.winner].members or (self.winner,)

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for c in sorted(self.candidates.values(), key=lambda c: c.smape):
            row: dict[str, Any] = {"forecaster": c.name, "smape": round(c.smape, 4), "mase": round(c.mase, 4)}
            row["folds"] = c.folds
            row["chosen"] = c.name == self.winner
            rows.append(row)
        return rows


def fold_count(series: pd.Series, folds: int, horizon_days: float, policy: Capacity) -> int:
    """Drop folds until the first one keeps policy capacity.backtest_min_train_days to fit on (at least one fold)."""
    span_days = len(series) * _freq_s(series) / 86400.0
    step = policy.backtest_step_days
    while folds > 1 and span_days - horizon_days - (folds - 1) * step < policy.backtest_min_train_days:
        folds -= 1
    return folds


def candidate_names(series: pd.Series, horizon_days: float, folds: int, policy: Capacity) -> list[str]:
    """The policy's forecasters the history supports: weekly ones only when every fold keeps a full week."""
    span_days = len(series) * _freq_s(series) / 86400.0
    first_fold_days = span_days - horizon_days - (folds - 1) * policy.backtest_step_days
    weekly_ok = first_fold_days >= SEASON_DAYS["weekly"]
    return [n for n in policy.forecasters if weekly_ok or n not in WEEKLY]


def cross_validate(series: pd.Series, names: list[str], folds: int, horizon: int, step: int) -> pd.DataFrame:
    """statsforecast's rolling-origin cross-validation (`folds` origins, `step` windows apart, `horizon` ahead);
    Prophet, which the library does not wrap, is fit at the same origins. Columns: ds, cutoff, y, <names>."""
    from statsforecast import StatsForecast

    freq = _freq_s(series)
    day, week = _windows(series, 1.0), _windows(series, 7.0)
    models = _statsforecast_models(names, day, week)
    frame = _frame(series)
    if models:
        sf = StatsForecast(models=models, freq=f"{int(freq)}s", n_jobs=1)
        cv = sf.cross_validation(
            df=frame, h=horizon, n_windows=folds, step_size=step, refit=REFIT_EVERY_FOLD
        ).reset_index(drop=True)
    else:
        cuts = [len(frame) - horizon - k * step for k in range(folds - 1, -1, -1)]
        cv = pd.concat(
            pd.DataFrame(
                {
                    "ds": frame["ds"].iloc[c : c + horizon].to_numpy(),
                    "cutoff": frame["ds"].iloc[c - 1],
                    "y": frame["y"].iloc[c : c + horizon].to_numpy(),
                }
            )
            for c in cuts
        ).reset_index(drop=True)
    if "prophet" in names:
        cv["prophet"] = np.nan
        for cutoff, rows in cv.groupby("cutoff"):
            train = series[series.index <= cutoff]
            cv.loc[rows.index, "prophet"] = _prophet_fit_predict(train, pd.DatetimeIndex(rows["ds"]))
    # score on what was observed: the gap windows were interpolated for fitting only
    cv["y"] = series.reindex(pd.DatetimeIndex(cv["ds"])).to_numpy(dtype=float)
    return cv


def _score(
    name: str, cv: pd.DataFrame, yhat: np.ndarray, series: pd.Series, members: tuple[str, ...] = ()
) -> CandidateScore:
    season = _windows(series, 1.0)
    parts = []
    for cutoff, rows in cv.groupby("cutoff"):
        scale = mase_scale(series[series.index <= cutoff], season)
        err = np.abs(rows["y"].to_numpy() - yhat[rows.index])
        parts.append(np.nanmean(err) / scale if scale and scale > 0 else np.nan)
    return CandidateScore(
        name, smape(cv["y"].to_numpy(), yhat), float(np.nanmean(parts)), cv["cutoff"].nunique(), members
    )


def ensemble_name(members: tuple[str, ...]) -> str:
    return f"{ENSEMBLE_PREFIX}({'+'.join(members)})"


def backtest(
    series: pd.Series,
    policy: Capacity,
    *,
    levels: list[float] | None = None,
    folds: int | None = None,
    horizon_days: float | None = None,
    candidates: list[str] | None = None,
) -> BacktestResult:
    """Cross-validate the policy's forecasters and the mean of the `policy.ensemble_size` best; the plan uses the
    ensemble (forecast combination), or the best one when the ensemble size is 1. The conformal half-widths per
    level come from the chosen forecast's cross-validation errors, relative to its level.

    `folds` and `horizon_days` default to policy capacity.backtest_folds and capacity.backtest_horizon_days.
    """
    levels = levels or policy.confidence_levels
    folds = folds if folds is not None else policy.backtest_folds
    horizon_days = horizon_days if horizon_days is not None else policy.backtest_horizon_days
    h, step = _windows(series, horizon_days), max(1, _windows(series, policy.backtest_step_days))
    folds = fold_count(series, folds, horizon_days, policy)
    first_train = len(series) - h - (folds - 1) * step
    if first_train < _windows(series, 1.0) * 2:
        raise ForecastError(
            f"{len(series)} windows cannot hold {folds} backtest fold(s) of {horizon_days:g} day(s) plus two days "
            "to fit on; collect more history or use fewer folds"
        )
    names = candidates or candidate_names(series, horizon_days, folds, policy)
    cv = cross_validate(series, names, folds, h, step)
    scores = {n: _score(n, cv, cv[n].to_numpy(dtype=float), series) for n in names}
    ranked = sorted(scores.values(), key=lambda c: c.smape)
    size = min(policy.ensemble_size, len(ranked))
    if size > 1:
        members = tuple(c.name for c in ranked[:size])
        name = ensemble_name(members)
        cv[name] = cv[list(members)].mean(axis=1)
        scores[name] = _score(name, cv, cv[name].to_numpy(dtype=float), series, members)
        winner = name
        reason = (
            f"{name}: the mean of the {size} lowest cross-validated sMAPE ("
            + ", ".join(f"{c.name} {c.smape:.3f}" for c in ranked[:size])
            + f"); the mean scores {scores[name].smape:.3f} over {folds} fold(s)"
        )
    else:
        winner = ranked[0].name
        reason = f"{winner} has the lowest cross-validated sMAPE ({ranked[0].smape:.3f}) over {folds} fold(s)"
    others = sorted((c for c in scores.values() if c.name != winner), key=lambda c: c.smape)
    runner = others[0] if others else None
    margin = (runner.smape - scores[winner].smape) / runner.smape if runner and runner.smape > 0 else 0.0
    if runner:
        reason += f"; best other: {runner.name} ({runner.smape:.3f})"
    yhat = cv[winner].to_numpy(dtype=float)
    floor = RELATIVE_FLOOR_SHARE * float(np.nanmean(series.to_numpy(dtype=float)))
    relative = np.abs(cv["y"].to_numpy() - yhat) / np.maximum(yhat, max(floor, 1e-9))
    half_widths = {lv: conformal_quantile(relative, lv) for lv in levels}
    calibration = pd.DataFrame({"cutoff": cv["cutoff"].to_numpy(), "score": relative})
    return BacktestResult(
        scores,
        winner,
        runner.name if runner else None,
        margin,
        horizon_days,
        folds,
        reason,
        half_widths,
        calibration,
    )


def future_index(series: pd.Series, days: float) -> pd.DatetimeIndex:
    """The windows after the series' end, `days` long, at the series' frequency."""
    freq = _freq_s(series)
    n = int(round(days * 86400 / freq))
    start = pd.DatetimeIndex(series.index)[-1] + pd.Timedelta(seconds=freq)
    return pd.date_range(start, periods=n, freq=f"{int(freq)}s")


@dataclass
class PlanningForecast:
    """The backtest, and the chosen forecaster's forecast (with its conformal bands) over the index asked for;
    `members` holds each member's central forecast."""

    backtest: BacktestResult
    forecast: Forecast
    members: pd.DataFrame
    forecaster: str


def banded(
    index: pd.DatetimeIndex, yhat: np.ndarray, half_widths: dict[float, float], method: str
) -> Forecast:
    """The central forecast inside relative conformal bands: yhat x (1 -/+ half-width) per level."""
    lower = {lv: np.maximum(yhat * (1 - k), 0.0) for lv, k in half_widths.items()}
    upper = {lv: yhat * (1 + k) for lv, k in half_widths.items()}
    return Forecast(index, yhat, lower, upper, method)


def planning_forecast(
    series: pd.Series,
    index: pd.DatetimeIndex,
    policy: Capacity,
    *,
    levels: list[float] | None = None,
    folds: int | None = None,
    horizon_days: float | None = None,
) -> PlanningForecast:
    """Cross-validate, refit the chosen forecaster's members on the whole series and forecast `index`."""
    levels = levels or policy.confidence_levels
    result = backtest(series, policy, levels=levels, folds=folds, horizon_days=horizon_days)
    members = forecast_members(series, list(result.members), index)
    yhat = members.mean(axis=1).to_numpy(dtype=float)
    return PlanningForecast(
        result, banded(index, yhat, result.half_widths, result.winner), members, result.winner
    )


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


@dataclass(frozen=True)
class HoldoutCheck:
    """The planning forecast on the held-out tail, which no forecaster saw: its sMAPE against the best seasonal
    naive's there, and the share of held-out windows inside each band. A band more than `tolerance` (policy
    capacity.coverage_tolerance) off its level did not hold on this history."""

    windows: int
    smape: float
    naive: str
    naive_smape: float
    coverage: dict[float, float]
    tolerance: float

    @property
    def gain(self) -> float:
        """How much lower the forecast's sMAPE is than the best seasonal naive's (negative: the naive did better)."""
        return 1 - self.smape / self.naive_smape if self.naive_smape > 0 else 0.0

    def off(self) -> dict[float, float]:
        """Coverage minus level, for the levels more than the tolerance off (negative: the band under-covers)."""
        return {lv: c - lv for lv, c in self.coverage.items() if abs(c - lv) > self.tolerance}

    def sentence(self) -> str:
        levels = sorted(self.coverage)
        head = (
            f"on the {self.windows} held-out windows the forecast's sMAPE is {self.smape:.3f} vs {self.naive_smape:.3f} "
            f"for {self.naive} ({self.gain:+.1%}); its "
            + "/".join(f"{lv * 100:g}" for lv in levels)
            + "% bands covered "
            + "/".join(f"{self.coverage[lv]:.1%}" for lv in levels)
        )
        off = self.off()
        if not off:
            return head + f", each within {self.tolerance * 100:g} points of its level"
        why = {
            "under": "demand fell outside more often than the level says; read the plan at a higher confidence, or plan "
            "on a longer history",
            "over": "the held-out days were calmer than the cross-validation's",
        }
        parts = []
        for way, why_so in why.items():
            levels = [lv for lv, d in off.items() if (d < 0) == (way == "under")]
            if levels:
                verb = f"bands {way}-cover" if len(levels) > 1 else f"band {way}-covers"
                parts.append(
                    f"the {'/'.join(f'{lv * 100:g}' for lv in levels)}% {verb} (by "
                    f"{'/'.join(f'{abs(off[lv]) * 100:.1f}' for lv in levels)} points): {why_so}"
                )
        return head + "; " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "smape": self.smape,
            "naive": self.naive,
            "naive_smape": self.naive_smape,
            "gain": self.gain,
            "coverage": {f"{lv * 100:g}": c for lv, c in sorted(self.coverage.items())},
            "sentence": self.sentence(),
        }


def check_holdout(
    fit: pd.Series, holdout: pd.Series, forecast: Forecast, tolerance: float
) -> HoldoutCheck | None:
    """Score `forecast` (made from `fit`, starting where it ends) on the held-out windows that follow; None when
    there are none or none of them has data."""
    actual = holdout.to_numpy(dtype=float)
    if not np.any(~np.isnan(actual)):
        return None
    index = pd.DatetimeIndex(holdout.index)
    follows = pd.DatetimeIndex(fit.index)[-1] + pd.Timedelta(seconds=_freq_s(fit)) == index[0]
    if not follows or not pd.DatetimeIndex(forecast.index[: len(index)]).equals(index):
        raise ForecastError(
            f"the held-out tail must follow the fit (ends {fit.index[-1]}) and the forecast must start at it: the tail "
            f"starts {index[0]}, the forecast {forecast.index[0]}; pass the two parts of split_holdout"
        )
    n = len(index)
    repeatable = [m for m in NAIVE if len(fit) >= season_windows(fit, m)]
    if not repeatable:
        raise ForecastError(
            f"the fit ({len(fit)} windows) is shorter than a day: no seasonal naive to check the forecast against; "
            "collect more history"
        )
    naive = forecast_members(fit, repeatable, index)
    naive_smape = {m: smape(actual, naive[m].to_numpy()) for m in naive.columns}
    best = min(naive_smape, key=lambda m: naive_smape[m])
    return HoldoutCheck(
        windows=int(np.sum(~np.isnan(actual))),
        smape=smape(actual, forecast.yhat[:n]),
        naive=best,
        naive_smape=naive_smape[best],
        coverage={
            lv: coverage(actual, forecast.lower[lv][:n], forecast.upper[lv][:n]) for lv in forecast.lower
        },
        tolerance=tolerance,
    )


@dataclass
class TrendAnalysis:
    """The fit / held-out split, the planning forecast over the held-out tail and the horizon, the trends, and the
    forecast checked on the held-out tail (None when nothing is held out)."""

    fit: pd.Series
    holdout: pd.Series
    planning: PlanningForecast
    trends: Trends
    check: HoldoutCheck | None = None


def analyse_history(series: pd.Series, policy: Capacity, holdout_days: float | None = None) -> TrendAnalysis:
    """Hold out the tail, backtest the forecasters, forecast the tail and the horizon with the winner, check it on
    the tail, measure trends on the fit. `holdout_days` defaults to policy capacity.replay_holdout_days."""
    holdout_days = holdout_days if holdout_days is not None else policy.replay_holdout_days
    fit, holdout = split_holdout(series, holdout_days)
    planning = planning_forecast(fit, future_index(fit, holdout_days + policy.horizon_days), policy)
    # None when nothing is held out, or only gaps
    check = check_holdout(fit, holdout, planning.forecast, policy.coverage_tolerance)
    return TrendAnalysis(fit, holdout, planning, analyse_trends(fit, planning.forecast, policy), check)
