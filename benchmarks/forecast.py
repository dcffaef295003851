"""Forecast benchmark on every trace in a folder: the last 2 days held out, the plan's forecaster (chosen by
statsforecast's cross-validation on the rest) against the best seasonal naive and Prophet, with the 80/90/95%
coverage of its conformal bands. A file that cannot be used is listed as skipped, with the reason.

`--earlier K` also moves the same split back 1..K days on each usable trace (the history cut there, the 2 days
before the cut held out): how much the figures of one split say about the next one.

Run: .venv/bin/python benchmarks/forecast.py [TRACES_DIR] [--earlier K]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):
    # Run as a script, this file's folder comes first on sys.path and benchmarks/serving.py would shadow `serving`.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from tasks.capacity import data_quality as dq  # noqa: E402 (after the path fix above)
from tasks.capacity import forecasting as fc  # noqa: E402
from tasks.capacity.history import HistoryError, load_file  # noqa: E402
from tasks.policy import Capacity, default_policy  # noqa: E402

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
HOLDOUT_DAYS = 2.0
LEVELS = [0.8, 0.9, 0.95]
SUFFIXES = {".csv", ".parquet", ".pq"}


def history(path: Path, report_dir: str, policy: Capacity) -> tuple[pd.Series, int]:
    """The trace validated and prepared as the capacity flow prepares it, and its gap windows."""
    raw = load_file(path)
    # The benchmark scores forecasts; daily seasonality is the least any trace here must support.
    report = dq.validate_history(raw, policy, seasonalities=("daily",), report_dir=report_dir)
    return dq.prepare_series(raw, report, policy), report.zero_windows + report.missing_windows


def evaluate(path: Path, series: pd.Series, policy: Capacity, *, prophet: bool = True) -> dict[str, object]:
    """Hold out the tail, forecast it with the plan's forecaster, the seasonal naives and (`prophet`) Prophet."""
    days = len(series) * (series.index[1] - series.index[0]).total_seconds() / 86400
    if days < HOLDOUT_DAYS + policy.backtest_min_train_days:
        raise fc.ForecastError(
            f"{days:.2f} days of history is too short to hold out {HOLDOUT_DAYS:g} days and cross-validate on "
            f"{policy.backtest_min_train_days:g}"
        )
    train, test = fc.split_holdout(series, HOLDOUT_DAYS)
    index = pd.DatetimeIndex(test.index)
    started = time.perf_counter()
    planning = fc.planning_forecast(train, index, policy, levels=LEVELS)
    seconds = time.perf_counter() - started
    # the plan's own check: its forecast against the best seasonal naive on the held-out tail, and its bands' coverage
    check = fc.check_holdout(train, test, planning.forecast, policy.coverage_tolerance)
    if check is None:
        raise fc.ForecastError(
            f"the last {HOLDOUT_DAYS:g} days are all gaps: nothing to score the forecast on"
        )
    row: dict[str, object] = {
        "trace": path.name,
        "held_out_windows": check.windows,
        "chosen": planning.forecaster,
        "smape_chosen": check.smape,
        "best_naive": check.naive,
        "smape_naive": check.naive_smape,
        "gain_vs_naive": check.gain,
    }
    if prophet:
        row["smape_prophet"] = fc.smape(
            test.to_numpy(), fc.forecast_members(train, ["prophet"], index)["prophet"].to_numpy()
        )
    for level in LEVELS:
        row[f"cov{int(level * 100)}"] = check.coverage[level]
    for level in LEVELS:
        folds = list(planning.backtest.fold_coverage(level).values())
        row[f"fold_cov{int(level * 100)}"] = f"{np.mean(folds):.0%} [{min(folds):.0%}-{max(folds):.0%}]"
    row["seconds"] = seconds
    return row


def earlier(path: Path, series: pd.Series, policy: Capacity, back_days: int) -> dict[str, object]:
    """The same split with the history cut `back_days` earlier: the 2 days before the cut held out."""
    cut = series[series.index <= series.index[-1] - pd.Timedelta(days=back_days)]
    row = evaluate(path, cut, policy, prophet=False)
    keep = (
        "trace",
        "chosen",
        "smape_chosen",
        "best_naive",
        "smape_naive",
        "gain_vs_naive",
        "cov80",
        "cov90",
        "cov95",
    )
    return {"days_back": back_days, "held_out_ends": cut.index[-1], **{k: row[k] for k in keep}}


