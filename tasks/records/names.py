"""Every name inferops writes into MLflow and Prefect, defined once: experiments, run and version tags, retention
classes, and the keys of Prefect artifacts (stable, so the UI shows the latest of each key)."""

from __future__ import annotations

from serving.artifacts import slug

# ---- MLflow experiments --------------------------------------------------------------------------------------
BENCH_EXPERIMENT = "inferops-bench"
OPTIMIZATION_EXPERIMENT = "inferops-optimization"
GATE_EXPERIMENT = "inferops-gate"
CAPACITY_EXPERIMENT = "inferops-capacity"
REGISTRY_EXPERIMENT = "inferops-registry"
RETENTION_EXPERIMENT = "inferops-retention"  # what each purge deleted: the audit trail of history retention
REMEDIATION_EXPERIMENT = "inferops-remediation"  # every automatic action an alert caused (AIOps L5)
RISK_EXPERIMENT = "inferops-risk"  # every risk assessment: inputs, evidence, scores, the heat map

# ---- run tags ------------------------------------------------------------------------------------------------
TAG_KIND = "inferops.kind"
TAG_MODEL = "inferops.model"
TAG_VARIANT = "inferops.variant"
TAG_SHA256 = "inferops.sha256"
TAG_SUITE = "inferops.suite"
TAG_BASELINE = "inferops.baseline"
TAG_PROVIDER = "inferops.provider"
TAG_MEASURED_ON = (
    "inferops.measured_on"  # the host (a Ray node beside production) and device a figure came from
)
TAG_ACCELERATOR = "inferops.accelerator"  # what the served replica computes on: a GPU's name, or "cpu"
TAG_VERDICT = "inferops.verdict"
TAG_REASON = "inferops.reason"
TAG_ROLLBACK = "inferops.rollback"
TAG_RETENTION_CLASS = (
    "inferops.retention_class"  # seed 7.3.7: how long a record is kept (policy history_retention_days)
)
TAG_GATE_VERDICT = "inferops.gate.verdict"
TAG_GATE_REASON = "inferops.gate.reason"
TAG_GATE_PROMOTED = "inferops.gate.promoted"
TAG_RISK_ACTIONS = "inferops.risk.actions"
TAG_RISK_LEVEL = "inferops.risk.level"  # a risk assessment's overall level
TAG_RISK_HIGH = "inferops.risk.high"  # the risks it found at high, or "none"
TAG_ALERT = "inferops.alert"  # the alert (its name) an automatic action answered
TAG_ALERT_KEY = "inferops.alert.key"  # that alert firing: Alertmanager fingerprint @ start
TAG_APPROVAL_PREFIX = "inferops.approval."
TAG_FORECASTER = "inferops.forecaster"
TAG_STRATEGY = "inferops.strategy"
TAG_RECOMMENDATION = "inferops.recommendation"
TAG_VALIDATION = "inferops.validation"
TAG_HISTORY = "inferops.history"
TAG_CYCLE_CHAMPION = (
    "inferops.cycle.champion"  # what a cycle ended serving ("unchanged (...)" when nothing won)
)
TAG_PREFECT_FLOW_RUN = "inferops.prefect.flow_run_id"  # the Prefect flow run that wrote a run
# MLflow 3's UI opens an experiment in the view its kind names; ours are model-development runs, not GenAI traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow 3.17's UI has a GenAI / model-training switch that wins over that tag; links open the training view.
ML_VIEW = "workflowType=machine_learning"


def gate_item_reason_tag(item: str) -> str:
    return f"inferops.gate.{item}.reason"


# ---- model-version and registered-model tags -----------------------------------------------------------------
VERSION_TAG_GATE = "inferops.gate"  # why a gated candidate was not promoted
VERSION_TAG_ROLLED_BACK = "inferops.rolled_back"
VERSION_TAG_SERVE_PREFIX = "inferops.serve."  # + knob: the serving knobs a version was measured with
VERSION_TAG_CACHE_HIT_RATE = "inferops.serve.cache_hit_rate"
MODEL_TAG_FROZEN = "inferops.frozen"

# ---- retention classes (keys of policy history_retention_days) --------------------------------------------------
OPTIMIZATION_PLANS = "optimization_plans"
PERFORMANCE_DATA = "performance_data"
IMPLEMENTATION_LOGS = "implementation_logs"
ROLLBACK_RECORDS = "rollback_records"
RETENTION_CLASSES = (OPTIMIZATION_PLANS, PERFORMANCE_DATA, IMPLEMENTATION_LOGS, ROLLBACK_RECORDS)
# The class a run of each experiment gets unless its record names another: the cycle's parent run of the optimization
# experiment is its plan, while each candidate under it says it is performance data; a rollback in the registry
# experiment says it is a rollback record. A registration is a step of rolling a version out, and its run (the
# artifact the version serves from) is kept by the purge anyway for as long as the version exists.
EXPERIMENT_RETENTION = {
    BENCH_EXPERIMENT: PERFORMANCE_DATA,  # benchmark, load, stress, stability suites and named baselines
    OPTIMIZATION_EXPERIMENT: OPTIMIZATION_PLANS,  # the cycle: baseline, plan, report
    GATE_EXPERIMENT: IMPLEMENTATION_LOGS,  # the gate, its approval, the promotion, the risk window
    CAPACITY_EXPERIMENT: OPTIMIZATION_PLANS,  # capacity plans
    REGISTRY_EXPERIMENT: IMPLEMENTATION_LOGS,  # registrations (rollbacks are rollback records)
    RETENTION_EXPERIMENT: IMPLEMENTATION_LOGS,  # a purge's own record: it must not be kept forever itself
    RISK_EXPERIMENT: OPTIMIZATION_PLANS,  # an assessment plans the response: kept as long as plans
    REMEDIATION_EXPERIMENT: IMPLEMENTATION_LOGS,  # a freeze or a recommendation (a rollback says it is a rollback record)
}


# ---- Prefect artifact keys -------------------------------------------------------------------------------------
def artifact_key(kind: str, model: str | None = None, part: str | None = None) -> str:
    """A stable Prefect artifact key (lowercase letters, digits and dashes): `kind-model-part`."""
    return slug("-".join(x for x in (kind, model, part) if x))


def release_baseline(model: str) -> str:
    """The baseline name of `model` in production: every release's benchmark is recorded under it, so the latest
    run of that name is what production's next change is compared with."""
    return f"{slug(model)}-production"
