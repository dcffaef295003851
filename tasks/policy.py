"""The policy: every threshold and weight from SPEC.md, loaded from YAML into typed pydantic models.

Three layers, deep-merged: the serving floor's defaults (`serving/defaults.yaml`: the `serving:` and `endpoint:`
sections, validated by the floor's own models), this package's `policy.yaml`, then the operator's file
(`INFEROPS_POLICY_FILE`). The edge (a flow or a CLI command) loads it once and passes it down.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from serving.config import EndpointLimits, ServingDefaults, defaults_data

DEFAULT_POLICY_FILE = Path(__file__).with_name("policy.yaml")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, the key and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateItem(_Strict):
    weight: float = Field(ge=0, le=1)
    minimum: float = Field(ge=0, le=1)


class Completion(_Strict):
    success_rate_min: float = Field(ge=0, le=1)
    model_load_rate_min: float = Field(ge=0, le=1)
    p99_ms_max: float = Field(gt=0)
    monitoring_coverage_min: float = Field(ge=0, le=1)


class RolloutGate(_Strict):
    items: dict[Literal["functional", "performance", "stability", "security"], GateItem]
    sla_p99_ms: float = Field(gt=0)
    target_qps: float = Field(gt=0)
    stability_duration_s: float = Field(gt=0)
    completion: Completion
    require_approval: bool = True  # a release (the phase-gate flow) waits for a person's approval
    cycle_require_approval: bool = False  # the weekly optimization cycle's gate: the verdict decides
    approval_timeout_s: int = Field(gt=0)
    risk_window_s: float = Field(gt=0)
    performance_warmup_s: float = Field(ge=0)

    @model_validator(mode="after")
    def _weights_sum_to_one(self) -> RolloutGate:
        total = sum(item.weight for item in self.items.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"gate item weights must sum to 1.0, got {total:.4f}")
        return self


class RolloutRisk(_Strict):
    perf_deviation_rollback: float = Field(gt=0)
    error_rate_alert: float = Field(ge=0, le=1)
    utilisation_scale_out: float = Field(gt=0, le=1)
    confirm_windows: int = Field(ge=0, le=5)


class MatrixFactor(_Strict):
    weight: float = Field(ge=0, le=1)
    threshold: float = Field(ge=1, le=10)
    direction: Literal["above", "below"]


class TypeScores(_Strict):
    cost: float = Field(ge=1, le=10)
    risk: float = Field(ge=1, le=10)
    difficulty: float = Field(ge=1, le=10)


class Scoring(_Strict):
    gain_for_full_score: float = Field(gt=0)
    hardware_cost_weight: float = Field(ge=0)
    spread_risk_weight: float = Field(ge=0)
    fidelity_risk_weight: float = Field(ge=0)
    by_type: dict[str, TypeScores]


# The seed's retention floor (SPEC §3): the loosest accuracy retention any policy may accept. A constant, not a policy
# key, so no policy file can lower it.
SEED_RETENTION_FLOOR = 0.95


class ServingSearch(_Strict):
    """The cycle's serving level (Model Analyzer's second level): the model-level champion's serving knobs searched
    on temporary Ray Serve apps beside production, each scored by its knee (a shortened stress search)."""

    max_trials: int = Field(ge=0)  # 0: the serving level is off; the in-process knobs are served
    max_minutes: float = Field(gt=0)
    start_rps: float = Field(gt=0)
    step_factor: float = Field(gt=1)
    step_duration_s: float = Field(gt=0)
    max_steps: int = Field(ge=1)
    bisect_steps: int = Field(ge=0)
    time_budget_s: float = Field(gt=0)
    warmup_s: float = Field(ge=0)

    def knee_knobs(self) -> dict[str, Any]:
        """The knee search each trial runs (`tasks.optimize.serving_search.KneeSearch`'s fields)."""
        return self.model_dump(exclude={"max_trials", "max_minutes"})


class Optimization(_Strict):
    accuracy_retention_threshold: float = Field(gt=0, le=1)
    marginal_gain_stop: float = Field(ge=0)
    max_trials: int = Field(ge=1)
    max_minutes: float = Field(gt=0)
    repeats: int = Field(ge=1)
    batch_options: list[int] = Field(min_length=1)
    replica_options: list[int] = Field(min_length=1)
    cache_options: list[int] = Field(min_length=1)
    cache_pass_max_requests: int = Field(ge=1)
    serving_search: ServingSearch
    hardware_cost_per_hour: float = Field(ge=0)
    investment_hours: float = Field(ge=0)
    engineer_cost_per_hour: float = Field(ge=0)
    expected_gain: dict[str, tuple[float, float]]
    scoring: Scoring
    decision_matrix: dict[
        Literal[
            "performance_gain",
            "accuracy_impact",
            "implementation_cost",
            "technical_risk",
            "implementation_difficulty",
        ],
        MatrixFactor,
    ]

    @model_validator(mode="before")
    @classmethod
    def _floor_is_not_a_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and "accuracy_retention_floor" in data:
            raise ValueError(
                f"accuracy_retention_floor is the seed's constant {SEED_RETENTION_FLOOR}, not a policy key: remove "
                "it and set accuracy_retention_threshold (at least that floor) instead"
            )
        return data

    @model_validator(mode="after")
    def _threshold_not_looser_than_seed(self) -> Optimization:
        if self.accuracy_retention_threshold < SEED_RETENTION_FLOOR:
            raise ValueError(
                f"accuracy_retention_threshold {self.accuracy_retention_threshold} is looser than the "
                f"floor {SEED_RETENTION_FLOOR} (the seed's); raise it"
            )
        total = sum(f.weight for f in self.decision_matrix.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"decision_matrix weights must sum to 1.0, got {total:.4f}")
        return self


class BenchmarkSuite(_Strict):
    """Fixed load at the target rate: the baseline figures, per release."""

    cadence: str
    duration_s: float = Field(gt=0)


class LoadSuite(_Strict):
    """The expected load for a while (or a replayed trace), weekly."""

    cadence: str
    duration_s: float = Field(gt=0)


class StressSuite(_Strict):
    """The knee search: a geometric ramp, then bisection, within a number of steps and a wall-time budget."""

    cadence: str
    start_rps: float = Field(gt=0)
    max_rps: float = Field(gt=0)
    step_factor: float = Field(gt=1)
    step_duration_s: float = Field(gt=0)
    max_steps: int = Field(ge=1)
    time_budget_s: float = Field(gt=0)
    bisect_steps: int = Field(ge=0)

    @model_validator(mode="after")
    def _ramp_fits(self) -> StressSuite:
        if self.max_rps < self.start_rps:
            raise ValueError(f"max_rps {self.max_rps} is below start_rps {self.start_rps}; raise max_rps")
        return self


class StabilitySuite(_Strict):
    """Sustained load with memory-leak detection, quarterly."""

    cadence: str
    duration_s: float = Field(gt=0)
    leak_slope_mb_per_h: float = Field(gt=0)
    # a slope is a leak only if memory also grew this much after warm-up
    leak_min_growth_mb: float = Field(ge=0)


class TestSuite(_Strict):
    benchmark: BenchmarkSuite
    load: LoadSuite
    stress: StressSuite
    stability: StabilitySuite
    max_error_rate: float = Field(ge=0, le=1)


class Layer(_Strict):
    metrics: list[str]
    resolution: str
    retention_days: int = Field(gt=0)


class AlertType(_Strict):
    levels: list[str]
    channels: list[str]
    handle_within_min: float = Field(gt=0)


class Anomaly(_Strict):
    """The anomaly detector's parameters (tasks/monitoring/anomaly.py DetectorConfig)."""

    window: int = Field(ge=2)
    warmup: int = Field(ge=2)
    threshold: float = Field(gt=0)
    range_floor: float = Field(ge=0)
    range_margin: float = Field(ge=0)
    cooldown: int = Field(ge=0)


class Monitoring(_Strict):
    layers: dict[str, Layer]
    alert_types: dict[str, AlertType]
    gpu_temperature_warning_c: float
    gpu_temperature_critical_c: float
    anomaly: Anomaly
    # alert name -> how long its condition holds before it fires (Prometheus `for`), over the rules file's defaults
    pending: dict[str, str] = Field(default_factory=dict)


class Strategy(_Strict):
    expansion: tuple[float, float]


class GpuSpec(_Strict):
    memory_gb: float = Field(gt=0)
    memory_bandwidth_gbs: float = Field(gt=0)
    fp16_tflops: float = Field(gt=0)
    int8_tops: float = Field(gt=0)
    price_per_hour: float = Field(ge=0)
    source: str


class Capacity(_Strict):
    confidence_levels: list[float]
    scenarios: list[Literal["normal_load", "peak_load", "burst_load"]]
    target_utilisation: float = Field(gt=0, le=1)
    horizon_days: int = Field(gt=0)
    gap_policy: Literal["mask", "stop"]
    min_history_days: float = Field(gt=0)
    growth_bands: dict[Literal["high", "low"], float]
    volatility_bands: dict[Literal["low", "high"], float]
    strategies: dict[Literal["preventive", "hybrid", "elastic", "shrink"], Strategy]
    gpu_catalog: dict[str, GpuSpec]
    gpu_efficiency: float = Field(gt=0, le=1)
    plan_scenario: Literal["normal_load", "peak_load", "burst_load"]
    plan_confidence: float = Field(gt=0, lt=1)
    zero_outage_min_expected_requests: float = Field(gt=0)
    backtest_folds: int = Field(ge=1)
    backtest_horizon_days: float = Field(gt=0)
    backtest_min_train_days: float = Field(gt=0)
    backtest_step_days: float = Field(gt=0)
    forecasters: list[
        Literal[
            "mstl-daily",
            "mstl-daily-weekly",
            "autoets",
            "autotheta",
            "seasonal-naive-daily",
            "seasonal-naive-weekly",
            "prophet",
        ]
    ] = Field(min_length=1)
    ensemble_size: int = Field(ge=1)
    burst_quantile: float = Field(gt=0, le=1)
    replay_holdout_days: float = Field(ge=0)
    coverage_tolerance: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _levels_are_probabilities(self) -> Capacity:
        for level in self.confidence_levels:
            if not 0 < level < 1:
                raise ValueError(f"confidence level {level} must be between 0 and 1")
        if self.plan_scenario not in self.scenarios:
            raise ValueError(
                f"plan_scenario {self.plan_scenario!r} is not in scenarios {self.scenarios}; add it or pick one"
            )
        if not any(abs(self.plan_confidence - lv) < 1e-9 for lv in self.confidence_levels):
            raise ValueError(
                f"plan_confidence {self.plan_confidence} is not in confidence_levels {self.confidence_levels}; "
                "add it or pick one"
            )
        return self


# Seed 7.6.1's risk classes: category/subcategory.
RISK_CATEGORIES = (
    "technical/performance",
    "technical/gpu",
    "operational/people",
    "operational/process",
    "external/vendor",
    "external/environment",
)


# The live evidence a register entry may name as raising its probability (read by tasks/risk/evidence.py).
SIGNALS = ("incidents", "alerts", "error_rate", "latency", "headroom", "fidelity")


class RiskEntry(_Strict):
    name: str
    probability: int = Field(ge=1, le=5)
    impact: int = Field(ge=1, le=5)
    weight: float = Field(ge=0, le=1)
    gpu_factor: float
    category: str | None = None  # one of RISK_CATEGORIES
    # the live evidence that can raise its probability above the register's (tasks/risk/evidence.py SIGNALS)
    signals: list[str] = Field(default_factory=lambda: ["incidents", "alerts"])


class ResponseLevel(_Strict):
    name: str
    trigger: str
    respond_within_min: float = Field(gt=0)
    team: str
    escalate_to: str | None = None  # the next level up (SPEC §6), None at the top
    escalate_after_min: float | None = Field(default=None, gt=0)  # still unmitigated this long: escalate
    escalate_when: str = (
        ""  # the seed's rule in words, for what no record measures (impact grows, core business)
    )


class Probabilities(_Strict):
    """Evidence -> probability 1-5: the value at or above the k-th of four ascending thresholds is level k + 1."""

    incidents_per_30d: tuple[float, float, float, float]
    alerts_per_30d: tuple[float, float, float, float]
    error_rate: tuple[float, float, float, float]
    latency_ratio: tuple[float, float, float, float]  # live P99 / the release's recorded P99
    headroom: tuple[float, float, float, float]  # forecast peak demand / capacity at the measured knee
    fidelity_loss: tuple[float, float, float, float]  # 1 - the fidelity probe's agreement

    @model_validator(mode="after")
    def _ascending(self) -> Probabilities:
        for key, values in self.model_dump().items():
            if list(values) != sorted(values) or values[0] < 0:
                raise ValueError(
                    f"probabilities.{key} {list(values)} must be four non-negative thresholds in ascending order"
                )
        return self


class GpuHealthFactors(_Strict):
    """The GPU factor a board's worst condition gives (SPEC §6 range 0.8-1.2), and the temperature margins."""

    faulty: float = 1.2  # uncorrected ECC errors or XID events
    stressed: float = 1.1  # thermal/hardware slowdown, or within near_limit_c of the slowdown temperature
    nominal: float = 1.0  # healthy, or nothing to judge by
    healthy: float = 0.9  # cool: more than cool_margin_c under the slowdown temperature
    near_limit_c: float = Field(default=5.0, ge=0)
    cool_margin_c: float = Field(default=20.0, ge=0)


class LiveRisk(_Strict):
    """Where the live assessment reads its inputs, and what it does with a high risk (SPEC §6)."""

    history_days: float = Field(gt=0)  # incident and alert history the rates are taken over
    probe_s: float = Field(gt=0)  # the probe load on the endpoint, at rollout_gate.target_qps
    max_age_days: float = Field(gt=0)  # the cycle's "risk assessed" item wants one no older than this
    high_risk_level: str  # the response level of the incident a risk at high opens
    probabilities: Probabilities
    gpu_health: GpuHealthFactors = Field(default_factory=GpuHealthFactors)
    probe_warmup_s: float = Field(
        default=1.0, ge=0
    )  # discarded before the probe: a cold connection is no risk


class Risk(_Strict):
    matrix_bands: dict[Literal["medium", "high"], float]
    gpu_factor_range: tuple[float, float]
    risk_register: list[RiskEntry]
    response_levels: dict[str, ResponseLevel]
    mttr_target_min: float = Field(gt=0)
    availability_target: float = Field(gt=0, le=1)
    # an alert's severity -> the response level of the incident it opens (SPEC §4 levels, §6 response levels)
    alert_levels: dict[str, str] = Field(
        default_factory=lambda: {"warning": "L1", "critical": "L2", "emergency": "L3"}
    )
    live: LiveRisk

    @model_validator(mode="after")
    def _factors_in_range(self) -> Risk:
        lo, hi = self.gpu_factor_range
        for entry in self.risk_register:
            if not lo <= entry.gpu_factor <= hi:
                raise ValueError(f"risk {entry.name!r}: gpu_factor {entry.gpu_factor} outside [{lo}, {hi}]")
            if entry.category is not None and entry.category not in RISK_CATEGORIES:
                raise ValueError(
                    f"risk {entry.name!r}: category {entry.category!r} is not one of seed 7.6.1's "
                    f"({', '.join(RISK_CATEGORIES)})"
                )
        names = [e.name for e in self.risk_register]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(
                f"risk register names {', '.join(map(repr, twice))} more than once: one entry each"
            )
        if self.risk_register and not sum(e.weight for e in self.risk_register) > 0:
            raise ValueError(
                "risk register weights sum to 0: give each risk its business weight (they are normalised by their sum)"
            )
        for entry in self.risk_register:
            odd = [s for s in entry.signals if s not in SIGNALS]
            if odd:
                raise ValueError(
                    f"risk {entry.name!r}: signals {', '.join(map(repr, odd))} unknown; use any of "
                    f"{', '.join(SIGNALS)}"
                )
        levels = [*self.response_levels, None]
        for key, level in self.response_levels.items():
            if level.escalate_to not in levels or level.escalate_to == key:
                raise ValueError(
                    f"response_levels.{key}.escalate_to {level.escalate_to!r} is not another response level "
                    f"({', '.join(self.response_levels)})"
                )
        if self.live.high_risk_level not in self.response_levels:
            raise ValueError(
                f"live.high_risk_level {self.live.high_risk_level!r} is not a response level "
                f"({', '.join(self.response_levels)})"
            )
        unknown = {k: v for k, v in self.alert_levels.items() if v not in self.response_levels}
        if unknown:
            raise ValueError(
                f"alert_levels maps {', '.join(f'{k} to {v!r}' for k, v in unknown.items())}, not a response level "
                f"({', '.join(self.response_levels)})"
            )
        return self


# Seed 7.3.7's record classes (tasks/records/names.py RETENTION_CLASSES names the same four for the runs): a key
# outside them would be a typo that keeps nothing, and 0 days would purge a class as soon as it is written.
RETENTION_CLASSES = ("optimization_plans", "performance_data", "implementation_logs", "rollback_records")
RetentionDays = Annotated[int, Field(ge=1)] | None  # None: kept permanently


class Policy(_Strict):
    rollout_gate: RolloutGate
    rollout_risk: RolloutRisk
    optimization: Optimization
    test_suite: TestSuite
    history_retention_days: dict[str, RetentionDays]  # class -> days
    monitoring: Monitoring
    capacity: Capacity
    risk: Risk
    endpoint: EndpointLimits
    serving: ServingDefaults

    @field_validator("history_retention_days")
    @classmethod
    def _every_class_has_a_retention(cls, days: dict[str, int | None]) -> dict[str, int | None]:
        unknown = [c for c in days if c not in RETENTION_CLASSES]
        if unknown:
            raise ValueError(
                f"unknown retention class {', '.join(map(repr, unknown))}: the classes are "
                f"{', '.join(RETENTION_CLASSES)} (seed 7.3.7); fix the spelling"
            )
        missing = [c for c in RETENTION_CLASSES if c not in days]
        if missing:
            raise ValueError(
                f"no retention for {', '.join(missing)}: give each class its days (null = permanent)"
            )
        return days

    def app_args(self, **args: Any) -> dict[str, Any]:
        """Arguments for the serving app (`serving.app.AppArgs`) that carry this policy's serving defaults and
        endpoint limits; `args` (the model, keys, explicit knobs) win over them."""
        s, e = self.serving, self.endpoint
        return {
            "max_batch_size": s.max_batch_size,
            "batch_wait_timeout_s": s.batch_wait_timeout_s,
            "bucket_overhead_tokens": s.call_overhead_tokens,
            "cache_entries": s.cache_entries,
            "intra_op_threads": s.intra_op_threads,
            "max_ongoing_requests": s.max_ongoing_requests,
            "max_body_bytes": e.max_body_bytes,
            "max_items": e.max_items,
            "max_text_chars": e.max_text_chars,
            "rate_limit_per_key_per_s": e.rate_limit_per_key_per_s,
            "health_check_period_s": e.health_check_period_s,
            "health_check_timeout_s": e.health_check_timeout_s,
            **{k: v for k, v in args.items() if v is not None},
        }


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PolicyError(
            f"policy file {path} must hold a mapping at the top level, got {type(data).__name__}"
        )
    return data


def load_policy(path: str | Path | None = None) -> Policy:
    """Load the default policy (the serving floor's defaults under policy.yaml), deep-merged with the user's file
    when one is given."""
    data = _deep_merge(defaults_data(), _read_yaml(DEFAULT_POLICY_FILE))
    source = DEFAULT_POLICY_FILE
    if path is not None:
        source = Path(path)
        data = _deep_merge(data, _read_yaml(source))
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"key '{'.'.join(str(p) for p in err['loc']) or '<root>'}': {err['msg']}" for err in exc.errors()
        )
        raise PolicyError(f"policy file {source}: {problems}") from None


@lru_cache(maxsize=1)
def default_policy() -> Policy:
    """The policy in force: INFEROPS_POLICY_FILE over the packaged defaults."""
    override = os.environ.get("INFEROPS_POLICY_FILE")
    return load_policy(override or None)
