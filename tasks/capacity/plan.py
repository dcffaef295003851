"""Capacity model: measured knees (the replica's, and per GPU type where one was measured), ONNX-based GPU estimates, scenarios, strategy, recommendation, replay check."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import mlflow
import numpy as np
import pandas as pd

from serving.variants import ensure_variant
from tasks.capacity.data_quality import ValidationReport
from tasks.capacity.forecasting import Forecast, TrendAnalysis
from tasks.policy import Capacity
from tasks.records import names, registry
from tasks.records.store import configure

HOURS_PER_MONTH = 730.0  # unit conversion (8760 h / 12), not policy
# "Today's peak" when sizing the current fleet: the 0.99 quantile of observed demand, not its max, so a handful of
# burst windows do not define today's fleet (the burst_load scenario covers them). A modelling choice of the
# capacity model, not an operator's knob: it stays here while policy.yaml has no key for it.
CURRENT_PEAK_QUANTILE = 0.99
# Tokens per text request assumed by the GPU estimate when the graph's length is symbolic.
ESTIMATE_SEQ_LEN = 128
# The memory check sizes the largest call: the serving max batch of requests this long (BERT-family encoders'
# position limit).
MEMORY_SEQ_LEN = 512
# ONNX TensorProto element types -> bytes per element (float, uint8, int8, int32, int64, float16, double, bf16).
ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}
StrategyName = Literal["preventive", "hybrid", "elastic", "shrink"]


class KneeNotFoundError(LookupError):
    """No stress-test knee recorded for the model: the capacity model has no measured rate per replica."""


class CapacityError(ValueError):
    """Inputs that cannot make a capacity plan (no options, bad scenario or confidence)."""


@dataclass(frozen=True)
class KneeReading:
    """Sustainable rate per replica at the SLA, and where it came from."""

    model: str
    knee_rps: float
    source: str
    run_id: str | None = None
    variant: str | None = None
    sha256: str | None = None
    reason: str = ""


def champion_knee(model: str, *, experiment: str = names.BENCH_EXPERIMENT) -> KneeReading:
    """The latest stress-test `knee_rps` of the model's champion: the stress run tagged with the sha256 the
    registry's `champion` alias holds (any version's latest when the model has no champion yet)."""
    client = mlflow.MlflowClient(configure())
    champion = registry.alias_version(model, registry.CHAMPION)
    champion_sha = champion.sha256 if champion is not None and champion.sha256 else None
    note = (
        f"champion {model} v{champion.version} (sha256 {champion_sha[:12]})"
        if champion is not None and champion_sha
        else "no registered champion alias; using the latest stress run of the model"
    )
    exp = client.get_experiment_by_name(experiment)
    how = (
        f"run `inferops bench stress --model {model}` to measure it, or pass the knee explicitly "
        "(--knee-rps / knee_rps=)"
    )
    if exp is None:
        raise KneeNotFoundError(
            f"no stress-test knee for model {model!r}: MLflow experiment {experiment!r} does not exist; {how}"
        )
    query = f"tags.`{names.TAG_SUITE}` = 'stress' and tags.`{names.TAG_MODEL}` = '{model}'"
    if champion_sha:
        query += f" and tags.`{names.TAG_SHA256}` = '{champion_sha}'"
    runs = client.search_runs(
        [exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=50
    )
    for run in runs:
        knee = run.data.metrics.get("knee_rps")
        if knee is not None and knee > 0:
            return knee_of_run(model, run, float(knee), note)
    scope = f" with the champion's sha256 {champion_sha[:12]}" if champion_sha else ""
    raise KneeNotFoundError(
        f"no stress-test knee for model {model!r}{scope}: no run in {experiment!r} tagged {names.TAG_SUITE}=stress "
        f"has a positive metric knee_rps; {how}"
    )


def gpu_type(accelerator: str, catalog: Iterable[str]) -> str | None:
    """The catalogue's GPU type an accelerator name is ("NVIDIA A100-SXM4-80GB" is A100), or None."""
    words = re.split(r"[^a-z0-9]+", accelerator.lower())
    return next((gpu for gpu in catalog if gpu.lower() in words), None)


