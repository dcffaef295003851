"""The `make run` job: every pipeline once, end to end, on the embedded defaults, with progress as it goes."""

from __future__ import annotations

import os
import time
from typing import Any

import typer
from rich.console import Console

from cli.pipelines import quiet_env
from cli.render import print_json
from tasks.records.names import ML_VIEW

# A short stability run and risk window: the demo shows the gate working, the policy's 72 h is for production.
DEMO_STABILITY_S = 15.0
DEMO_PERFORMANCE_S = 10.0
DEMO_RISK_WINDOW_S = 15.0
DEMO_RELEASE_BENCHMARK_S = 10.0
DEMO_STRESS_BUDGET_S = 75.0
# The demo's stress test steps in 4 s instead of the monthly suite's 8: at the rates a 2-core box reaches, a step
# still holds hundreds of requests for its P99. (What served before is compared with the champion on the cycle's own
# trial apps, by one knee search: the served baseline's trial and the champion's.)
DEMO_STRESS_STEP_S = 4.0
# The serving level's trials in the demo (the policy's 4 each week): where it starts and two TPE proposals.
DEMO_SERVING_TRIALS = 3
# The last stress test starts its ramp at this share of the knee the serving level measured for the champion's
# knobs, instead of at 5 req/s: the same knee, found in fewer steps.
DEMO_STRESS_START_SHARE = 0.4
DEMO_VARIANTS = ["torch-fp32", "onnx-fp32", "onnx-int8-dynamic", "onnx-int8-dynamic-perchannel"]


class _Steps:
    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total, self.n, self.started = console, total, 0, time.monotonic()

    def __call__(self, title: str) -> None:
        self.n += 1
        elapsed = time.monotonic() - self.started
        self.console.rule(f"[bold][{self.n}/{self.total}] {title}[/bold]  (t+{elapsed:.0f} s)")


def _stress(
    model: str, url: str, api_key: str, budget_s: float, start_rps: float | None = None
) -> dict[str, Any]:
    """The measurement flow's stress suite on the endpoint's champion (the cache bypassed: the model's knee), its ramp
    from `start_rps` (the policy's when None), in steps of DEMO_STRESS_STEP_S."""
    from flows.measurement import measurement_suite
    from tasks.records import registry

    now = registry.alias_version(model, registry.CHAMPION)
    return measurement_suite(
        suite="stress",
        model=model,
        url=url,
        api_key=api_key,
        stress_budget_s=budget_s,
        rate=start_rps,
        duration_s=DEMO_STRESS_STEP_S,
        variant=now.variant if now else None,
        sha256=now.sha256 if now else None,
    )


