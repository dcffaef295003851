"""The cycle's baseline: what serves now (the registry's champion with the knobs a previous cycle applied; the
FP32 model on a first cycle), timed like every candidate, and the FP32 reference that retention divides by."""

from __future__ import annotations

from dataclasses import dataclass, replace

from serving.variants import list_variants
from tasks.measure.workload import Workload
from tasks.optimize.candidates import Candidate
from tasks.optimize.placement import Placement, artifact_here, measure_at
from tasks.optimize.trials import Measured, Trial
from tasks.policy import Optimization
from tasks.records import registry


@dataclass(frozen=True)
class CycleBaseline:
    model: str
    candidate: Candidate
    measured: Measured
    reference_value: float  # the FP32 reference's metric: retention = candidate metric / this
    version: str  # the champion's registry version (the rollback target)
    # where it was timed, and so every candidate of the cycle (None: this process)
    where: Placement | None = None
    # the first timing, when the baseline was timed again right before the candidates (`timed_again`)
    first_trial: Trial | None = None

    def retention(self, value: float) -> float:
        return value / self.reference_value

    @property
    def on_gpu(self) -> bool | None:
        """Whether the cycle's candidates are timed on a GPU the cluster holds (None: this process decides)."""
        return self.where.on_gpu if self.where else None


def reference_variant(model: str) -> str:
    """The FP32 model retention is measured against: PyTorch where the zoo has it, else the ONNX export."""
    return "torch-fp32" if "torch-fp32" in list_variants(model) else "onnx-fp32"


def establish(
    model: str,
    threads: int,
    batch: int,
    repeats: int,
    policy: Optimization,
    workload: Workload | None,
    where: Placement | None = None,
) -> CycleBaseline:
    """Measure the FP32 reference and what serves now, at `where` (`place_timing`; None: in this process); on a
    first cycle the FP32 model becomes the recorded champion, so there is always something to roll back to."""
    where = where or Placement.here("no serving cluster given: timed in this process")
    variants = list_variants(model)
    reference = reference_variant(model)
    champion = registry.alias_version(model, registry.CHAMPION)
    served = champion.variant if champion and champion.variant in variants else reference
    requests = workload.requests if workload else None
    ref = measure_at(
        where,
        model,
        Candidate(reference, reference, "baseline", "baseline", threads, batch),
        1,
        policy,
        requests,
    )
    defaults = {"intra_op_threads": threads, "max_batch_size": batch, "num_replicas": 1, "cache_entries": 0}
    knobs = registry.version_knobs(
        model, champion.version if champion and served == champion.variant else None, defaults
    )
    current = Candidate(
        served,
        served,
        "baseline",
        "baseline",
        knobs["intra_op_threads"],
        knobs["max_batch_size"],
        knobs["num_replicas"],
        knobs["cache_entries"],
    )
    measured = measure_at(where, model, current, repeats, policy, requests)
    recorded = champion or registry.ensure_champion(
        model, artifact_here(measured, where).path, {**measured.manifest, "variant": served}
    )
    return CycleBaseline(model, current, measured, ref.value, recorded.version, where)


def timed_again(
    baseline: CycleBaseline, repeats: int, policy: Optimization, workload: Workload | None
) -> CycleBaseline:
    """What serves now timed again, where it was timed first, right before the candidates are: between the two the
    cycle drove trial apps to their knees on the same machines (the served baseline, the serving level), and what
    such a run leaves behind for a while (a backlog draining, apps stopping) slows the next timings. Timed next to
    the candidates, the baseline sees the machine they see: like for like. Its accuracy is the same model's, kept."""
    again = measure_at(
        baseline.where,
        baseline.model,
        baseline.candidate,
        repeats,
        policy,
        workload.requests if workload else None,
    )
    measured = replace(
        baseline.measured, trial=again.trial, details={**baseline.measured.details, **again.details}
    )
    return replace(baseline, measured=measured, first_trial=baseline.measured.trial)