def print_earlier(rows: list[dict[str, object]]) -> None:
    table = pd.DataFrame(rows).sort_values(["trace", "days_back"])
    with pd.option_context(
        "display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3f}".format
    ):
        print(
            "\nthe same split moved back (history cut days_back earlier, the 2 days before the cut held out):"
        )
        print(table.to_string(index=False))
    gains = table["gain_vs_naive"].to_numpy(dtype=float)
    print(
        f"chosen vs best seasonal naive over these splits: worst {gains.min():+.1%}, mean {gains.mean():+.1%}; "
        + "; ".join(
            f"{level:.0%} band coverage {table[f'cov{int(level * 100)}'].min():.1%}-"
            f"{table[f'cov{int(level * 100)}'].max():.1%}"
            for level in LEVELS
        )
    )


def main(traces: Path = TRACES, earlier_days: int = 0) -> int:
    if not traces.exists():
        print(f"no traces at {traces}: this benchmark needs ../shared/data/traces (or a folder as argument)")
        return 1
    policy = default_policy().capacity
    rows, gaps, skipped, moved = [], [], [], []
    with tempfile.TemporaryDirectory() as report_dir:
        for path in sorted(p for p in traces.iterdir() if p.is_file()):
            if path.suffix.lower() not in SUFFIXES:
                skipped.append(f"{path.name}: skipped, not a CSV or Parquet file")
                continue
            print(f"forecasting {path.name} ...", flush=True)
            try:
                series, gap_windows = history(path, report_dir, policy)
                rows.append(evaluate(path, series, policy))
                gaps.append(gap_windows)
            except (fc.ForecastError, dq.DataQualityError, HistoryError) as exc:
                skipped.append(f"{path.name}: skipped, {exc}")
                continue
            for back in range(1, earlier_days + 1):
                print(f"forecasting {path.name}, {back} day(s) earlier ...", flush=True)
                try:
                    moved.append(earlier(path, series, policy, back))
                except fc.ForecastError as exc:
                    skipped.append(f"{path.name}, {back} day(s) earlier: skipped, {exc}")
                    break
    if rows:
        table = pd.DataFrame(rows)
        table.insert(2, "gap_windows", gaps)
        with pd.option_context(
            "display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3f}".format
        ):
            print(table.to_string(index=False))
        gains = table["gain_vs_naive"].to_numpy(dtype=float)
        print(
            f"\nchosen vs best seasonal naive: worst trace {gains.min():+.1%}, mean {gains.mean():+.1%} "
            f"({'never worse' if gains.min() >= 0 else 'worse on ' + str(int((gains < 0).sum())) + ' trace(s)'})"
        )
        for level in LEVELS:
            cov = table[f"cov{int(level * 100)}"].to_numpy(dtype=float)
            off = np.abs(cov - level).max()
            verdict = "within" if off <= policy.coverage_tolerance else "outside"
            # every held-out window of every trace together: the band's calibration over all that was forecast
            pooled = float(np.average(cov, weights=table["held_out_windows"].to_numpy(dtype=float)))
            pooled_off = abs(pooled - level)
            print(
                f"{level:.0%} band: coverage {', '.join(f'{c:.1%}' for c in cov)}; worst trace {off * 100:.1f} points "
                f"off ({verdict} {policy.coverage_tolerance * 100:g}); all held-out windows together {pooled:.1%}, "
                f"{pooled_off * 100:.1f} points off ({'within' if pooled_off <= policy.coverage_tolerance else 'outside'} "
                f"{policy.coverage_tolerance * 100:g})"
            )
        print(
            "fold_covNN: the same bands on each cross-validation fold, calibrated on the other folds (leave one "
            "fold out): mean [min-max] over the folds, how far one 2-day window's coverage moves on this history"
        )
    if moved:
        print_earlier(moved)
    for line in skipped:
        print(line)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("traces", nargs="?", type=Path, default=TRACES, help="a folder of traces")
    parser.add_argument(
        "--earlier", type=int, default=0, metavar="K", help="also move the split back 1..K days on each trace"
    )
    args = parser.parse_args()
    if args.earlier < 0:
        parser.error(f"--earlier {args.earlier}: give a number of days >= 0 (0: the held-out split only)")
    sys.exit(main(args.traces, args.earlier))
