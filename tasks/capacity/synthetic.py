"""The bundled synthetic request-rate history the demo plans on (the real traces cannot ship with the project)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from serving.settings import get_settings

# Shape of the demo history; not policy: it only has to look like a real service's traffic.
SYNTHETIC_DAYS = 28
SYNTHETIC_FREQ_S = 600
SYNTHETIC_START = "2025-01-06 00:00:00"  # a Monday, so weekly seasonality lines up with calendar weeks
BASE_RPS = 40.0
DAILY_AMPLITUDE = 0.45  # peak-to-mean swing of the diurnal cycle
WEEKEND_FACTOR = 0.7
GROWTH_PER_DAY = 0.004  # ~+33% over a 90-day horizon: moderate growth (hybrid)
NOISE_SD = 0.05
BURSTS = 6
OUTAGE_START_DAY = 17.4
OUTAGE_WINDOWS = 5  # a short outage recorded as zero windows: validation must find it


def synthetic_history(seed: int = 7, days: int = SYNTHETIC_DAYS) -> pd.DataFrame:
    """A deterministic `timestamp,rate_rps` frame: daily + weekly seasonality, growth, bursts and one outage."""
    rng = np.random.default_rng(seed)
    n = int(days * 86400 / SYNTHETIC_FREQ_S)
    ts = pd.date_range(SYNTHETIC_START, periods=n, freq=f"{SYNTHETIC_FREQ_S}s")
    day_frac = (ts.hour * 3600 + ts.minute * 60 + ts.second).to_numpy() / 86400.0
    t_days = np.arange(n) * SYNTHETIC_FREQ_S / 86400.0
    # Peak mid-afternoon, trough before dawn.
    daily = 1.0 + DAILY_AMPLITUDE * np.sin(2 * np.pi * (day_frac - 0.375))
    weekly = np.where(ts.dayofweek.to_numpy() >= 5, WEEKEND_FACTOR, 1.0)
    growth = 1.0 + GROWTH_PER_DAY * t_days
    noise = rng.lognormal(mean=0.0, sigma=NOISE_SD, size=n)
    rate = BASE_RPS * daily * weekly * growth * noise
    for start in rng.choice(n - 3, size=BURSTS, replace=False):
        rate[start : start + 2] *= rng.uniform(1.5, 2.2)
    outage = int(OUTAGE_START_DAY * 86400 / SYNTHETIC_FREQ_S)
    rate[outage : outage + OUTAGE_WINDOWS] = 0.0
    return pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S"), "rate_rps": np.round(rate, 4)})


def write_synthetic_history(
    path: str | Path | None = None, seed: int = 7, days: int = SYNTHETIC_DAYS
) -> Path:
    """Write the synthetic history as CSV (by default `capacity/synthetic_history.csv` under the data dir) and
    return its path."""
    path = Path(path) if path is not None else get_settings().data_dir / "capacity" / "synthetic_history.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic_history(seed=seed, days=days).to_csv(path, index=False)
    return path