def run_demo(model: str, port: int, console: Console) -> dict[str, Any]:
    step = _Steps(console, 7)
    from serving.settings import get_settings
    from tasks.policy import default_policy

    settings = get_settings()
    policy = default_policy()
    console.print(
        f"data dir: {settings.data_dir}   MLflow: {settings.resolved_tracking_uri()}", highlight=False
    )

    step(f"variants of {model}: build, time in process, score accuracy")
    from cli.render import render_table
    from tasks.optimize.evaluation import compare_variants, table_rows

    sizes = [1, 8, 32]
    threshold = policy.optimization.accuracy_retention_threshold
    reports = compare_variants(
        model,
        DEMO_VARIANTS,
        retention_threshold=threshold,
        batch_sizes=sizes,
        quick=True,
        progress=lambda msg: console.print(msg, highlight=False),
    )
    console.print(render_table(f"{model}: variants (in-process, quick)", table_rows(reports, sizes)))

    step("serve the champion with Ray Serve")
    from serving.app import ingress_env

    env, ingress = ingress_env(settings.ingress)
    os.environ.update(env)
    import ray
    from ray import serve

    from serving.app import run_local

    # The keys `inferops serve` uses: the configured ones, else a pair made in the data dir on the first run.
    from serving.auth import client_key, ensure_local_keys
    from serving.variants import ensure_variant
    from tasks.records import registry

    made = ensure_local_keys()
    api_key = client_key()
    if api_key is None:
        raise typer.BadParameter("no inference key: set INFEROPS_API_KEYS or remove INFEROPS_API_KEYS_FILE")
    for path in made.files:
        console.print(f"made {path.name} in {path.parent} (mode 0600): the endpoint's keys", highlight=False)
    ray.init(
        address=settings.ray_address, include_dashboard=False, configure_logging=False, log_to_driver=False
    )
    summary: dict[str, Any] = {}
    try:
        reference = ensure_variant(model, "torch-fp32")
        champion = registry.ensure_champion(
            model, reference.path, {**reference.manifest, "variant": "torch-fp32"}
        )
        app_args = policy.app_args(model=f"models:/{model}@champion", api_keys=[api_key])
        url = run_local(app_args, name="inferops", port=port)
        console.print(
            f"serving models:/{model}@champion (v{champion.version}, {champion.variant}) at {url} "
            f"[ingress: {ingress}]",
            highlight=False,
        )

        step("risk assessment on the live endpoint (the cycle's checklist reads it)")
        from cli.render import print_risk
        from flows.risk_assessment import risk_assessment

        risk = risk_assessment(model=model, url=url, api_key=api_key)
        print_risk(risk, console)
        summary["risk"] = (
            f"overall {risk['overall']:g} ({risk['overall_level']}), at high: {', '.join(risk['high']) or 'none'}"
        )

        step("optimization cycle (with the phase gate on the challenger)")
        from cli.render import print_cycle, print_gate
        from flows.optimization_cycle import optimization_cycle
        from serving.zoo import get_model
        from tasks.measure.workload import demo_request_log, load_request_log, repeat_share

        kind = get_model(model).kind
        log = demo_request_log(
            model,
            settings.data_dir / "workloads" / f"{model}-requests{'.jsonl' if kind == 'text' else '.npy'}",
        )
        requests = load_request_log(log, kind)
        console.print(
            f"workload: {len(requests)} requests with Zipf popularity, {repeat_share(requests):.0%} repeat an "
            f"earlier one ({log})",
            highlight=False,
        )
        cycle = optimization_cycle(
            model=model,
            url=url,
            api_key=api_key,
            request_log=str(log),
            gate=True,
            gate_stability_s=DEMO_STABILITY_S,
            gate_performance_s=DEMO_PERFORMANCE_S,
            gate_risk_window_s=DEMO_RISK_WINDOW_S,
            gate_benchmark_s=DEMO_RELEASE_BENCHMARK_S,
            require_approval=False,
            serving_trials=DEMO_SERVING_TRIALS,
        )
        print_cycle(cycle, console)
        if "gate" in cycle["final"]:
            print_gate(cycle["final"]["gate"], console)

        step("stress test: the champion's knee (highest rate with P99 under the SLA)")
        # only when the cycle promoted its champion: else production serves the old one, whose knee this is not
        measured = (
            (cycle["final"].get("serving_level") or {}).get("served_knee_rps") if cycle["champion"] else None
        )
        after = _stress(
            model,
            url,
            api_key,
            DEMO_STRESS_BUDGET_S,
            DEMO_STRESS_START_SHARE * measured if measured else None,
        )
        console.print(
            f"knee: {after.get('knee_rps', 0):.1f} req/s (P99 <= SLA, Cache-Control: no-cache, so the model "
            f"answers every request), recorded in MLflow run {after['mlflow_run_id']}",
            highlight=False,
        )
        summary.update(_cycle_summary(cycle, after, threshold))
    finally:
        serve.shutdown()
        ray.shutdown()

    step("quarterly capacity plan on a bundled synthetic history")
    from cli.render import print_plan
    from flows.capacity_planning import capacity_planning
    from tasks.capacity.synthetic import write_synthetic_history

    plan = capacity_planning(model=model, history=str(write_synthetic_history()), synthetic=True)
    print_plan(plan, console)
    summary["capacity plan"] = plan["recommendation"]["reason"]

    step("where to browse the results")
    from cli.render import summary_panel

    db = settings.resolved_tracking_uri()
    summary |= {
        "MLflow": f".venv/bin/mlflow ui --backend-store-uri {db}   then open "
        f"http://127.0.0.1:5000/#/experiments?{ML_VIEW} (the model-training view)",
        "Prefect": ".venv/bin/prefect server start   then open http://127.0.0.1:4200",
        "serve again": f".venv/bin/inferops serve --model models:/{model}@champion",
        "status": ".venv/bin/inferops status",
        "notebooks": "notebooks/optimization_cycles.ipynb, notebooks/capacity_plan.ipynb",
    }
    console.print(summary_panel(summary))
    return summary


