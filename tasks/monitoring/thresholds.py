"""Dynamic thresholds learned from history (SPEC §4 noise reduction): the request rate expected at each hour of the
week, with a robust band around it, rendered as Prometheus recording rules that pick the slot with `hour()` and
`day_of_week()` at evaluation time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

Granularity = Literal["hour_of_week", "weekpart_hour", "hour_of_day"]

# The anomaly alert compares the 5-minute rate (`inferops:serve_request_rate:5m`), so the history is resampled to
# 5-minute means first: per-minute points are noisier than what the alert sees and would widen the band for nothing.
RESAMPLE = "5min"
# MAD x 1.4826 estimates the standard deviation of normally distributed data; the band is centre +- k of those.
MAD_TO_SIGMA = 1.4826
DEFAULT_BAND_SIGMAS = 4.0
# A slot learned from fewer distinct days than this is too thin to trust; coarser slots are tried instead (hour of
# week -> hour x weekday/weekend -> hour of day). Three days: one odd day cannot move a median of three.
DEFAULT_MIN_DAYS = 3
# A flat history has MAD 0, and a zero-width band fires on any noise: the spread is at least this share of the
# centre, and at least this many requests per second.
DEFAULT_MIN_RELATIVE_SPREAD = 0.1
DEFAULT_MIN_SPREAD_RPS = 0.05
DIGITS = 6  # significant digits of the values written into the rules

RECORD_EXPECTED = "inferops:request_rate:expected"
RECORD_UPPER = "inferops:request_rate:upper"
RECORD_LOWER = "inferops:request_rate:lower"


class ThresholdError(ValueError):
    """A history or a setting the band cannot be learned from; the message says which and how to fix it."""


@dataclass(frozen=True)
class Slot:
    """One slot of the week: Prometheus' `day_of_week()` (0 = Sunday) or None, and `hour()`; its band in req/s."""

    day: int | None  # hour_of_week: 0-6; weekpart_hour: 0 weekend, 1 weekday; hour_of_day: None
    hour: int
    expected: float
    lower: float
    upper: float
    days: int  # distinct days of history the slot was learned from


@dataclass(frozen=True)
class RateBand:
    """The expected request rate per slot and the band an anomaly leaves, learned from one history."""

    granularity: Granularity
    slots: tuple[Slot, ...]
    sigmas: float
    source: str

    def at(self, when: pd.Timestamp) -> Slot:
        """The slot Prometheus would pick at `when` (UTC)."""
        ts = pd.Timestamp(when)
        ts = ts.tz_convert("UTC") if ts.tzinfo is not None else ts.tz_localize("UTC")
        key = _slot_key(self.granularity, _prom_day(ts.dayofweek), ts.hour)
        for slot in self.slots:
            if (slot.day, slot.hour) == key:
                return slot
        raise KeyError(f"no slot for {when} in a {self.granularity} band")


def _prom_day(pandas_dayofweek: int) -> int:
    """pandas counts Monday = 0; Prometheus' day_of_week() counts Sunday = 0."""
    return (pandas_dayofweek + 1) % 7


def _slot_key(granularity: Granularity, prom_day: int, hour: int) -> tuple[int | None, int]:
    if granularity == "hour_of_week":
        return prom_day, hour
    if granularity == "weekpart_hour":
        return (0 if prom_day in (0, 6) else 1), hour
    return None, hour


def _positive(name: str, value: float, fix: str) -> None:
    if not value > 0:
        raise ThresholdError(f"{name} must be positive, got {value!r}; {fix}")


