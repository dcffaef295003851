"""MLflow records for the notebook and browse tests, written the way the flows write them: by the project's own
record functions (`tasks.optimize.report`, `tasks.release.tracking`, `tasks.records.registry`,
`tasks.capacity.tracking`) on constructed measurements, into a temporary store of the test's own."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serving.artifacts import write_artifact
from serving.settings import get_settings
from serving.variants import VARIANT_RECIPES
from tasks.capacity import data_quality as dq
from tasks.capacity import forecasting as fc
from tasks.capacity import plan as cap
from tasks.capacity import tracking as capacity_tracking
from tasks.capacity.history import ColumnMapping, load_file
from tasks.capacity.synthetic import write_synthetic_history
from tasks.decision import Decision
from tasks.optimize import report
from tasks.optimize.baseline import CycleBaseline
from tasks.optimize.candidates import Candidate
from tasks.optimize.checklist import CHECKLIST_ITEMS, check_checklist
from tasks.optimize.improvement import roi_figures
from tasks.optimize.search import CycleSettings, SearchOutcome
from tasks.optimize.trials import Measured, Trial
from tasks.optimize.validation import CandidateResult, validate
from tasks.policy import Policy, load_policy
from tasks.records import names, registry, runs
from tasks.records.store import configure
from tasks.release import approval, tracking
from tasks.release.gate import GateSettings, ItemResult, decide, render_markdown
from tasks.release.rollout_risk import Observation, confirmed

MODEL = "digits-cnn"
METRIC = "accuracy"
# The cheapest forecasters the policy lists: the plan's wiring is under test here, not forecast quality.
QUICK_FORECASTERS = ["seasonal-naive-daily", "seasonal-naive-weekly"]
# The synthetic history cut to 18 days: past the policy's 14-day minimum and its outage at day 17.4.
HISTORY_DAYS = 18
KNEE_RPS = 20.0
GATE_URL = "http://127.0.0.1:8000/gate-digits-cnn"  # the gated app's address (nothing listens: records only)


@contextmanager
def isolated_store(data_dir: Path) -> Iterator[Path]:
    """Point the project's settings (and so every MLflow client it opens) at an empty data dir of its own; the
    session's store is back in force afterwards."""
    keys = ("INFEROPS_DATA_DIR", "INFEROPS_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")
    old = {k: os.environ.get(k) for k in keys}
    os.environ["INFEROPS_DATA_DIR"] = str(data_dir)
    os.environ.pop("INFEROPS_MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    get_settings.cache_clear()
    try:
        configure()
        yield data_dir
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        configure()


@dataclass(frozen=True)
class Written:
    """What the records hold, for the tests to look for."""

    model: str
    cycle_run_ids: list[str]
    champion_version: str  # the version the first cycle promoted (rolled back afterwards)
    baseline_version: str
    accepted: list[str]
    rejected: dict[str, str]  # candidate -> reason
    gate_reason: str
    rollback_reason: str


def _artifact(folder: Path, variant: str) -> tuple[Path, dict]:
    path = folder / f"{MODEL}-{variant}.onnx"
    manifest = write_artifact(
        path, lambda p: p.write_bytes(f"{MODEL} {variant}".encode()), {"variant": variant}
    )
    return path, manifest


def _measured(folder: Path, variant: str, trial: Trial, value: float) -> Measured:
    path, manifest = _artifact(folder, variant)
    return Measured(
        trial, METRIC, value, value, "CPUExecutionProvider", manifest["sha256"], path, manifest, 0.1
    )


def _candidate(variant: str) -> Candidate:
    """A model-stage candidate of `variant`, as tasks/optimize/candidates.py plans it."""
    return Candidate(variant, variant, VARIANT_RECIPES[variant].opt_type, "model", 1, 8)


def _result(
    candidate: Candidate, measured: Measured, baseline: CycleBaseline, policy: Policy
) -> CandidateResult:
    retention = baseline.retention(measured.value)
    result = CandidateResult(
        candidate.name,
        candidate.optimization_type,
        candidate.params(),
        measured.trial,
        retention,
        retention,
        METRIC,
    )
    return validate(result, baseline.measured.trial, policy.optimization, policy.rollout_gate.sla_p99_ms)


def _open_cycle(
    baseline: CycleBaseline, tried: list[tuple[Candidate, Measured]], policy: Policy
) -> tuple[str, SearchOutcome]:
    """A cycle's parent run, its baseline and plan, and each candidate's nested run, as the flow writes them."""
    settings = CycleSettings.resolve(policy.optimization, threads=1, batch=8, repeats=3)
    run_id = runs.log_run(report.cycle_record(MODEL, None), finish=False)
    runs.write(run_id, report.baseline_record(MODEL, baseline, settings, [c for c, _ in tried]))
    outcome = SearchOutcome()
    for candidate, measured in tried:
        result = _result(candidate, measured, baseline, policy)
        runs.log_run(report.candidate_record(result, measured, baseline), parent_run_id=run_id)
        outcome.results.append(result)
        outcome.measured[result.name] = measured
    return run_id, outcome


def _close_cycle(
    run_id: str,
    baseline: CycleBaseline,
    outcome: SearchOutcome,
    promotion: dict[str, Any] | None,
    gated: dict[str, Any] | None,
    policy: Policy,
) -> None:
    """The cycle's summary (what it ended serving, ROI, the report) on its parent run, which then finishes."""
    served = report.gated_release(gated)[1] if gated else None
    final = report.final_state(outcome, baseline, promotion, gated, served, None)
    final_rps = report.final_throughput(outcome, baseline, promotion is not None)
    roi = roi_figures(
        baseline.measured.trial.median_throughput,
        final_rps,
        policy.optimization,
        policy.rollout_gate.target_qps,
    )
    checklist = check_checklist({item: (True, "constructed for the test") for item in CHECKLIST_ITEMS})
    text = report.render_report(
        MODEL,
        report.summarize_baseline(baseline),
        "model computation",
        outcome.results,
        outcome.champion if promotion else None,
        final,
        roi,
        checklist,
    )
    runs.write(run_id, report.summary_record(MODEL, outcome, roi, text, 1.0, final))
    runs.finish_run(run_id)


def _gate(candidate: registry.VersionRef, parent_run_id: str, policy: Policy) -> dict[str, Any]:
    """A passing phase gate nested under the cycle, decided by policy, promoting the candidate; its risk window
    then sees P99 80% over the gate's baseline, and the rollback the risk policy demands is carried out."""
    results = [
        ItemResult(
            item, 0.97 if item == "performance" else 1.0, [Decision(item, "constructed", 1.0, True, "ok")]
        )
        for item in policy.rollout_gate.items
    ]
    verdict = decide(results, policy.rollout_gate)
    settings = GateSettings.resolve(
        policy, stability_s=4, performance_s=4, risk_window_s=4, require_approval=False
    )
    params = settings.params(MODEL, GATE_URL, registry.CHALLENGER, candidate.version, policy)
    gate_md = render_markdown(verdict, title=tracking.gate_title(MODEL, candidate))
    run_id = runs.log_run(
        tracking.gate_record(MODEL, verdict, results, candidate, params, gate_md),
        parent_run_id=parent_run_id,
        finish=False,
    )
    decision = approval.by_policy(MODEL, candidate.version, verdict)
    runs.write(run_id, tracking.decision_record(decision))
    promotion = {**registry.promote(MODEL), "promoted": True}
    runs.write(run_id, tracking.promotion_record(promotion))
    before, after = Observation(10.0, 20.0, 0.0, 0.3), Observation(18.0, 20.0, 0.0, 0.3)
    done = []
    for action in confirmed(before, [after, after], policy.rollout_risk):
        # what apply_risk_action records, without an endpoint to switch
        back = registry.rollback(MODEL, action.reason)
        done.append({**asdict(action), "at": time.time(), "registry": asdict(back), "done": True})
    runs.write(run_id, tracking.risk_record(before, [after, after], done))
    outcome = tracking.gate_outcome(MODEL, GATE_URL, verdict, decision, run_id, promotion, done, None, 1.0)
    runs.write(run_id, runs.RunRecord("gate", names.GATE_EXPERIMENT, metrics={"wall_s": 1.0}))
    runs.finish_run(run_id)
    return outcome


def write_cycles(folder: Path, policy: Policy | None = None) -> Written:
    """Two cycles of digits-cnn. The first: onnx-fp32 (lossless, 5x) is accepted, onnx-int8-dynamic (retention
    0.92) rejected with its rollback record; the winner passes the gate, is promoted, then rolled back by the risk
    window. The second: onnx-int8-static is rejected and the champion is unchanged."""
    policy = policy or load_policy()
    folder.mkdir(parents=True, exist_ok=True)
    reference = _measured(folder, "torch-fp32", Trial((100.0, 101.0, 99.0), (20.0, 20.4, 19.6)), 0.98)
    first = registry.ensure_champion(MODEL, reference.path, {**reference.manifest, "variant": "torch-fp32"})
    baseline = CycleBaseline(MODEL, _candidate("torch-fp32"), reference, 0.98, first.version)
    fp32 = _measured(folder, "onnx-fp32", Trial((500.0, 502.0, 498.0), (4.0, 4.1, 3.9)), 0.98)
    int8 = _measured(folder, "onnx-int8-dynamic", Trial((900.0, 905.0, 895.0), (2.0, 2.1, 1.9)), 0.9016)
    run_id, outcome = _open_cycle(
        baseline,
        [(_candidate("onnx-fp32"), fp32), (_candidate("onnx-int8-dynamic"), int8)],
        policy,
    )
    winner = outcome.champion
    assert winner is not None and winner.name == "onnx-fp32", [r.reason for r in outcome.results]
    challenger = registry.register_candidate(
        MODEL,
        fp32.path,
        {**fp32.manifest, "variant": winner.params["variant"]},
        winner.params,
        winner.hit_rate,
    )
    gated = _gate(challenger, run_id, policy)
    promotion, _ = report.gated_release(gated)
    _close_cycle(run_id, baseline, outcome, promotion, gated, policy)

    static = _measured(folder, "onnx-int8-static", Trial((950.0, 960.0, 940.0), (1.9, 2.0, 1.8)), 0.85)
    second, unchanged = _open_cycle(baseline, [(_candidate("onnx-int8-static"), static)], policy)
    assert unchanged.champion is None
    registry.discard_challenger(MODEL)
    _close_cycle(second, baseline, unchanged, None, None, policy)
    rejected = {r.name: r.reason for r in outcome.results + unchanged.results if not r.accepted}
    return Written(
        MODEL,
        [run_id, second],
        challenger.version,
        first.version,
        [winner.name],
        rejected,
        gated["reason"],
        gated["risk_actions"][0]["reason"],
    )


@dataclass(frozen=True)
class WrittenPlan:
    run_id: str
    recommendation: str  # the run's recommendation tag: units x option
    options: list[str]
    strategy: str


def write_capacity_plan(folder: Path, onnx_path: Path, policy: Policy | None = None) -> WrittenPlan:
    """A capacity plan as flows/capacity_planning.py records it (the same calls, without Prefect) on the synthetic
    history, with the cheapest forecasters: validation, trends, the capacity model, scenarios, plans, decision."""
    policy = policy or load_policy()
    capacity = policy.capacity.model_copy(update={"forecasters": QUICK_FORECASTERS})
    history = write_synthetic_history(folder / "synthetic_history.csv", days=HISTORY_DAYS)
    raw = load_file(history, ColumnMapping.from_dict(None))
    checked = dq.validate_history(raw, capacity, report_dir=folder / "validation")
    series = dq.prepare_series(raw, checked, capacity)
    analysis = fc.analyse_history(series, capacity)
    knee, options, _ = cap.capacity_options(
        MODEL,
        KNEE_RPS,
        str(onnx_path),
        policy.optimization.hardware_cost_per_hour,
        capacity,
        max_batch=policy.serving.max_batch_size,
    )
    scenarios = cap.build_scenarios(analysis.planning.forecast, analysis.trends.burstiness, capacity)
    plans = cap.expansion_plans(scenarios, options, capacity)
    decision = cap.decide(analysis, options, plans, capacity, policy.rollout_gate.sla_p99_ms)
    markdown = cap.render_plan_markdown(checked, knee, analysis, decision, options, synthetic=True)
    record = capacity_tracking.plan_record(
        checked, analysis, knee, decision, markdown, cap.plan_table(plans), capacity, raw.coverage, plans
    )
    rec = decision.recommendation
    return WrittenPlan(
        runs.log_run(record),
        f"{rec.units}x{rec.option}",
        [o.name for o in options],
        decision.strategy.strategy,
    )
