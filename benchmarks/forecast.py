"""Forecast benchmark on the real traces: last 2 days held out; sMAPE and 80/90/95% coverage, raw and calibrated.

Run: .venv/bin/python benchmarks/forecast.py [TRACES_DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from tasks.capacity import data_quality as dq
from tasks.capacity import forecasting as fc
from tasks.capacity.history import load_file
from tasks.policy import Capacity, default_policy

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
HOLDOUT_DAYS = 2.0
LEVELS = [0.8, 0.9, 0.95]


def evaluate(path: Path, report_dir: str, policy: Capacity) -> dict[str, object]:
    """Validate, hold out the tail, backtest-select a forecaster, score Prophet, seasonal-naive and the winner."""
    raw = load_file(path)
    # The benchmark scores forecasts; daily seasonality is the least any trace here must support.
    report = dq.validate_history(raw, policy, seasonalities=("daily",), report_dir=report_dir)
    series = dq.prepare_series(raw, report, policy)
    freq = (series.index[1] - series.index[0]).total_seconds()
    if len(series) * freq / 86400 < HOLDOUT_DAYS + policy.backtest_min_train_days:
        raise fc.ForecastError(
            f"{len(series) * freq / 86400:.2f} days is too short to hold out {HOLDOUT_DAYS:g} days and backtest"
        )
    train, test = fc.split_holdout(series, HOLDOUT_DAYS)
    index = pd.DatetimeIndex(test.index)
    actual = test.to_numpy()
    started = time.perf_counter()
    planning = fc.planning_forecast(train, index, policy, levels=LEVELS)
    naive_name = min(
        (c for c in planning.backtest.candidates if c.startswith("seasonal-naive")),
        key=lambda c: planning.backtest.candidates[c].smape,
    )
    prophet = fc.make_forecaster("prophet", LEVELS).fit(train).predict(index)
    naive = fc.make_forecaster(naive_name, LEVELS).fit(train).predict(index)
    row: dict[str, object] = {
        "trace": path.name,
        "gap_windows": report.zero_windows + report.missing_windows,
        "smape_prophet": fc.smape(actual, prophet.yhat),
        "smape_naive": fc.smape(actual, naive.yhat),
        "naive": naive_name,
        "chosen": planning.forecaster,
        "smape_chosen": fc.smape(actual, planning.forecast.yhat),
    }
    for level in LEVELS:
        row[f"cov{int(level * 100)}_raw"] = fc.coverage(
            actual, planning.raw_forecast.lower[level], planning.raw_forecast.upper[level]
        )
        row[f"cov{int(level * 100)}_cal"] = fc.coverage(
            actual, planning.forecast.lower[level], planning.forecast.upper[level]
        )
    row["seconds"] = time.perf_counter() - started
    return row


def main(traces: Path = TRACES) -> int:
    if not traces.exists():
        print(f"no traces at {traces}: this benchmark needs ../shared/data/traces")
        return 1
    policy = default_policy().capacity
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as report_dir:
        for path in sorted(traces.glob("*.csv")):
            try:
                rows.append(evaluate(path, report_dir, policy))
            except (fc.ForecastError, dq.DataQualityError) as exc:
                skipped.append(f"{path.name}: skipped, {exc}")
    table = pd.DataFrame(rows)
    with pd.option_context(
        "display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3f}".format
    ):
        print(table.to_string(index=False))
    for line in skipped:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else TRACES))