def learn_band(
    history: pd.Series,
    *,
    sigmas: float = DEFAULT_BAND_SIGMAS,
    min_days: int = DEFAULT_MIN_DAYS,
    min_relative_spread: float = DEFAULT_MIN_RELATIVE_SPREAD,
    min_spread_rps: float = DEFAULT_MIN_SPREAD_RPS,
    source: str = "history",
) -> RateBand:
    """Median and MAD of the request rate per slot, at the finest slot every part of the week has `min_days` of."""
    _positive("sigmas", sigmas, "pass the band's half-width in robust standard deviations, e.g. 4")
    _positive("min_days", min_days, "pass how many distinct days a slot needs, e.g. 3")
    if not isinstance(history, pd.Series) or not isinstance(history.index, pd.DatetimeIndex):
        raise ThresholdError(
            "history must be a pandas Series of request rates indexed by timestamps (as "
            "tasks.capacity.history produces), got "
            f"{type(history).__name__} indexed by {type(getattr(history, 'index', None)).__name__}"
        )
    index = history.index
    series = history.copy()
    series.index = index.tz_convert("UTC") if index.tz is not None else index.tz_localize("UTC")
    series = pd.to_numeric(series, errors="coerce").dropna()
    if (series < 0).any():
        raise ThresholdError(
            f"history has {int((series < 0).sum())} negative request rate(s), first at {series[series < 0].index[0]}; "
            "a rate cannot be negative: fix the source"
        )
    series = series.resample(RESAMPLE).mean().dropna()
    if series.empty:
        raise ThresholdError("history has no numeric request rate; pass a series with rates in req/s")
    frame = pd.DataFrame(
        {
            "rate": series.to_numpy(),
            "day": [_prom_day(d) for d in series.index.dayofweek],
            "hour": series.index.hour,
            "date": series.index.date,
        }
    )
    covered = (
        f"{frame['date'].nunique()} day(s) from {series.index[0]:%Y-%m-%d} to {series.index[-1]:%Y-%m-%d}"
    )
    for granularity in ("hour_of_week", "weekpart_hour", "hour_of_day"):
        keys = [_slot_key(granularity, d, h) for d, h in zip(frame["day"], frame["hour"], strict=True)]
        frame["slot"] = keys
        expected_slots = {_slot_key(granularity, d, h) for d in range(7) for h in range(24)}
        days = frame.groupby("slot")["date"].nunique()
        if set(days.index) == expected_slots and int(days.min()) >= min_days:
            slots = tuple(
                _slot(key, group["rate"], int(days[key]), sigmas, min_relative_spread, min_spread_rps)
                for key, group in sorted(frame.groupby("slot"), key=lambda kv: _sort_key(kv[0]))
            )
            return RateBand(granularity, slots, sigmas, f"{source}: {covered}")  # type: ignore[arg-type]
    raise ThresholdError(
        f"history covers {covered}: every hour of the day needs at least {min_days} distinct day(s) of data "
        f"to learn a band from; pass a longer history (the capacity policy asks for 14 days) or lower min_days"
    )


def _sort_key(key: Any) -> tuple[int, int]:
    day, hour = key
    return (-1 if day is None else int(day), int(hour))


def _slot(
    key: tuple[int | None, int],
    rates: pd.Series,
    days: int,
    sigmas: float,
    min_relative_spread: float,
    min_spread_rps: float,
) -> Slot:
    centre = float(rates.median())
    mad = float((rates - centre).abs().median())
    spread = max(MAD_TO_SIGMA * mad, min_relative_spread * centre, min_spread_rps)
    return Slot(
        day=key[0],
        hour=key[1],
        expected=centre,
        lower=max(centre - sigmas * spread, 0.0),
        upper=centre + sigmas * spread,
        days=days,
    )


def _number(value: float) -> str:
    return f"{value:.{DIGITS}g}"


def _when(granularity: Granularity, slot: Slot) -> str:
    """The PromQL condition that holds (as a one-element vector) exactly during `slot`."""
    if granularity == "hour_of_week":
        return f"hour() == {slot.hour} and day_of_week() == {slot.day}"
    if granularity == "weekpart_hour":
        # day_of_week(): 0 = Sunday, 6 = Saturday
        days = (
            "day_of_week() > 0 and day_of_week() < 6"
            if slot.day == 1
            else "(day_of_week() == 0 or day_of_week() == 6)"
        )
        return f"hour() == {slot.hour} and {days}"
    return f"hour() == {slot.hour}"


def band_expr(band: RateBand, field: Literal["expected", "lower", "upper"]) -> str:
    """One PromQL expression whose value, at any instant, is `field` of the slot that instant falls in (UTC)."""
    clauses = [
        f"(vector({_number(getattr(slot, field))}) and on() ({_when(band.granularity, slot)}))"
        for slot in band.slots
    ]
    return " or ".join(clauses)


def band_rules(band: RateBand, application: str) -> list[dict[str, Any]]:
    """The three recording rules (expected, upper, lower), labelled with the application they watch."""
    labels = {"application": application}
    return [
        {"record": RECORD_EXPECTED, "expr": band_expr(band, "expected"), "labels": labels},
        {"record": RECORD_UPPER, "expr": band_expr(band, "upper"), "labels": labels},
        {"record": RECORD_LOWER, "expr": band_expr(band, "lower"), "labels": labels},
    ]
