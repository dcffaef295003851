"""What the optimization cycle's tasks do: plan candidates, measure them in process, bottlenecks, monitoring."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks.artifacts import write_artifact
from tasks.evaluation import measure_batches
from tasks.optimization import Trial
from tasks.policy import Optimization, Policy
from tasks.settings import get_settings
from tasks.variants import VARIANT_RECIPES, ensure_variant, gpu_unavailable_reason, list_variants

# Calls per repeat and items cycled: enough for a stable median on 2 cores, few enough to keep a cycle short.
TRIAL_ITEMS = 128
TRIAL_MIN_CALLS = 30
# Each repeat lasts at least this long, so sub-millisecond models are timed over thousands of calls, not noise.
TRIAL_MIN_SECONDS = 0.5
# Variants that are measurement reference points, never candidates to serve.
NOT_CANDIDATES = frozenset({"torch-fp32", "onnx-fp32-noopt"})


@dataclass(frozen=True)
class Candidate:
    """One configuration to try: a variant plus the serving knobs it runs with."""

    name: str
    variant: str
    optimization_type: str
    stage: str  # model | parallelization | batching
    intra_op_threads: int
    batch: int

    def params(self) -> dict[str, Any]:
        return {"variant": self.variant, "intra_op_threads": self.intra_op_threads, "batch": self.batch, "stage": self.stage}


@dataclass
class Measured:
    """A candidate's measurement: repeated throughput/P99, the evaluator's metric and what ran."""

    trial: Trial
    metric: str
    value: float
    worst_case: float | None
    provider: str
    sha256: str
    path: Path
    manifest: dict[str, Any]
    load_s: float
    details: dict[str, Any] = field(default_factory=dict)


def model_stage(model: str, baseline_variant: str, threads: int, batch: int) -> list[Candidate]:
    """Model-level candidates in the order the seed's fallbacks go: graph optimization, then INT8 plain before
    the per-channel and reduce-range fallbacks, static INT8, and GPU precisions where a GPU exists."""
    candidates = []
    for name in list_variants(model):
        recipe = VARIANT_RECIPES[name]
        if name in NOT_CANDIDATES or name == baseline_variant or gpu_unavailable_reason(recipe):
            continue
        candidates.append(Candidate(name, name, recipe.opt_type, "model", threads, batch))
    return candidates


def knob_stage(best: Candidate, stage: str, values: list[int]) -> list[Candidate]:
    """Candidates that change one serving knob on top of the best configuration so far (combinations measured)."""
    out = []
    for value in values:
        threads = value if stage == "parallelization" else best.intra_op_threads
        batch = value if stage == "batching" else best.batch
        if (threads, batch) == (best.intra_op_threads, best.batch):
            continue
        kind = "parallelization" if stage == "parallelization" else "batching"
        out.append(Candidate(f"{best.variant}+threads={threads}+batch={batch}", best.variant, kind, stage, threads, batch))
    return out


def knob_values(stage: str, given: list[int] | None, policy: Optimization) -> list[int]:
    """Values a knob stage tries: the caller's, else 1, 2 and all cores for threads, the policy's batch sizes."""
    if given:
        return list(given)
    if stage == "parallelization":
        cores = os.cpu_count() or 1
        return sorted({1, min(2, cores), cores})
    return list(policy.batch_options)


def summarize_baseline(candidate: Candidate, measured: Measured) -> dict[str, Any]:
    """The baseline as the report shows it: what served, how fast, how noisy, how accurate."""
    return {
        "variant": candidate.variant,
        f"throughput (items/s, batch {candidate.batch})": round(measured.trial.median_throughput, 1),
        "p99 ms per batch": round(measured.trial.median_p99, 2),
        "spread": f"{measured.trial.spread:.1%}",
        measured.metric: round(measured.value, 4),
    }


def measure(model: str, candidate: Candidate, repeats: int) -> Measured:
    """Build (or reuse) the variant, load it, score it with the zoo's evaluator, and time `repeats` runs."""
    from serving.engines import load_engine

    artifact = ensure_variant(model, candidate.variant)
    t0 = time.perf_counter()
    engine = load_engine(
        artifact.path, expected_sha256=artifact.sha256, intra_op_threads=candidate.intra_op_threads, allow_spinning=False
    )
    load_s = time.perf_counter() - t0
    spec = engine.spec
    evaluation = spec.evaluate(engine)
    inputs = spec.example_inputs(TRIAL_ITEMS)
    probe = measure_batches(engine.infer, inputs, candidate.batch, 3)
    per_call_s = candidate.batch / probe.items_per_s
    calls = max(TRIAL_MIN_CALLS, int(TRIAL_MIN_SECONDS / per_call_s) + 1)
    throughput, p99 = [], []
    for _ in range(repeats):
        timing = measure_batches(engine.infer, inputs, candidate.batch, calls)
        throughput.append(timing.items_per_s)
        p99.append(timing.p99_ms)
    worst = evaluation.details.get("fidelity_min_cosine")
    return Measured(
        Trial(tuple(throughput), tuple(p99)),
        evaluation.metric,
        evaluation.value,
        float(worst) if worst is not None else None,
        engine.provider,
        artifact.sha256,
        artifact.path,
        artifact.manifest,
        load_s,
        dict(evaluation.details),
    )


