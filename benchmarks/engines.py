"""Naive baseline (sentence-transformers `encode`, batch 1, FP32) beside every minilm variant, in one run.

Run: `.venv/bin/python -m benchmarks.engines [--quick] [--stsb ../shared/data/stsb/sts-dev.csv]`
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from rich.console import Console

from cli.render import render_table
from serving.zoo import english_sentences
from tasks.optimize.evaluation import (
    BENCH_ITEMS,
    BENCH_MIN_CALLS,
    DEFAULT_BATCH_SIZES,
    QUICK_ITEMS,
    QUICK_MIN_CALLS,
    VariantReport,
    compare_variants,
    measure_sentence_transformers,
    measure_variant,
    table_rows,
)
from tasks.policy import default_policy

SPEEDUP_GOAL = 4.0  # issue 2's goal: best faithful variant >= 4x the naive baseline's throughput
MODEL = "minilm"


def best_faithful(reports: list[VariantReport], threshold: float) -> VariantReport | None:
    """The fastest variant whose accuracy retention meets the policy threshold."""
    ok = [r for r in reports if r.retention is not None and r.retention >= threshold and r.timings]
    return max(ok, key=VariantReport.best_throughput, default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--stsb", default=None, help="STS-B file for Spearman retention")
    parser.add_argument("--variant", action="append", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    console = Console() if Console().is_terminal else Console(width=200)
    threshold = default_policy().optimization.accuracy_retention_threshold
    texts = english_sentences()[: QUICK_ITEMS if args.quick else BENCH_ITEMS]

    console.print("naive baseline: sentence-transformers encode, batch 1, FP32 ...", highlight=False)
    naive = measure_sentence_transformers(
        texts, batch=1, min_calls=QUICK_MIN_CALLS if args.quick else BENCH_MIN_CALLS
    )
    naive_row = VariantReport(
        MODEL, "naive: SentenceTransformer.encode", provider="torch-cpu", timings={1: naive}
    )
    console.print(
        f"    {naive.items_per_s:.1f} items/s, p50 {naive.p50_ms:.1f} ms, p99 {naive.p99_ms:.1f} ms",
        highlight=False,
    )

    reports = compare_variants(
        MODEL,
        args.variant,
        retention_threshold=threshold,
        quick=args.quick,
        stsb_path=args.stsb,
        progress=lambda m: console.print(m, highlight=False),
    )
    best = best_faithful(reports, threshold)
    extra: list[VariantReport] = []
    if best is not None:
        # threads 1 vs 2: on a 2-core box one thread can win when the tokenizer and Python share the cores
        console.print(f"re-measuring {best.variant} with 1 intra-op thread ...", highlight=False)
        one = measure_variant(MODEL, best.variant, quick=args.quick, intra_op_threads=1)
        one = replace(
            one,
            variant=f"{best.variant} (1 thread)",
            retention=best.retention,
            stsb_retention=best.stsb_retention,
            decision=best.decision,
        )
        extra.append(one)
    rows = table_rows([naive_row, *reports, *extra], DEFAULT_BATCH_SIZES)
    console.print(render_table(f"{MODEL}: naive baseline vs variants (in-process, this machine)", rows))

    winner = best_faithful([*reports, *extra], threshold)
    if winner is None:
        console.print(f"no variant keeps retention >= {threshold}", highlight=False)
        return
    speedup = winner.best_throughput() / naive.items_per_s
    batch = max(winner.timings, key=lambda b: winner.timings[b].items_per_s)
    verdict = "meets" if speedup >= SPEEDUP_GOAL else "misses"
    console.print(
        f"best variant keeping retention >= {threshold}: {winner.variant} at batch {batch}: "
        f"{winner.best_throughput():.1f} items/s vs naive {naive.items_per_s:.1f} items/s -> "
        f"speedup {speedup:.2f}x ({verdict} the {SPEEDUP_GOAL:.0f}x goal; retention {winner.retention:.4f})",
        highlight=False,
    )


if __name__ == "__main__":
    main()
