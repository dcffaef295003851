"""What the optimization cycle tries: model-level candidates (variants) and serving knobs stacked on the best
configuration so far, each with the name a person reads in the report and the Prefect UI."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from serving.variants import (
    OPEXCLUSION_RETENTION_TARGET,
    VARIANT_RECIPES,
    gpu_unavailable_reason,
    list_variants,
)
from tasks.policy import Optimization
from tasks.records.registry import SERVE_KNOBS

# Variants that are measurement reference points, never candidates to serve.
NOT_CANDIDATES = frozenset({"torch-fp32", "onnx-fp32-noopt"})
# The stage of what serves now measured again as a candidate: an A/A check of the measurement, never promoted.
CONTROL_STAGE = "control"


@dataclass(frozen=True)
class Candidate:
    """One configuration to try: a variant plus the serving knobs it runs with."""

    name: str
    variant: str
    optimization_type: str
    stage: str  # model | parallelization | batching | caching | control
    intra_op_threads: int
    batch: int
    replicas: int = 1
    cache_entries: int = 0

    def params(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "intra_op_threads": self.intra_op_threads,
            "batch": self.batch,
            "replicas": self.replicas,
            "cache_entries": self.cache_entries,
            "stage": self.stage,
        }

    def serving_knobs(self) -> dict[str, int]:
        """What the live deployment needs to serve as this candidate was measured (PUT .../serving field names)."""
        return knobs_of(self.params())


def knobs_of(params: dict[str, Any]) -> dict[str, int]:
    """Serving knobs from a candidate's recorded params (the keys the registry tags a version with)."""
    return {knob: int(params[key]) for key, knob in SERVE_KNOBS.items()}


def candidate_name(variant: str, threads: int, batch: int, replicas: int = 1, cache_entries: int = 0) -> str:
    name = f"{variant}+threads={threads}+batch={batch}"
    if replicas > 1:
        name += f"+replicas={replicas}"
    if cache_entries:
        name += f"+cache={cache_entries}"
    return name


def model_stage(model: str, baseline: Candidate, on_gpu: bool | None = None) -> list[Candidate]:
    """Model-level candidates in the order the seed's fallbacks go: graph optimization, then INT8 plain before
    the per-channel, reduce-range and op-exclusion fallbacks, static INT8, and GPU precisions where a GPU
    exists; each served with the baseline's knobs, so only the model changes. `on_gpu`: whether the candidates are
    timed where a GPU is held (`Placement.on_gpu`, on the serving cluster); None: this process's providers decide."""
    candidates = []
    for name in list_variants(model):
        recipe = VARIANT_RECIPES[name]
        gpu_missing = (
            bool(gpu_unavailable_reason(recipe)) if on_gpu is None else recipe.requires_gpu and not on_gpu
        )
        if name in NOT_CANDIDATES or name == baseline.variant or gpu_missing:
            continue
        candidates.append(
            Candidate(
                name,
                name,
                recipe.opt_type,
                "model",
                baseline.intra_op_threads,
                baseline.batch,
                baseline.replicas,
                baseline.cache_entries,
            )
        )
    return candidates


STAGE_TYPES = {"parallelization": "parallelization", "batching": "batching", "caching": "caching"}


def knob_stage(best: Candidate, stage: str, values: list[dict[str, int]]) -> list[Candidate]:
    """Candidates that change one stage's knobs on top of the best configuration so far (combinations measured)."""
    if stage not in STAGE_TYPES:
        raise ValueError(f"unknown knob stage {stage!r}: one of {sorted(STAGE_TYPES)}")
    out = []
    for change in values:
        knobs = {
            "intra_op_threads": best.intra_op_threads,
            "batch": best.batch,
            "replicas": best.replicas,
            "cache_entries": best.cache_entries,
            **change,
        }
        if knobs == {
            "intra_op_threads": best.intra_op_threads,
            "batch": best.batch,
            "replicas": best.replicas,
            "cache_entries": best.cache_entries,
        }:
            continue
        name = candidate_name(
            best.variant, knobs["intra_op_threads"], knobs["batch"], knobs["replicas"], knobs["cache_entries"]
        )
        out.append(Candidate(name, best.variant, STAGE_TYPES[stage], stage, **knobs))
    return out


def knob_values(stage: str, given: list[int] | None, policy: Optimization) -> list[dict[str, int]]:
    """What a knob stage tries. Parallelization: threads (the caller's, else 1, 2 and all cores) and replica
    counts from the policy, every pair that fits the cores; batching and caching: the policy's sizes."""
    cores = os.cpu_count() or 1
    if stage == "parallelization":
        threads = list(given) if given else sorted({1, min(2, cores), cores})
        pairs = [{"intra_op_threads": t, "replicas": 1} for t in threads]
        pairs += [
            {"intra_op_threads": t, "replicas": r}
            for r in policy.replica_options
            if r > 1
            for t in threads
            if r * t <= cores
        ]
        return pairs
    if stage == "batching":
        return [{"batch": b} for b in (given or policy.batch_options)]
    if stage == "caching":
        return [{"cache_entries": c} for c in (given or policy.cache_options)]
    raise ValueError(f"unknown knob stage {stage!r}: one of {sorted(STAGE_TYPES)}")


def variant_knobs(variant: str, policy: Optimization) -> dict[str, Any]:
    """Build knobs that follow the policy: the op-exclusion search stops at the policy's retention threshold."""
    if (
        "retention_target" in VARIANT_RECIPES[variant].params
        and policy.accuracy_retention_threshold != OPEXCLUSION_RETENTION_TARGET
    ):
        return {"retention_target": policy.accuracy_retention_threshold}
    return {}


def plan_candidates(
    model: str, baseline: Candidate, include: list[str] | None = None, on_gpu: bool | None = None
) -> list[Candidate]:
    """The model-level plan, limited to `include` when given (each name must be a candidate for this model). Naming
    what serves now (the baseline's variant) adds it, first, as an A/A control: measured again with the baseline's
    knobs, its gain must lie within the run-to-run spread, and it is never promoted."""
    plan = model_stage(model, baseline, on_gpu)
    if include is None:
        return plan
    unknown = sorted(set(include) - {c.variant for c in plan} - {baseline.variant})
    if unknown:
        raise ValueError(
            f"candidates {unknown} are not available for {model}: choose from {[c.variant for c in plan]}, or "
            f"{baseline.variant} (what serves now) as an A/A control"
        )
    control = (
        [replace(baseline, name=baseline.variant, stage=CONTROL_STAGE)] if baseline.variant in include else []
    )
    return control + [c for c in plan if c.variant in include]
