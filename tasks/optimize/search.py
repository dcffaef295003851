"""The cycle's search (seed 7.3.2-7.3.3): model-level candidates first, then serving knobs stacked on the best so
far, one stage at a time, within a budget of trials and minutes, stopping a stage when the last one added too
little (the over-optimization pitfall) and measuring every combination rather than assuming gains add up."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tasks.measure.workload import Workload
from tasks.optimize.baseline import CycleBaseline
from tasks.optimize.candidates import CONTROL_STAGE, Candidate, knob_stage, knob_values
from tasks.optimize.improvement import hardware_cost_ratio
from tasks.optimize.placement import measure_at
from tasks.optimize.trials import Measured
from tasks.optimize.validation import (
    CandidateResult,
    control_verdict,
    failed_candidate,
    fastest_passing,
    marginal_gain_exhausted,
    validate,
)
from tasks.policy import Optimization, Policy

if TYPE_CHECKING:
    from tasks.optimize.serving_search import ServingLevel

SKIPPED_REASON = "skipped: search budget (trials or time) spent"


@dataclass(frozen=True)
class CycleSettings:
    """One cycle's measurement settings: the policy's, with the caller's overrides applied once."""

    repeats: int
    max_trials: int
    max_minutes: float
    threads: int
    batch: int
    optimization: Optimization
    thread_options: list[int] | None = None
    batch_options: list[int] | None = None
    cache_options: list[int] | None = None

    @classmethod
    def resolve(
        cls,
        policy: Optimization,
        *,
        threads: int,
        batch: int,
        repeats: int | None = None,
        max_trials: int | None = None,
        max_minutes: float | None = None,
        thread_options: list[int] | None = None,
        batch_options: list[int] | None = None,
        replica_options: list[int] | None = None,
        cache_options: list[int] | None = None,
        serving_trials: int | None = None,
    ) -> CycleSettings:
        opt = (
            policy.model_copy(update={"replica_options": list(replica_options)})
            if replica_options
            else policy
        )
        if serving_trials is not None:
            if serving_trials < 0:
                raise ValueError(
                    f"serving_trials={serving_trials}: the serving level's trial budget cannot be negative; give 0 "
                    "to serve the in-process knobs, or a positive number of trials"
                )
            search = opt.serving_search.model_copy(update={"max_trials": serving_trials})
            opt = opt.model_copy(update={"serving_search": search})
        return cls(
            repeats or opt.repeats,
            max_trials or opt.max_trials,
            max_minutes or opt.max_minutes,
            threads,
            batch,
            opt,
            thread_options,
            batch_options,
            cache_options,
        )

    def knob_stages(
        self, workload: Workload | None, on_endpoint: bool = False
    ) -> tuple[list[tuple[str, list[dict[str, int]]]], str]:
        """The knob stages in order, and why some are left out: caching is judged only on a request log; threads,
        replicas and batch size are not timed in process when the serving level chose them on the endpoint
        (`on_endpoint`: it went first)."""
        stages: list[tuple[str, list[dict[str, int]]]] = []
        said: list[str] = []
        if on_endpoint:
            said.append(
                "threads, replicas and batch size chosen on the endpoint by the serving level (it went first)"
            )
        else:
            stages += [
                ("parallelization", knob_values("parallelization", self.thread_options, self.optimization)),
                ("batching", knob_values("batching", self.batch_options, self.optimization)),
            ]
        if workload is None:
            said.append("caching not measured: no request log (a cache's hit rate is the workload's)")
        else:
            stages.append(("caching", knob_values("caching", self.cache_options, self.optimization)))
        return stages, "; ".join(said)


@dataclass
class Budget:
    """Trials and wall time the search may spend."""

    max_trials: int
    deadline: float  # time.monotonic()

    @classmethod
    def start(cls, max_trials: int, max_minutes: float) -> Budget:
        return cls(max_trials, time.monotonic() + 60.0 * max_minutes)

    def spent(self, trials: int) -> bool:
        return trials >= self.max_trials or time.monotonic() > self.deadline


@dataclass
class SearchOutcome:
    results: list[CandidateResult] = field(default_factory=list)
    measured: dict[str, Measured] = field(default_factory=dict)
    stop_reason: str = "every stage searched"
    serving: ServingLevel | None = None  # the serving level on the endpoint, when the cycle ran one

    @property
    def model_champion(self) -> CandidateResult | None:
        """The fastest passing candidate as measured in process (its name keys `measured`)."""
        return fastest_passing(self.results)

    @property
    def champion(self) -> CandidateResult | None:
        """What the cycle promotes: the model-level champion, served with the knobs of its best knee on the endpoint
        when the serving level ran and a configuration met the SLA there. When the serving level judges the SLA (it
        went first), a champion with no knee meeting it on the endpoint is not promoted (`refusal` says why)."""
        best = self.model_champion
        if best is None or self.serving is None:
            return best
        if self.refusal:
            return None
        return replace(best, params=self.serving.params_for(best.params))

    @property
    def refusal(self) -> str:
        """Why the model-level champion is not promoted though it passed in process: the endpoint judged the SLA and
        it met it at no rate there. Empty when nothing refuses it."""
        best = self.model_champion
        if best is None or self.serving is None or not self.serving.judges_sla:
            return ""
        if self.serving.served_knee is not None:
            return ""
        return (
            f"{best.name} passed in process, but on the endpoint {self.serving.no_knee_reason(best.params['variant'])}"
            ": the SLA is judged there, per request, so it is not promoted"
        )

    @property
    def candidates_measured(self) -> int:
        return sum(1 for r in self.results if r.trial)


