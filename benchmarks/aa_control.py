"""Does the cycle time its baseline like its candidates? An A/A check of the model level's timing, as the cycle runs it
on an endpoint: what serves now is timed in process, a knee search drives a trial app beside it (the served baseline's
measurement), then what serves now is timed again twice: once as the cycle's baseline timed again right before the
candidates (`time-baseline-again`), once as the A/A control (the same configuration named as a candidate). Per round
it prints the control's gain over the first timing (how the cycle judged before) and over the timing taken again (how
it judges now), each against the tolerance the control is judged by (the run-to-run spread, at least the policy's
`marginal_gain_stop`).

Run: `.venv/bin/python benchmarks/aa_control.py [--model digits-cnn --variant onnx-fp32 --rounds 4]` (about 2 minutes a
round here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script, this file's folder comes first on sys.path and benchmarks/serving.py would shadow `serving`.
    sys.path[0] = str(ROOT)

from tasks.optimize.candidates import Candidate  # noqa: E402 (after the path fix above)
from tasks.optimize.improvement import performance_improvement  # noqa: E402
from tasks.optimize.serving_search import (  # noqa: E402
    KneeSearch,
    batch_wait_ms,
    config_of,
    measure_config,
    remove_trial_apps,
)
from tasks.optimize.trials import Trial, measure  # noqa: E402
from tasks.optimize.validation import aa_tolerance  # noqa: E402
from tasks.policy import default_policy  # noqa: E402


def judged(control: Trial, baseline: Trial, floor: float) -> tuple[float, float, bool]:
    """The control's gain over `baseline`, how far from zero it may lie (the run-to-run spread, at least `floor`),
    and whether it does, as `tasks.optimize.validation.control_verdict` judges it."""
    gain = performance_improvement(baseline.median_throughput, control.median_throughput)
    spread = max(control.spread, baseline.spread)
    tolerance, within = aa_tolerance(gain, spread, floor)
    return gain, tolerance, within


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-cnn", help="the rehearsal's model")
    parser.add_argument("--variant", default="onnx-fp32")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=4, help="the rehearsal's A/A control uses four")
    opts = parser.parse_args()

    import pandas as pd
    import ray

    policy = default_policy()
    optimization = policy.optimization
    serving = policy.serving
    served = Candidate(
        opts.variant, opts.variant, "baseline", "baseline", serving.intra_op_threads, serving.max_batch_size
    )
    ray.init(address="local", include_dashboard=False, log_to_driver=False)  # never a cluster on this host
    knee = KneeSearch.of(optimization.serving_search)
    rows = []
    for number in range(1, opts.rounds + 1):
        print(
            f"round {number}: time {served.name}, knee search on a trial app, time it twice again", flush=True
        )
        first = measure(opts.model, served, opts.repeats, optimization).trial
        trial = measure_config(
            opts.model,
            opts.variant,
            config_of(served.params(), batch_wait_ms(policy)),
            policy,
            knee,
            wait_removal=False,  # as the cycle measures the served baseline: removed while it goes on
        )
        again = measure(opts.model, served, opts.repeats, optimization).trial
        control = measure(opts.model, served, opts.repeats, optimization).trial
        remove_trial_apps()  # the next round starts from a machine at rest
        floor = optimization.marginal_gain_stop
        before, spread_before, ok_before = judged(control, first, floor)
        now, spread_now, ok_now = judged(control, again, floor)
        rows.append(
            {
                "round": number,
                "knee req/s": round(trial.knee_rps, 1),
                "first items/s": round(first.median_throughput, 1),
                "again items/s": round(again.median_throughput, 1),
                "control items/s": round(control.median_throughput, 1),
                "vs first": f"{before:+.1%} / {spread_before:.1%}",
                "within (before)": ok_before,
                "vs again": f"{now:+.1%} / {spread_now:.1%}",
                "within (now)": ok_now,
            }
        )
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print()
        print(table.to_string(index=False))
    print(
        f"\nA/A control within its tolerance: {int(table['within (before)'].sum())} of {len(table)} rounds against the "
        f"first timing (before the knee search), {int(table['within (now)'].sum())} of {len(table)} against the "
        "baseline timed again right before it (what the cycle does now); per round above: gain / tolerance (the "
        f"run-to-run spread, at least the {default_policy().optimization.marginal_gain_stop:.0%} floor)"
    )
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