def _knee_note(final: dict[str, Any]) -> str:
    """Where the served knobs came from when the serving level chose them."""
    level = final.get("serving_level") or {}
    if not level.get("chosen"):
        return ""
    measured = "; the champion measured with them" if level.get("confirmed") else ""
    return (
        f" (the best of {level['trials']} configurations of {level['variant']} measured on the endpoint{measured}: "
        f"knee {level['served_knee_rps']} req/s on its trial app)"
    )


def knee_comparison(cycle: dict[str, Any]) -> str | None:
    """The champion's knee against what served before, both measured by the cycle on trial apps beside production
    with one knee search (the served baseline's trial and the champion's), in words; None when not both were."""
    base = cycle.get("served_baseline") or {}
    before = base.get("knee req/s") if base.get("status") == "ok" else None
    if not before:
        return None
    level = (cycle["final"].get("serving_level") or {}) if cycle["champion"] else {}
    after = level.get("served_knee_rps")
    what = f"{base['variant']} {base['config']}"
    if not after:
        return f"{before:.1f} req/s for what serves ({what}); nothing promoted"
    return (
        f"{after:.1f} req/s for the champion vs {before:.1f} req/s for what served before ({what}): "
        f"{after / before:.1f}x, each on a trial app beside production by the same knee search"
    )


def _cycle_summary(cycle: dict[str, Any], after: dict[str, Any], threshold: float) -> dict[str, Any]:
    """The summary's lines about the champion: what it is, how it serves, how it compares with what served before."""
    from cli.render import knobs_text

    final = cycle["final"]
    row = next((r for r in cycle["results"] if r["candidate"] == cycle["champion"]), None)
    knobs = (final.get("serving_knobs") or {}).get("knobs")
    gate = final.get("gate")
    return {
        "champion": cycle["champion"] or final.get("champion"),
        "serves with": (knobs_text(knobs) + _knee_note(final)) if knobs else None,
        "retention": f"{row['retention']} (threshold {threshold})"
        if row and row.get("retention") is not None
        else None,
        "knee (cycle)": knee_comparison(cycle),
        "knee (production)": f"{after.get('knee_rps') or 0.0:.1f} req/s, the stress test on the live endpoint "
        "after the cycle",
        "phase gate": (
            f"{'PASS' if gate['passed'] else 'FAIL'} (weighted {gate['weighted_score']:.2%})"
            if gate
            else None
        ),
    }


def demo(
    model: str = typer.Option("minilm", help="the model the demo optimizes and serves"),
    port: int = typer.Option(8000, help="loopback port for the Ray Serve endpoint"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON at the end (for scripts)"),
) -> None:
    """The main job end to end on embedded defaults: variants, serve, optimize+gate, stress, capacity plan."""
    from cli.render import console

    quiet_env()
    started = time.monotonic()
    summary = run_demo(model, port, console())
    if as_json:
        print_json(summary)
    typer.echo(f"\ndemo finished in {time.monotonic() - started:.0f} s")