Trial = Callable[[Candidate], tuple[CandidateResult, Measured | None]]


def evaluate_candidate(
    candidate: Candidate,
    baseline: CycleBaseline,
    repeats: int,
    policy: Policy,
    workload: Workload | None,
    sla_on_endpoint: bool = False,
) -> tuple[CandidateResult, Measured | None]:
    """Build and measure one candidate and validate it against the baseline; a crashing export, load or
    evaluator rejects this candidate (with the cause), never the cycle. `sla_on_endpoint`: the serving level went
    first and judges the P99 SLA on the endpoint (`validate`)."""
    measured: Measured | None = None
    try:
        measured = measure_at(
            baseline.where,  # like for like: where the baseline was timed
            baseline.model,
            candidate,
            repeats,
            policy.optimization,
            workload.requests if workload else None,
        )
        result = CandidateResult(
            candidate.name,
            candidate.optimization_type,
            candidate.params(),
            measured.trial,
            baseline.retention(measured.value),
            measured.worst_case,
            measured.metric,
        )
        result.hit_rate = measured.details.get("cache_hit_rate")
        result.measured_on = measured.details.get("measured_on")
        if candidate.stage == CONTROL_STAGE:
            return (
                control_verdict(result, baseline.measured.trial, policy.optimization.marginal_gain_stop),
                measured,
            )
        result = validate(
            result,
            baseline.measured.trial,
            policy.optimization,
            policy.rollout_gate.sla_p99_ms,
            hardware_cost_ratio(
                candidate.replicas,
                baseline.candidate.replicas,
                measured.trial.median_throughput,
                baseline.measured.trial.median_throughput,
            ),
            sla_on_endpoint,
        )
    except Exception as exc:  # noqa: BLE001 - the reason is recorded on the candidate
        result = failed_candidate(
            candidate.name, candidate.optimization_type, candidate.params(), baseline.measured.metric, exc
        )
    return result, measured


def run_search(
    plan: list[Candidate],
    baseline: CycleBaseline,
    settings: CycleSettings,
    workload: Workload | None,
    trial: Trial,
    budget: Budget,
    say: Callable[[str], Any] = lambda _msg: None,
    serving: ServingLevel | None = None,
) -> SearchOutcome:
    """Every model-level candidate, then each knob stage on the best configuration so far; `trial` measures
    one candidate (the flow passes its Prefect task, so each candidate is a task run of its own). `serving`: the
    serving level already ran (the serving path dominated): its knobs are not timed again in process."""
    outcome = SearchOutcome(serving=serving)
    known = {c.name: c for c in plan}

    def run_stage(stage_plan: list[Candidate]) -> None:
        for candidate in stage_plan:
            known[candidate.name] = candidate
            if budget.spent(len(outcome.results)):
                skipped = failed_candidate(
                    candidate.name,
                    candidate.optimization_type,
                    candidate.params(),
                    baseline.measured.metric,
                    RuntimeError("search budget spent"),
                )
                outcome.results.append(replace(skipped, reason=SKIPPED_REASON))
                continue
            say(f"candidate {candidate.name} ({candidate.stage})")
            result, measured = trial(candidate)
            say(f"  -> {'accepted' if result.accepted else 'rejected'}: {result.reason}")
            outcome.results.append(result)
            if measured is not None:
                outcome.measured[candidate.name] = measured

    run_stage(plan)
    stages, left_out = settings.knob_stages(workload, on_endpoint=serving is not None)
    if left_out:
        outcome.stop_reason = left_out
    best = outcome.model_champion
    best_candidate = known[best.name] if best else baseline.candidate
    previous_best = baseline.measured.trial.median_throughput
    for stage, values in stages:
        current = outcome.model_champion
        current_rps = current.trial.median_throughput if current and current.trial else previous_best
        # The marginal-gain stop guards compute knobs against over-tuning; a cache's gain comes from the workload's
        # repeats, not from the compute knobs, so the caching stage is always measured.
        if (
            current is not None
            and stage == "batching"
            and marginal_gain_exhausted(previous_best, current_rps, settings.optimization)
        ):
            outcome.stop_reason = (
                f"batching skipped: parallelization added < {settings.optimization.marginal_gain_stop:.0%}"
            )
            continue
        previous_best = current_rps
        run_stage(knob_stage(best_candidate, stage, values))
        winner = outcome.model_champion
        if winner is not None:
            best_candidate = known.get(winner.name, best_candidate)
    return outcome
