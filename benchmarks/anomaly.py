"""Anomaly detection on the NAB realAWSCloudwatch series (17 files, 30 labelled windows): the issue's reference
IsolationForest, a plain rolling z-score and the streaming robust z-score detector, each scored by window recall,
false alarms per 1,000 points, alarm events per 1,000 and NAB's standard-profile score. A leave-one-file-out run
picks the detector's parameters on 16 files by the labels and scores the 17th, to show the defaults generalise.

Run: .venv/bin/python benchmarks/anomaly.py [--nab DIR] [--per-file]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):
    # Run as a script, this file's folder comes first on sys.path and benchmarks/serving.py would shadow `serving`.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from tasks.monitoring import anomaly as an
from tasks.policy import default_policy  # noqa: E402 (after the path fix above)

NAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"
# the policy's detector (monitoring.anomaly), as production would run it
DEFAULT = an.DetectorConfig(**default_policy().monitoring.anomaly.model_dump())
# The leave-one-file-out grid: around the defaults, each parameter on a scale an operator would pick from.
GRID: dict[str, list[float]] = {
    "window": [288, 576],  # one or two days of 5-minute points
    "threshold": [5.0, 6.0, 8.0],
    "range_floor": [0.02, 0.05],
    "cooldown": [48, 96, 144],  # 4, 8 or 12 hours
}


def grid() -> list[an.DetectorConfig]:
    return [
        replace(DEFAULT, window=int(w), threshold=t, range_floor=f, cooldown=int(c))
        for w, t, f, c in itertools.product(*GRID.values())
    ]


def row(name: str, score: an.CorpusScore, seconds: float) -> dict[str, object]:
    return {
        "detector": name,
        "found": f"{score.found}/{score.windows}",
        "recall": score.recall,
        "FA pts/1k": score.per_1k("false_points"),
        "FA pts/1k normal": score.per_1k("false_points", of="normal_points"),
        "events/1k": score.per_1k("alarm_events"),
        "FA events/1k": score.per_1k("false_events"),
        "NAB std": score.nab_score,
        "seconds": seconds,
    }


def run(
    corpus: Sequence[an.LabelledSeries], alarms_of: Callable[[an.LabelledSeries], an.BoolArray]
) -> tuple[an.CorpusScore, list[an.BoolArray], float]:
    started = time.perf_counter()
    alarms = [alarms_of(s) for s in corpus]
    return an.score_corpus(corpus, alarms), alarms, time.perf_counter() - started


def select(scores: list[list[an.FileScore]], reference: list[an.FileScore]) -> int:
    """The rule the held-out run uses on the training files: among the configurations that find at least as many
    windows as the reference, the fewest false-alarm points (then the best NAB score); else the most windows."""
    ref_found = sum(f.found for f in reference)
    corpus = [an.CorpusScore(files) for files in scores]
    eligible = [i for i, c in enumerate(corpus) if c.found >= ref_found] or [
        max(range(len(corpus)), key=lambda i: corpus[i].found)
    ]
    return min(eligible, key=lambda i: (corpus[i].per_1k("false_points"), -corpus[i].nab_score))


def leave_one_file_out(
    corpus: Sequence[an.LabelledSeries], reference: an.CorpusScore
) -> tuple[an.CorpusScore, Counter[an.DetectorConfig], float]:
    """Each file scored with the configuration `select` picks on the other files."""
    started = time.perf_counter()
    configs = grid()
    per_config = [an.score_corpus(corpus, [an.detect(s.values, c) for s in corpus]).files for c in configs]
    held_out, chosen = [], Counter[an.DetectorConfig]()
    for k in range(len(corpus)):
        train = [[f for j, f in enumerate(files) if j != k] for files in per_config]
        best = select(train, [f for j, f in enumerate(reference.files) if j != k])
        chosen[configs[best]] += 1
        held_out.append(per_config[best][k])
    return an.CorpusScore(held_out), chosen, time.perf_counter() - started


def chance_recall(corpus: Sequence[an.LabelledSeries], rate: float) -> float:
    """Expected window recall of alarms drawn at random at `rate` per point: 1 - (1 - rate)^length per window."""
    lengths = [hi - lo + 1 for s in corpus for lo, hi in s.windows]
    return float(np.mean([1 - (1 - rate) ** n for n in lengths]))


def describe(config: an.DetectorConfig) -> str:
    return ", ".join(f"{k}={getattr(config, k):g}" for k in GRID)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, default=NAB, help=f"NAB data folder (default {NAB})")
    parser.add_argument("--per-file", action="store_true", help="also print each file's scores per detector")
    args = parser.parse_args(argv)
    try:
        corpus = an.load_nab(args.nab)
    except an.AnomalyDataError as exc:
        print(f"{exc}\nthis benchmark needs ../shared/data/nab (or a folder given with --nab)")
        return 1
    points = sum(len(s.values) for s in corpus)
    print(
        f"NAB data: {args.nab} ({len(corpus)} files, {points:,} points, "
        f"{sum(len(s.windows) for s in corpus)} labelled windows); standard profile "
        f"(A_TP={an.STANDARD.tp:g}, A_FP=-{an.STANDARD.fp:g}, A_FN=-{an.STANDARD.fn:g}), probation 15% per file\n"
    )
    started = time.perf_counter()
    reference, ref_alarms, ref_s = run(corpus, lambda s: an.isolation_forest_reference(s.values))
    debounced, _, deb_s = run(corpus, lambda s: an.debounce(an.isolation_forest_reference(s.values), DEFAULT))
    plain, _, plain_s = run(corpus, lambda s: an.rolling_zscore_alarms(s.values))
    ours, _, ours_s = run(corpus, lambda s: an.detect(s.values, DEFAULT))
    lofo, chosen, lofo_s = leave_one_file_out(corpus, reference)
    ref_config = an.IsolationForestConfig()
    rows = [
        row(
            f"reference IsolationForest ({ref_config.contamination:.0%}, z-window {ref_config.zscore_window})",
            reference,
            ref_s,
        ),
        row(f"reference, debounced (cooldown {DEFAULT.cooldown})", debounced, deb_s),
        row("rolling z-score |z|>3 (1 day)", plain, plain_s),
        row("robust z + range, defaults", ours, ours_s),
        row("robust z + range, leave-one-file-out", lofo, lofo_s),
    ]
    with pd.option_context(
        "display.width", 250, "display.max_columns", 20, "display.float_format", "{:.2f}".format
    ):
        print(pd.DataFrame(rows).to_string(index=False))
    rate = float(sum(a[an.probation_length(len(a)) :].sum() for a in ref_alarms)) / sum(
        f.points for f in reference.files
    )
    print(
        f"\nchance: alarms at random at the reference's rate ({rate:.2%} of points) find "
        f"{chance_recall(corpus, rate):.0%} of windows on average (the windows are wide: 62-473 points)"
    )
    print(f"defaults: {describe(DEFAULT)}, warmup={DEFAULT.warmup}, range_margin={DEFAULT.range_margin:g}")
    print("leave-one-file-out picks (per held-out file, on the other 16):")
    for config, count in chosen.most_common():
        print(f"  {count:2d} x {describe(config)}{'  (the defaults)' if config == DEFAULT else ''}")
    if args.per_file:
        detail = []
        for name, score in [("reference", reference), ("robust z", ours), ("robust z LOFO", lofo)]:
            for f in score.files:
                detail.append(
                    {
                        "file": f.name.split("/")[-1],
                        "detector": name,
                        "found": f"{f.found}/{f.windows}",
                        "FA pts": f.false_points,
                        "events": f.alarm_events,
                        "FA events": f.false_events,
                        "NAB raw": f.raw,
                    }
                )
        table = pd.DataFrame(detail).sort_values(["file", "detector"], kind="stable")
        with pd.option_context(
            "display.width", 250, "display.max_rows", 200, "display.float_format", "{:.2f}".format
        ):
            print("\n" + table.to_string(index=False))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