def inprocess_timing(model: str, variant: str, threads: int) -> dict[str, float]:
    """Per-request time split (tokenize / compute) at batch 1 and the model's load time, for the bottleneck step."""
    from serving.engines import load_engine

    artifact = ensure_variant(model, variant)
    t0 = time.perf_counter()
    engine = load_engine(artifact.path, expected_sha256=artifact.sha256, intra_op_threads=threads, allow_spinning=False)
    load_s = time.perf_counter() - t0
    inputs = engine.spec.example_inputs(TRIAL_ITEMS)
    totals = {"tokenize": 0.0, "compute": 0.0}
    start = time.perf_counter()
    for i in range(len(inputs)):
        item = inputs[i : i + 1]
        _, phases = engine.infer_timed(item)
        for key in totals:
            totals[key] += phases.get(key, 0.0)
    wall_ms = (time.perf_counter() - start) * 1e3 / len(inputs)
    return {
        "client_ms": wall_ms,
        "tokenize_ms": totals["tokenize"] * 1e3 / len(inputs),
        "compute_ms": totals["compute"] * 1e3 / len(inputs),
        "model_load_s": load_s,
    }


def monitoring_rules(model: str, champion_sha256: str, baseline_p99_ms: float, policy: Policy) -> dict[str, Any]:
    """Prometheus rules that watch the new champion: latency vs SLA and baseline, GPU temperature, accuracy."""
    risk = policy.rollout_risk
    sla = policy.rollout_gate.sla_p99_ms
    latency = f'histogram_quantile(0.99, sum by (le) (rate(ray_serve_http_request_latency_ms_bucket{{application="{model}"}}[5m])))'
    return {
        "groups": [
            {
                "name": f"inferops-{model}",
                "rules": [
                    {"alert": "InferenceP99OverSLA", "expr": f"{latency} > {sla}", "for": "5m",
                     "labels": {"severity": "warning", "type": "threshold", "model": model}},
                    {"alert": "InferenceP99OffBaseline",
                     "expr": f"{latency} > {baseline_p99_ms * (1 + risk.perf_deviation_rollback):.3f}", "for": "5m",
                     "labels": {"severity": "critical", "type": "threshold", "model": model, "action": "rollback"}},
                    {"alert": "GpuTemperatureHigh",
                     "expr": f"DCGM_FI_DEV_GPU_TEMP > {policy.monitoring.gpu_temperature_critical_c}", "for": "2m",
                     "labels": {"severity": "critical", "type": "threshold"}},
                    {"alert": "ModelAccuracyRetentionLow",
                     "expr": f'inferops_accuracy_retention{{model="{model}"}} < {policy.optimization.accuracy_retention_threshold}',
                     "labels": {"severity": "critical", "type": "anomaly", "model": model,
                                "champion_sha256": champion_sha256}},
                ],
            }
        ]
    }  # fmt: skip


def write_monitoring(model: str, rules: dict[str, Any]) -> Path:
    """Write the rules beside the data (atomically) for Prometheus to load; returns the file."""
    path = get_settings().data_dir / "monitoring" / f"{model}.rules.yml"
    write_artifact(path, lambda p: p.write_text(yaml.safe_dump(rules, sort_keys=False)), {"model": model})
    return path
