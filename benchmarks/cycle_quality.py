"""How good is the cycle's serving-level search? On one endpoint and one run: (a) a brute-force grid over the
serving space, every configuration deployed as a temporary Ray Serve app and measured by its knee; (b) the cycle's
budgeted search (Optuna TPE, starting from the policy's serving defaults) on the same space, with the same knee search
(same ramp, step length and bisections). Prints the grid's best knee, the cycle's champion knee, their ratio, and the
trials and wall time of each. Run: `.venv/bin/python benchmarks/cycle_quality.py [--model minilm --variant onnx-fp32]`
(about 30 minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script, this file's folder comes first on sys.path and benchmarks/serving.py would shadow `serving`.
    sys.path[0] = str(ROOT)

from tasks.optimize.serving_search import (  # noqa: E402 (after the path fix above)
    KneeSearch,
    SearchRun,
    ServingConfig,
    ServingSpace,
    batch_wait_ms,
    grid_search,
    measure_config,
    tpe_search,
)
from tasks.policy import default_policy  # noqa: E402

# The space: replicas {1,2} x threads {1,2} x max batch {1,4,8,16} x wait {1,5} ms (the cache left out: no
# request log, so baseline and candidates are all measured cold).
SPACE = ServingSpace(replicas=(1, 2), threads=(1, 2), max_batch=(1, 4, 8, 16), wait_ms=(1.0, 5.0))
KNEE = KneeSearch(start_rps=10.0, step_factor=1.6, step_duration_s=3.0, max_steps=14, bisect_steps=3)


def summary_row(run: SearchRun) -> dict[str, object]:
    best = run.best
    return {
        "search": run.method,
        "trials": len(run.trials),
        "failed": sum(1 for t in run.trials if not t.ok),
        "wall s": round(run.seconds),
        "best config": best.config.name if best else "-",
        "best knee req/s": round(best.knee_rps, 1) if best else 0.0,
        "P99 ms there": round(best.p99_ms, 1) if best and best.p99_ms is not None else None,
        "stopped": run.stop_reason,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument(
        "--variant", default="onnx-fp32", help="the model-level winner the serving search runs on"
    )
    parser.add_argument(
        "--max-trials", type=int, default=9, help="the cycle's trial budget (the grid has 32)"
    )
    parser.add_argument("--max-minutes", type=float, default=30.0, help="the cycle's time budget")
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()

    import pandas as pd
    import ray

    from serving.variants import ensure_variant

    policy = default_policy()
    ensure_variant(opts.model, opts.variant)  # built once, before any trial is timed
    ray.init(
        address="local", include_dashboard=False, log_to_driver=False
    )  # never a cluster already on this host
    serving = policy.serving
    start = ServingConfig(1, serving.intra_op_threads, serving.max_batch_size, batch_wait_ms(policy))
    if start not in SPACE.grid():
        start = (
            None  # the policy's defaults lie outside the benchmark's space: TPE starts from its own samples
        )

    def measure(config: ServingConfig, number: int):  # noqa: ANN202 - a Measure
        return measure_config(opts.model, opts.variant, config, policy, KNEE, number=number)

    print(f"serving space: {SPACE.size} configurations; knee search per trial: {asdict(KNEE)}", flush=True)
    print(f"(a) grid over all {SPACE.size} configurations", flush=True)
    grid = grid_search(SPACE, measure, say=lambda m: print("  " + m, flush=True))
    print(
        f"(b) the cycle's search: TPE, at most {opts.max_trials} trials / {opts.max_minutes:g} min",
        flush=True,
    )
    cycle = tpe_search(
        SPACE,
        measure,
        max_trials=opts.max_trials,
        max_minutes=opts.max_minutes,
        seed=opts.seed,
        start=start,
        say=lambda m: print("  " + m, flush=True),
    )
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 60):
        print()
        print(pd.DataFrame([summary_row(grid), summary_row(cycle)]).to_string(index=False))
        print("\ngrid, best ten:")
        ranked = sorted((t for t in grid.trials if t.ok), key=lambda t: -t.knee_rps)[:10]
        print(pd.DataFrame([t.row() for t in ranked]).drop(columns=["reason"]).to_string(index=False))
        print("\ncycle's trials:")
        print(pd.DataFrame([t.row() for t in cycle.trials]).drop(columns=["reason"]).to_string(index=False))
    if grid.best is None or cycle.best is None:
        print("\nno configuration met the SLA in one of the searches: no ratio")
        return 1
    knee_ratio = cycle.best.knee_rps / grid.best.knee_rps
    time_ratio = cycle.seconds / grid.seconds
    print(
        f"\ncycle's champion knee / grid's best knee: {knee_ratio:.1%} ({cycle.best.knee_rps:.1f} vs "
        f"{grid.best.knee_rps:.1f} req/s); wall time {time_ratio:.1%} of the grid's ({cycle.seconds:.0f} vs "
        f"{grid.seconds:.0f} s); trials {len(cycle.trials)} vs {len(grid.trials)}"
    )
    # the grid's own run-to-run spread: the champion's configuration as the grid measured it
    same = next((t for t in grid.trials if t.config == cycle.best.config), None)
    if same is not None:
        print(
            f"the champion's configuration as the grid measured it: {same.knee_rps:.1f} req/s "
            f"({cycle.best.knee_rps / same.knee_rps - 1:+.1%} between the two measurements: the run-to-run spread)"
            if same.knee_rps > 0
            else f"the champion's configuration failed the SLA when the grid measured it ({same.reason})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