def measured_gpu_knees(
    model: str, catalog: Iterable[str], *, experiment: str = names.BENCH_EXPERIMENT
) -> dict[str, KneeReading]:
    """Per GPU type of the catalogue, the latest stress-test knee of `model` measured on that GPU: a stress run
    tagged with the accelerator its replica computed on (the endpoint reports it). GPU types with none are absent
    (the plan estimates them)."""
    client = mlflow.MlflowClient(configure())
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    query = (
        f"tags.`{names.TAG_SUITE}` = 'stress' and tags.`{names.TAG_MODEL}` = '{model}' "
        f"and tags.`{names.TAG_ACCELERATOR}` != 'cpu'"
    )
    runs = client.search_runs(
        [exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=200
    )
    catalog = list(catalog)
    out: dict[str, KneeReading] = {}
    for run in runs:
        tags = run.data.tags
        gpu = gpu_type(tags.get(names.TAG_ACCELERATOR, ""), catalog)
        knee = run.data.metrics.get("knee_rps")
        if gpu is None or gpu in out or knee is None or knee <= 0:
            continue
        out[gpu] = knee_of_run(model, run, float(knee), f"stress knee on {tags[names.TAG_ACCELERATOR]}")
    return out


def knee_of_run(model: str, run: Any, knee: float, reason: str) -> KneeReading:
    """A stress run's knee as a reading: where it came from and what the run measured (variant, sha256)."""
    tags = run.data.tags
    return KneeReading(
        model,
        knee,
        f"mlflow run {run.info.run_id}",
        run.info.run_id,
        tags.get(names.TAG_VARIANT),
        tags.get(names.TAG_SHA256),
        reason,
    )


@dataclass(frozen=True)
class ModelCost:
    """Work per request from the ONNX graph: FLOPs and bytes moved (weights + activations)."""

    flops: float
    weight_bytes: int
    activation_bytes: int
    nodes_counted: int
    unresolved: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes


def _dims(value_info: Any) -> list[int] | None:
    shape = value_info.type.tensor_type.shape
    if not all(d.HasField("dim_value") for d in shape.dim):
        return None
    return [int(d.dim_value) for d in shape.dim]


def _symbolic_default(name: str, seq_len: int, batch: int = 1) -> int:
    # One request is batch 1; sequence-like dims take a typical request length.
    return seq_len if any(k in name.lower() for k in ("seq", "len", "token")) else batch


def onnx_cost(
    path: str | Path,
    dim_values: dict[str, int] | None = None,
    seq_len: int = ESTIMATE_SEQ_LEN,
    batch: int = 1,
) -> ModelCost:
    """FLOPs (MatMul, Gemm, Conv) and bytes of an ONNX model for one call of `batch` requests of `seq_len`
    tokens (symbolic input dims fixed first; `dim_values` names any of them explicitly)."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises OSError, DecodeError and its own types: the user needs the cause
        raise CapacityError(f"ONNX model {path} cannot be loaded: {exc}") from None
    for inp in model.graph.input:
        for dim in inp.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = (dim_values or {}).get(
                    dim.dim_param, _symbolic_default(dim.dim_param, seq_len, batch)
                )
    try:
        # ORT's symbolic inference resolves Reshape/attention shapes that onnx's own pass leaves unknown.
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # unsupported op in ORT's pass: fall back to onnx's, unresolved nodes are reported
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = model.graph
    shapes: dict[str, list[int] | None] = {}
    types: dict[str, int] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        shapes[vi.name] = _dims(vi)
        types[vi.name] = vi.type.tensor_type.elem_type
    weight_bytes = 0
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
        types[init.name] = init.data_type
        weight_bytes += int(np.prod(init.dims, dtype=np.int64)) * ELEMENT_BYTES.get(init.data_type, 4)
    initializers = {i.name for i in graph.initializer}
    activation_bytes = sum(
        int(np.prod(shape, dtype=np.int64)) * ELEMENT_BYTES.get(types.get(name, 1), 4)
        for name, shape in shapes.items()
        if shape is not None and name not in initializers
    )
    flops, counted, unresolved = 0.0, 0, []
    for node in graph.node:
        if node.op_type not in {"MatMul", "Gemm", "Conv"}:
            continue
        a, b, out = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
        if a is None or b is None or out is None:
            unresolved.append(node.name or node.op_type)
            continue
        counted += 1
        if node.op_type == "Conv":
            # out: N, Cout, spatial...; weight: Cout, Cin/group, kernel...
            flops += 2.0 * float(np.prod(out)) * float(np.prod(b[1:]))
        else:
            k = a[-1] if not (node.op_type == "Gemm" and _attr(node, "transA")) else a[0]
            flops += 2.0 * float(np.prod(out)) * k
    return ModelCost(flops, weight_bytes, activation_bytes, counted, unresolved)


def _attr(node: Any, name: str) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), 0)


@dataclass(frozen=True)
class CapacityOption:
    """One way to serve: a replica kind with its sustainable rate at the SLA and its price."""

    name: str
    unit_rps: float
    price_per_hour: float
    label: str  # measured | estimated
    basis: str


@dataclass(frozen=True)
class MemoryCheck:
    """Whether a GPU holds the model at its largest call: weights + activations at the max batch and sequence
    length (every intermediate tensor counted at once: no reuse, the safe side), and the headroom left."""

    gpu: str
    need_bytes: int
    capacity_bytes: int
    batch: int
    seq_len: int

    @property
    def fits(self) -> bool:
        return self.need_bytes <= self.capacity_bytes

    @property
    def headroom(self) -> float:
        return 1.0 - self.need_bytes / self.capacity_bytes

    def sentence(self) -> str:
        need, have = self.need_bytes / 2**30, self.capacity_bytes / 2**30
        at = f"batch {self.batch} x {self.seq_len} tokens"
        if self.fits:
            return f"{self.gpu}: {need:,.2f} GiB at {at} fits in {have:g} GiB ({self.headroom:.0%} headroom)"
        return (
            f"{self.gpu}: {need:,.2f} GiB at {at} does not fit in {have:g} GiB "
            f"({-self.headroom:.0%} over): refused; shard the model or pick a larger GPU"
        )


def memory_checks(largest_call: ModelCost, policy: Capacity, batch: int, seq_len: int) -> list[MemoryCheck]:
    """Every GPU of the catalogue against the model's largest call (`onnx_cost` at the max batch and length)."""
    return [
        MemoryCheck(gpu, largest_call.bytes, int(spec.memory_gb * 2**30), batch, seq_len)
        for gpu, spec in policy.gpu_catalog.items()
    ]


def gpu_options(
    cost: ModelCost,
    policy: Capacity,
    precision: str = "fp16",
    measured: dict[str, KneeReading] | None = None,
    memory: list[MemoryCheck] | None = None,
) -> list[CapacityOption]:
    """Per GPU type: the knee measured on it when there is one (`measured_gpu_knees`), else the roofline estimate,
    min(compute-bound, memory-bound) rate x gpu_efficiency; a GPU whose memory check failed is left out (the
    check says why)."""
    refused = {m.gpu for m in memory or [] if not m.fits}
    out = []
    for gpu, spec in policy.gpu_catalog.items():
        if gpu in refused:
            continue
        if measured and gpu in measured:
            knee = measured[gpu]
            basis = f"{knee.reason}, variant {knee.variant or 'unknown'}: knee {knee.knee_rps:g} req/s from {knee.source}"
            out.append(CapacityOption(gpu, knee.knee_rps, spec.price_per_hour, "measured", basis))
            continue
        peak = (spec.int8_tops if precision == "int8" else spec.fp16_tflops) * 1e12
        compute = peak / cost.flops if cost.flops > 0 else math.inf
        bandwidth = spec.memory_bandwidth_gbs * 1e9 / cost.bytes if cost.bytes > 0 else math.inf
        rate = min(compute, bandwidth) * policy.gpu_efficiency
        bound = "compute" if compute <= bandwidth else "memory"
        basis = (
            f"roofline: {cost.flops / 1e9:.3g} GFLOP and {cost.bytes / 1e6:.3g} MB per request at batch 1; "
            f"{bound}-bound ({compute:,.0f} vs {bandwidth:,.0f} req/s) x efficiency {policy.gpu_efficiency}; {spec.source}"
        )
        out.append(CapacityOption(gpu, rate, spec.price_per_hour, "estimated", basis))
    return out


def replica_option(knee: KneeReading, price_per_hour: float) -> CapacityOption:
    """The current serving replica, at its measured stress-test knee (priced at policy
    optimization.hardware_cost_per_hour)."""
    return CapacityOption(
        "current-replica",
        knee.knee_rps,
        price_per_hour,
        "measured",
        f"knee {knee.knee_rps:g} req/s from {knee.source}",
    )


def capacity_options(
    model: str,
    knee_rps: float | None,
    onnx_path: str | None,
    price_per_hour: float,
    policy: Capacity,
    *,
    knee_source: str = "explicit knee_rps parameter",
    max_batch: int = 1,
) -> tuple[KneeReading, list[CapacityOption], str]:
    """The measured knee per replica (`knee_rps`, else the champion's stress knee in MLflow) and per-GPU estimates
    from the ONNX graph (`onnx_path`, else the model's onnx-fp32 variant), with a note on what the GPU rates rest
    on or why there are none. `price_per_hour` prices the replica (policy optimization.hardware_cost_per_hour); a
    GPU that cannot hold `max_batch` requests of MEMORY_SEQ_LEN tokens (weights + activations) is left out."""
    knee = KneeReading(model, float(knee_rps), knee_source) if knee_rps is not None else champion_knee(model)
    options = [replica_option(knee, price_per_hour)]
    path, note = onnx_path, ""
    if path is None:
        try:
            path = str(ensure_variant(model, "onnx-fp32").path)
        except Exception as exc:  # the GPU estimate is optional: the plan still stands on the measured knee
            note = f"no GPU estimates: ONNX graph for {model!r} unavailable ({exc}); pass onnx_path"
    if path is not None:
        cost = onnx_cost(path)
        checks = memory_checks(
            onnx_cost(path, seq_len=MEMORY_SEQ_LEN, batch=max_batch), policy, max_batch, MEMORY_SEQ_LEN
        )
        measured = measured_gpu_knees(model, policy.gpu_catalog)
        options += gpu_options(cost, policy, measured=measured, memory=checks)
        estimated = [g for g in policy.gpu_catalog if g not in measured]
        note = (
            (f"GPU knees measured on {', '.join(sorted(measured))}; " if measured else "")
            + (
                f"GPU rates of {', '.join(estimated)} estimated from {Path(path).name}: {cost.flops / 1e9:.3g} "
                f"GFLOP, {cost.bytes / 1e6:.3g} MB per request; "
                if estimated
                else ""
            )
            + "memory: "
            + "; ".join(c.sentence() for c in checks)
        )
    return knee, options, note


@dataclass(frozen=True)
class Scenario:
    """Demand to plan for: a scenario at a confidence level."""

    name: str
    level: float
    demand_rps: float
    basis: str


def build_scenarios(forecast: Forecast, burstiness: float, policy: Capacity) -> list[Scenario]:
    """normal (central peak), peak (upper bound at each level) and burst (peak x burstiness) over the horizon."""
    central = float(np.max(forecast.yhat))
    out = []
    for level in policy.confidence_levels:
        peak = float(np.max(forecast.upper[level]))
        by_name = {
            "normal_load": (central, "highest central forecast over the horizon"),
            "peak_load": (peak, f"highest {level:.0%} upper bound of the forecast over the horizon"),
            "burst_load": (peak * burstiness, f"peak_load x observed burstiness {burstiness:.2f}"),
        }
        for name in policy.scenarios:
            demand, basis = by_name[name]
            out.append(Scenario(name, level, demand, basis))
    return out


def units_needed(demand_rps: float, unit_rps: float, target_utilisation: float) -> int:
    """Replicas (or GPUs) so that demand runs at no more than target_utilisation of each one's knee."""
    if unit_rps <= 0:
        raise CapacityError(f"a replica's sustainable rate must be positive, got {unit_rps}")
    return max(1, math.ceil(demand_rps / (unit_rps * target_utilisation) - 1e-9))


@dataclass(frozen=True)
class PlanRow:
    """Units and monthly cost of one option under one scenario."""

    scenario: str
    level: float
    demand_rps: float
    option: str
    label: str
    unit_rps: float
    units: int
    monthly_cost: float


def expansion_plans(
    scenarios: list[Scenario], options: list[CapacityOption], policy: Capacity
) -> list[PlanRow]:
    """Every scenario x option: units needed at the policy's target utilisation and what they cost a month."""
    rows = []
    for s in scenarios:
        for o in options:
            n = units_needed(s.demand_rps, o.unit_rps, policy.target_utilisation)
            rows.append(
                PlanRow(
                    s.name,
                    s.level,
                    s.demand_rps,
                    o.name,
                    o.label,
                    o.unit_rps,
                    n,
                    n * o.price_per_hour * HOURS_PER_MONTH,
                )
            )
    return rows


@dataclass(frozen=True)
class StrategyDecision:
    """The growth x volatility matrix's verdict, with the observed values and bands it used."""

    strategy: str
    expansion: tuple[float, float]
    growth: float
    growth_class: str
    volatility: float
    volatility_class: str
    thresholds: dict[str, float]
    reason: str


def choose_strategy(growth: float, volatility: float, policy: Capacity) -> StrategyDecision:
    """SPEC §5: >50% & low vol -> preventive; 20-50% -> hybrid; <20% -> elastic; negative -> shrink."""
    g_hi, g_lo = policy.growth_bands["high"], policy.growth_bands["low"]
    v_lo, v_hi = policy.volatility_bands["low"], policy.volatility_bands["high"]
    g_class = "negative" if growth < 0 else "high" if growth > g_hi else "medium" if growth >= g_lo else "low"
    v_class = "low" if volatility < v_lo else "high" if volatility > v_hi else "medium"
    strategy: StrategyName
    if g_class == "negative":
        strategy, why = "shrink", "demand is falling: reclaim capacity"
    elif g_class == "high" and v_class == "low":
        strategy, why = "preventive", "fast, steady growth: buy ahead"
    elif g_class == "high":
        strategy, why = "hybrid", f"fast growth but {v_class} volatility: buy part, autoscale the swings"
    elif g_class == "medium":
        strategy, why = "hybrid", "moderate growth: buy part, autoscale the rest"
    else:
        strategy, why = "elastic", f"slow growth ({v_class} volatility): autoscale, little fixed expansion"
    thresholds = {"growth_high": g_hi, "growth_low": g_lo, "volatility_low": v_lo, "volatility_high": v_hi}
    reason = (
        f"growth {growth:+.1%} is {g_class} (bands {g_lo:.0%}/{g_hi:.0%}), volatility {volatility:.2f} is {v_class} "
        f"(bands {v_lo}/{v_hi}) -> {strategy}: {why}"
    )
    return StrategyDecision(
        strategy,
        policy.strategies[strategy].expansion,
        growth,
        g_class,
        volatility,
        v_class,
        thresholds,
        reason,
    )


@dataclass(frozen=True)
class Recommendation:
    """The cheapest option that covers the chosen scenario and confidence, within the strategy's range."""

    scenario: str
    level: float
    demand_rps: float
    option: str
    label: str
    unit_rps: float
    units: int
    covering_units: int
    current_units: int
    expansion: float
    monthly_cost: float
    verdict: str
    reason: str


def recommend(
    plans: list[PlanRow],
    options: list[CapacityOption],
    strategy: StrategyDecision,
    current_units: dict[str, int],
    policy: Capacity,
    *,
    scenario: str | None = None,
    level: float | None = None,
) -> Recommendation:
    """Per option: max(units covering the scenario, current x (1 + strategy's low end)); the cheapest wins.

    `scenario` and `level` default to policy capacity.plan_scenario and capacity.plan_confidence.
    """
    scenario = scenario if scenario is not None else policy.plan_scenario
    level = level if level is not None else policy.plan_confidence
    rows = [r for r in plans if r.scenario == scenario and math.isclose(r.level, level)]
    if not rows:
        raise CapacityError(
            f"no plan for scenario {scenario!r} at confidence {level}; pick one the policy lists"
        )
    prices = {o.name: o.price_per_hour for o in options}
    lo, hi = strategy.expansion
    candidates = []
    for r in rows:
        current = current_units.get(r.option, r.units)
        floor = math.ceil(current * (1 + lo) - 1e-9)
        units = max(r.units, floor, 1)
        candidates.append((units * prices[r.option] * HOURS_PER_MONTH, units, current, r))
    cost, units, current, row = min(candidates, key=lambda c: c[0])
    expansion = units / current - 1 if current else 0.0
    needed = row.units / current - 1 if current else 0.0
    verdict = "above_range" if needed > hi else "strategy_floor" if units > row.units else "covers_forecast"
    reason = (
        f"{row.option} is the cheapest option covering {scenario} at {level:.0%} ({row.demand_rps:,.1f} req/s): "
        f"{units} x {row.unit_rps:,.1f} req/s ({row.label}) at target utilisation, ${cost:,.0f}/month; "
        f"forecast needs {row.units} ({needed:+.0%} vs {current} today), {strategy.strategy} range "
        f"{lo:+.0%}..{hi:+.0%} -> {units} ({expansion:+.0%})"
    )
    if verdict == "above_range":
        reason += "; the forecast needs more than the strategy's range: review the growth assumption"
    return Recommendation(
        scenario,
        level,
        row.demand_rps,
        row.option,
        row.label,
        row.unit_rps,
        units,
        row.units,
        current,
        expansion,
        cost,
        verdict,
        reason,
    )


def current_units(history: pd.Series, options: list[CapacityOption], policy: Capacity) -> dict[str, int]:
    """What each option would need today: units covering the observed p99 window at the target utilisation."""
    peak = float(np.nanquantile(history.to_numpy(dtype=float), CURRENT_PEAK_QUANTILE))
    return {o.name: units_needed(peak, o.unit_rps, policy.target_utilisation) for o in options}


@dataclass(frozen=True)
class AutoscalingConfig:
    """Ray Serve `autoscaling_config` implementing the recommendation."""

    min_replicas: int
    max_replicas: int
    target_ongoing_requests: int
    reason: str

    def ray_config(self) -> dict[str, int]:
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


def autoscaling_config(
    rec: Recommendation, forecast: Forecast, sla_ms: float, policy: Capacity
) -> AutoscalingConfig:
    """min covers the median central forecast, max is the plan; target in-flight requests by Little's law."""
    per_replica = rec.unit_rps * policy.target_utilisation
    typical = float(np.median(forecast.yhat))
    min_r = min(rec.units, units_needed(typical, rec.unit_rps, policy.target_utilisation))
    target = max(1, round(per_replica * sla_ms / 1000.0))
    reason = (
        f"min {min_r} replicas carry the median central forecast {typical:,.1f} req/s; max {rec.units} is the plan; "
        f"target_ongoing_requests {target} = {per_replica:,.1f} req/s per replica x SLA {sla_ms:g} ms (Little's law)"
    )
    return AutoscalingConfig(min_r, rec.units, target, reason)


@dataclass(frozen=True)
class ReplayCheck:
    """Held-out demand replayed against the planned capacity."""

    windows: int
    capacity_rps: float
    target_rps: float
    exceed_share: float
    over_target_share: float
    idle_share: float
    idle_cost: float
    verdict: str
    reason: str


def replay_check(
    demand: pd.Series, rec: Recommendation, price_per_hour: float, policy: Capacity
) -> ReplayCheck:
    """Share of held-out windows above the plan's SLA capacity, and the cost of capacity left idle."""
    values = demand.dropna().to_numpy(dtype=float)
    if values.size == 0:
        raise CapacityError("the replay period has no demand windows (all gaps); hold out a period with data")
    freq_h = (demand.index[1] - demand.index[0]).total_seconds() / 3600.0
    capacity = rec.units * rec.unit_rps
    target = capacity * policy.target_utilisation
    exceed = float(np.mean(values > capacity))
    idle = np.clip(1 - values / capacity, 0, 1)
    idle_cost = float(np.sum(idle) * rec.units * price_per_hour * freq_h)
    verdict = "pass" if exceed == 0 else "fail"
    reason = (
        f"{exceed:.1%} of {values.size} held-out windows exceed {capacity:,.1f} req/s (units x knee); "
        f"{float(np.mean(values > target)):.1%} exceed the {policy.target_utilisation:.0%} target; "
        f"idle capacity {float(np.mean(idle)):.0%} cost ${idle_cost:,.2f} over the period"
    )
    return ReplayCheck(
        int(values.size),
        capacity,
        target,
        exceed,
        float(np.mean(values > target)),
        float(np.mean(idle)),
        idle_cost,
        verdict,
        reason,
    )


@dataclass(frozen=True)
class PlanDecision:
    """What the plan decides: the strategy, the recommendation, its Ray Serve autoscaling, and the replay check
    (None when the held-out period is empty)."""

    strategy: StrategyDecision
    recommendation: Recommendation
    autoscaling: AutoscalingConfig
    replay: ReplayCheck | None


def decide(
    analysis: TrendAnalysis,
    options: list[CapacityOption],
    plans: list[PlanRow],
    policy: Capacity,
    sla_ms: float,
    *,
    scenario: str | None = None,
    level: float | None = None,
) -> PlanDecision:
    """Strategy from the trends, the cheapest covering option over today's units, Ray Serve autoscaling at the SLA
    (policy rollout_gate.sla_p99_ms), and the held-out tail replayed against the plan."""
    strategy = choose_strategy(analysis.trends.observed_growth, analysis.trends.volatility, policy)
    current = current_units(analysis.fit, options, policy)
    rec = recommend(plans, options, strategy, current, policy, scenario=scenario, level=level)
    autoscaling = autoscaling_config(rec, analysis.planning.forecast, sla_ms, policy)
    price = next(o.price_per_hour for o in options if o.name == rec.option)
    replay = replay_check(analysis.holdout, rec, price, policy) if analysis.holdout.notna().any() else None
    return PlanDecision(strategy, rec, autoscaling, replay)


def plan_output(
    report: ValidationReport,
    analysis: TrendAnalysis,
    decision: PlanDecision,
    run_id: str,
    table: list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    """The capacity-planning flow's result: plain values for the caller, the MLflow run id, and the wall time
    since `started` (a `time.perf_counter()` reading)."""
    return {
        "recommendation": asdict(decision.recommendation),
        "strategy": asdict(decision.strategy),
        "autoscaling": decision.autoscaling.ray_config(),
        "replay": asdict(decision.replay) if decision.replay else None,
        "forecaster": analysis.planning.forecaster,
        "forecast_check": analysis.check.to_dict() if analysis.check else None,
        "validation": {
            "verdict": report.verdict,
            "report_path": report.report_path,
            "zero_windows": report.zero_windows,
        },
        "mlflow_run_id": run_id,
        "plan_table": table,
        "wall_s": time.perf_counter() - started,
    }


def plan_table(rows: list[PlanRow]) -> list[dict[str, Any]]:
    """Plan rows as plain dicts for tables (Prefect, MLflow, the CLI)."""
    return [
        {
            **asdict(r),
            "demand_rps": round(r.demand_rps, 2),
            "unit_rps": round(r.unit_rps, 2),
            "monthly_cost": round(r.monthly_cost, 2),
        }
        for r in rows
    ]


SYNTHETIC_TITLE = " — on synthetic history (a demo, not your traffic)"


def _trend_values(analysis: TrendAnalysis) -> dict[str, float]:
    return {k: v for k, v in asdict(analysis.trends).items() if isinstance(v, float)}


def _check_markdown(analysis: TrendAnalysis) -> list[str]:
    """The forecast checked on the held-out tail, as a markdown bullet (none when nothing was held out)."""
    return [f"- forecast check: {analysis.check.sentence()}"] if analysis.check else []


def _backtest_markdown(analysis: TrendAnalysis) -> list[str]:
    rows = analysis.planning.backtest.table()
    if not rows:
        return []
    keys = list(rows[0])
    lines = [
        "",
        "## Forecasters (cross-validation)",
        "",
        "| " + " | ".join(keys) + " |",
        "|" + "---|" * len(keys),
    ]
    return lines + ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]


def render_trends_markdown(report: ValidationReport, analysis: TrendAnalysis, synthetic: bool = False) -> str:
    """The quarterly trend report: history, the chosen forecaster and why, growth, volatility, burstiness."""
    lines = [
        "# Capacity trends" + (SYNTHETIC_TITLE if synthetic else ""),
        "",
        f"- history: `{report.source}` (validation: {report.verdict}: {report.reason})",
        f"- forecaster: {analysis.planning.backtest.reason}",
        *_check_markdown(analysis),
        "- trends: " + ", ".join(f"{k} {v:.3g}" for k, v in _trend_values(analysis).items()),
    ]
    return "\n".join(lines + _backtest_markdown(analysis)) + "\n"


def trends_output(report: ValidationReport, analysis: TrendAnalysis) -> dict[str, Any]:
    """The trends stage's result: the forecaster, its cross-validation and the trends."""
    return {
        "stage": "trends",
        "forecaster": analysis.planning.forecaster,
        "forecaster_reason": analysis.planning.backtest.reason,
        "forecast_check": analysis.check.to_dict() if analysis.check else None,
        "backtest": analysis.planning.backtest.table(),
        "trends": _trend_values(analysis),
        "validation": {"verdict": report.verdict, "report_path": report.report_path},
    }


def option_row(option: CapacityOption) -> dict[str, Any]:
    return {
        "option": option.name,
        "req/s per unit": round(option.unit_rps, 2),
        "label": option.label,
        "$/h": option.price_per_hour,
        "basis": option.basis,
    }


def capacity_model_output(knee: KneeReading, options: list[CapacityOption], note: str) -> dict[str, Any]:
    """The capacity-model stage's result: the knee it rests on and every option's rate, label and price."""
    return {
        "stage": "capacity-model",
        "knee": asdict(knee),
        "options": [option_row(o) for o in options],
        "note": note,
    }


def render_plan_markdown(
    report: ValidationReport,
    knee: KneeReading,
    analysis: TrendAnalysis,
    decision: PlanDecision,
    options: list[CapacityOption],
    synthetic: bool = False,
) -> str:
    """The capacity plan as markdown: inputs, forecaster, strategy, recommendation, autoscaling, replay."""
    trends = _trend_values(analysis)
    strategy, rec = decision.strategy, decision.recommendation
    autoscaling, replay = decision.autoscaling, decision.replay
    lines = [
        "# Capacity plan" + (SYNTHETIC_TITLE if synthetic else ""),
        "",
        f"- history: `{report.source}` (validation: {report.verdict}: {report.reason})",
        f"- capacity per replica: {knee.knee_rps:g} req/s at the SLA ({knee.source}; {knee.reason or 'explicit'})",
        f"- forecaster: {analysis.planning.backtest.reason}",
        *_check_markdown(analysis),
        "- trends: " + ", ".join(f"{k} {v:.3g}" for k, v in trends.items()),
        f"- strategy: **{strategy.strategy}** (expansion {strategy.expansion[0]:+.0%}..{strategy.expansion[1]:+.0%}) — {strategy.reason}",
        f"- recommendation: **{rec.units} x {rec.option}** ({rec.label}), ${rec.monthly_cost:,.0f}/month — {rec.reason}",
        f"- Ray Serve autoscaling: `{autoscaling.ray_config()}` — {autoscaling.reason}",
    ]
    if replay:
        lines.append(f"- replay check: **{replay.verdict}** — {replay.reason}")
    lines += [
        "",
        "## Options",
        "",
        "| option | req/s per unit | label | $/h | basis |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {o.name} | {o.unit_rps:,.1f} | {o.label} | {o.price_per_hour:g} | {o.basis} |" for o in options
    ]
    return "\n".join(lines + _backtest_markdown(analysis)) + "\n"


def plot_forecast(history: pd.Series, forecast: Forecast, holdout: pd.Series | None = None) -> Any:
    """History, central forecast and its bands per confidence level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(history.index, history.to_numpy(), lw=0.7, color="black", label="history")
    if holdout is not None:
        ax.plot(holdout.index, holdout.to_numpy(), lw=0.7, color="tab:red", label="held out")
    for level in sorted(forecast.lower, reverse=True):
        ax.fill_between(
            forecast.index, forecast.lower[level], forecast.upper[level], alpha=0.2, label=f"{level:.0%} band"
        )
    ax.plot(forecast.index, forecast.yhat, lw=0.8, color="tab:blue", label=f"{forecast.method} forecast")
    ax.set_ylabel("req/s")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_capacity_vs_demand(
    history: pd.Series,
    forecast: Forecast,
    rec: Recommendation,
    target_utilisation: float,
    rows: list[PlanRow] | None = None,
) -> Any:
    """Demand (history + central forecast) against each option's capacity for the plan's scenario (`rows`: the
    plan rows; the recommendation alone when None) and the recommendation's target-utilisation line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(history.index, history.to_numpy(), lw=0.7, color="black", label="demand (history)")
    ax.plot(forecast.index, forecast.yhat, lw=0.7, color="tab:blue", label="demand (forecast)")
    chosen = [r for r in rows or [] if r.scenario == rec.scenario and math.isclose(r.level, rec.level)]
    for r in chosen:
        if r.option != rec.option:
            ax.axhline(
                r.units * r.unit_rps, lw=0.8, ls=":", label=f"{r.option}: {r.units} x {r.unit_rps:,.0f} req/s"
            )
    capacity = rec.units * rec.unit_rps
    ax.axhline(capacity, color="tab:red", label=f"recommended: {rec.units} x {rec.option}")
    ax.axhline(
        capacity * target_utilisation, color="tab:orange", ls="--", label=f"{target_utilisation:.0%} target"
    )
    ax.set_ylabel("req/s")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def figure_markdown(title: str, figure: Any) -> str:
    """A figure as markdown with the PNG inline (a Prefect markdown artifact shows it in the UI)."""
    import base64
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"### {title}\n\n![{title}](data:image/png;base64,{data})\n"
