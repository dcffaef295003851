"""Alert noise, measured rather than quoted (SPEC §4): the NAB realAWSCloudwatch series (one application each, its
labelled windows the faults) and the ServeGen request-rate traces replayed as inference services with replica kills,
slowdowns and dependency outages injected, run through a Prometheus + Alertmanager model under each noise-reduction
strategy (tasks/monitoring/noise.py): notifications, reduction against the baseline, faults caught, time to notify.

Run: .venv/bin/python benchmarks/alert_noise.py [--data DIR] [--per-stream]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd

if __package__ in (None, ""):
    # Run as a script, this file's folder comes first on sys.path and benchmarks/serving.py would shadow `serving`.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from tasks.monitoring import anomaly as an  # noqa: E402 (after the path fix above)
from tasks.monitoring import noise as nz  # noqa: E402
from tasks.policy import default_policy  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRACES = ("servegen_m-mid_agg_rate_10min.csv", "servegen_m-small_agg_rate_10min.csv")


def load(data: Path) -> list[nz.Stream]:
    policy = default_policy()
    streams = [nz.nab_stream(s) for s in an.load_nab(data / "nab")]
    for name in TRACES:
        path = data / "traces" / name
        if not path.is_file():
            raise an.AnomalyDataError(f"no ServeGen trace at {path}")
        streams.append(nz.servegen_stream(path, policy))
    return streams


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1%}"


def table(summaries: list[nz.Summary]) -> pd.DataFrame:
    rows = []
    for s in summaries:
        claim = nz.SEED_CLAIMS.get(s.strategy)
        rows.append(
            {
                "strategy": s.strategy,
                "notifications": s.notifications,
                "reduction": _pct(s.reduction) if s.strategy != nz.BASELINE.name else "-",
                "seed claims": f"{claim[0]:g}-{claim[1]:g}%" if claim else "",
                "NAB windows": f"{s.nab_caught}/{s.nab_total}",
                "injected faults": f"{s.injected_caught}/{s.injected_total}",
                "median min to notify": "-"
                if math.isnan(s.median_delay_min)
                else f"{s.median_delay_min:.1f}",
            }
        )
    return pd.DataFrame(rows)


def per_stream(results: list[nz.StreamResult]) -> pd.DataFrame:
    rows = []
    for r in results:
        missed = [f"{o.fault.kind}@{o.fault.start}" for o in r.outcomes if not o.caught]
        rows.append(
            {
                "stream": r.stream,
                "strategy": r.strategy,
                "notifications": r.notifications,
                "repeats": r.repeats,
                "faults caught": f"{sum(o.caught for o in r.outcomes)}/{len(r.outcomes)}",
                "missed": ", ".join(missed),
            }
        )
    return pd.DataFrame(rows).sort_values(["stream"], kind="stable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help=f"shared data folder (default {DATA})")
    parser.add_argument(
        "--per-stream", action="store_true", help="also print each stream's counts per strategy"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        streams = load(args.data)
    except an.AnomalyDataError as exc:
        print(f"{exc}\nthis benchmark needs ../shared/data (nab/ and traces/), or a folder given with --data")
        return 1
    policy = default_policy()
    summaries, results = nz.measure(streams, policy)
    nab = [s for s in streams if s.source.startswith("NAB")]
    traces = [s for s in streams if not s.source.startswith("NAB")]
    print(
        f"data: {args.data}: {len(nab)} NAB realAWSCloudwatch series (5-min points, "
        f"{sum(len(s.faults) for s in nab)} labelled windows after calibration) and {len(traces)} ServeGen traces "
        f"(10-min points, {sum(len(s.faults) for s in traces)} injected faults: "
        f"{', '.join(nz.INJECTED)})"
    )
    print(
        "thresholds learned on each series' first 15% (NAB probation); baseline: static q99/q01 thresholds, for 0, "
        "every alert its own group, no inhibition, no filter\n"
    )
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table(summaries).to_string(index=False))
    alone = [s for s in summaries if s.strategy in nz.SEED_CLAIMS]
    cuts = [s.reduction for s in alone]
    print(
        f"\nseed's claim: 40-90% fewer alerts (SPEC §4); measured here: {min(cuts):.0%} to {max(cuts):.0%} for the "
        f"four strategies alone, {summaries[-1].reduction:.0%} for {summaries[-1].strategy} "
        f"({summaries[-1].injected_caught}/{summaries[-1].injected_total} injected faults and "
        f"{summaries[-1].nab_caught}/{summaries[-1].nab_total} NAB windows caught, baseline "
        f"{summaries[0].injected_caught}/{summaries[0].injected_total} and {summaries[0].nab_caught}/{summaries[0].nab_total})"
    )
    print(
        f"a fault is caught by a non-repeat notification of its application from its start to its end or "
        f"{nz.GRACE_S // 60} min after its start; time to notify is over the injected faults (a NAB window opens "
        "before its anomaly), 0 = at the evaluation the fault starts"
    )
    if args.per_stream:
        with pd.option_context("display.width", 250, "display.max_rows", 500, "display.max_colwidth", 80):
            print("\n" + per_stream(results).to_string(index=False))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
