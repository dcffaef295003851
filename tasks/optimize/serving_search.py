"""The serving level of the search (Triton Model Analyzer's second level): each serving configuration (replicas,
intra-op threads, max batch size, batch wait, response cache) deployed as a temporary Ray Serve app on the serving
cluster, beside production, and scored by its knee: the highest open-loop rate whose P99 meets the SLA with errors
under the maximum (the measurement suite's knee search, shortened). Optuna's TPE searches the space within a budget
of trials and minutes; a brute-force grid over the same space is the yardstick (`benchmarks/cycle_quality.py`).
The temporary app is removed after every trial, also one that fails or is interrupted."""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ray import serve

from serving.app import run_local
from serving.artifacts import slug
from serving.client import InferopsClient
from serving.network import free_port
from tasks.measure.bottlenecks import Breakdown
from tasks.measure.replica_nodes import NodeUsage, sampled_on_replica_nodes
from tasks.measure.suites import model_target, run_load, run_stress
from tasks.measure.system_metrics import RAY_REPLICA_MARKER, SystemSummary, replica_pids
from tasks.policy import Policy, ServingSearch

TRIAL_PREFIX = "trial"
# A trial whose replicas are not RUNNING within this long fails as unhealthy (Serve's own wait).
TRIAL_READY_TIMEOUT_S = 180.0
# A trial's requests left in flight when its knee search ends are the load generator's, which nobody waits for: its
# replicas stop within a second instead of Serve's 20 s graceful shutdown. (Behind HAProxy, Serve still keeps an
# ingress replica draining for RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S, 30 s, so the cycle does not wait for
# each removal: trials have names of their own, and the search waits once, at its end, until every one is gone.)
TRIAL_DEPLOYMENT_OPTIONS = {"graceful_shutdown_timeout_s": 1.0, "graceful_shutdown_wait_loop_s": 0.2}
TrialStatus = Literal["ok", "failed"]


@dataclass(frozen=True, order=True)
class ServingConfig:
    """One way to serve the model: what a trial deploys, and what the champion is served with."""

    replicas: int
    threads: int
    max_batch: int
    wait_ms: float
    cache_entries: int = 0

    @property
    def name(self) -> str:
        cache = f"-c{self.cache_entries}" if self.cache_entries else ""
        return f"r{self.replicas}-t{self.threads}-b{self.max_batch}-w{self.wait_ms:g}ms{cache}"

    @property
    def cpus(self) -> int:
        """CPUs the configuration holds: each replica's intra-op threads, replicas times over."""
        return self.replicas * self.threads

    def knobs(self) -> dict[str, int]:
        """The live deployment's knobs for this configuration (the rollout's PUT .../serving fields)."""
        return {
            "num_replicas": self.replicas,
            "intra_op_threads": self.threads,
            "max_batch_size": self.max_batch,
            "cache_entries": self.cache_entries,
        }

    def app_args(self) -> dict[str, Any]:
        """The serving app's arguments for this configuration (`serving.app.AppArgs`)."""
        return {
            "num_replicas": self.replicas,
            "intra_op_threads": self.threads,
            "max_batch_size": self.max_batch,
            "batch_wait_timeout_s": self.wait_ms / 1000.0,
            "cache_entries": self.cache_entries,
        }


@dataclass(frozen=True)
class ServingSpace:
    """The values each serving knob may take; the grid is their product."""

    replicas: tuple[int, ...]
    threads: tuple[int, ...]
    max_batch: tuple[int, ...]
    wait_ms: tuple[float, ...]
    cache_entries: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        for knob, values in asdict(self).items():
            if not values:
                raise ValueError(f"serving space: {knob} has no value to try; give at least one")
            if any(v < 0 for v in values) or (knob != "cache_entries" and any(v <= 0 for v in values)):
                raise ValueError(f"serving space: {knob} values {list(values)} must be positive")

    def grid(self) -> list[ServingConfig]:
        return [
            ServingConfig(*values)
            for values in itertools.product(
                self.replicas, self.threads, self.max_batch, self.wait_ms, self.cache_entries
            )
        ]

    @property
    def size(self) -> int:
        return len(self.grid())


@dataclass(frozen=True)
class KneeSearch:
    """The knee search each trial runs: the stress suite's ramp and bisection with shorter steps. The grid and the
    cycle use the same one, so their knees compare."""

    start_rps: float = 10.0
    step_factor: float = 1.6
    step_duration_s: float = 3.0
    max_steps: int = 14
    bisect_steps: int = 2
    time_budget_s: float = 90.0
    # discarded load at the start rate before the search: a fresh app's first answers (connections, the engine's
    # first calls) are not its knee
    warmup_s: float = 2.0

    @classmethod
    def of(cls, search: ServingSearch) -> KneeSearch:
        """The knee search the policy's `optimization.serving_search` sets."""
        return cls(**search.knee_knobs())

    def knobs(self) -> dict[str, Any]:
        """The stress suite's knobs (`find_knee`)."""
        return {k: v for k, v in asdict(self).items() if k != "warmup_s"}


@dataclass
class KneeTrial:
    """One configuration measured on the endpoint: its knee and the P99 there, or why it failed."""

    config: ServingConfig
    status: TrialStatus
    knee_rps: float = 0.0
    p99_ms: float | None = None
    error_rate: float | None = None
    seconds: float = 0.0
    reason: str = ""
    number: int = 0
    phases: dict[str, float] = field(default_factory=dict)  # deploy_s, knee_search_s, remove_s
    # where a request's time went at the knee (the first rate tried when none met the SLA), from Server-Timing
    breakdown: Breakdown | None = None
    variant: str = ""  # the model variant the trial served
    # the trial replicas' CPU (and GPU) use during the knee search (`replica_usage`); empty when they run elsewhere
    usage: dict[str, float] = field(default_factory=dict)
    # why a node's replicas were not sampled (a sampler that failed to start, say)
    usage_gaps: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def meets_sla(self) -> bool:
        return self.ok and self.knee_rps > 0

    def row(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            "variant": self.variant,
            "config": self.config.name,
            "status": self.status,
            "knee req/s": round(self.knee_rps, 1),
            "p99 ms at knee": round(self.p99_ms, 1) if self.p99_ms is not None else None,
            "cpus": self.config.cpus,
            "replica CPU peak": f"{self.usage['replica_cpu_share_max']:.0%}"
            if "replica_cpu_share_max" in self.usage
            else None,
            "seconds": round(self.seconds, 1),
            "reason": self.reason,
        }


def best_trial(trials: list[KneeTrial]) -> KneeTrial | None:
    """The highest knee; of equal knees the one holding fewer CPUs."""
    ok = [t for t in trials if t.ok and t.knee_rps > 0]
    return max(ok, key=lambda t: (t.knee_rps, -t.config.cpus)) if ok else None


@contextmanager
def trial_app(
    model: str,
    variant: str | None,
    config: ServingConfig,
    policy: Policy,
    *,
    name: str | None = None,
    ready_timeout_s: float = TRIAL_READY_TIMEOUT_S,
    extra_args: dict[str, Any] | None = None,
    wait_removal: bool = True,
) -> Iterator[tuple[str, str]]:
    """`model` (a zoo name or a models:/ URI) served with `config` on a temporary Ray Serve app of its own route
    prefix beside production; yields its URL and key, and deletes the app however the block ends (waiting until it
    is gone unless `wait_removal` is False: then `remove_trial_apps` waits for it)."""
    key = secrets.token_urlsafe(24)
    name = name or f"{TRIAL_PREFIX}-{slug(model)}"
    # no logical CPU reserved (as the gate's app): it schedules beside a production that holds every CPU Ray knows
    args = policy.app_args(
        model=model, variant=variant, api_keys=[key], num_cpus=0, **config.app_args(), **(extra_args or {})
    )
    try:
        url = run_local(
            args,
            name=name,
            port=free_port(),
            route_prefix=f"/{name}",
            timeout_s=ready_timeout_s,
            deployment_options=TRIAL_DEPLOYMENT_OPTIONS,
        )
        yield url, key
    finally:
        remove_app(name, wait=wait_removal)


def remove_app(name: str, *, wait: bool = True) -> None:
    """Delete a temporary app if it is there (a trial that never deployed leaves none); `wait`: until it is gone."""
    try:
        present = name in serve.status().applications
    except Exception as exc:  # noqa: BLE001 - Serve itself gone: nothing of the trial is left to remove
        logging.getLogger(__name__).warning("could not remove trial app %s: %s", name, exc)
        return
    if present:
        remove_apps([name], wait=wait)


def remove_apps(apps: list[str], *, wait: bool = True) -> None:
    """Delete temporary apps all at once (`wait`: until every one is gone): their drains run side by side, so
    removing three takes one drain (30 s behind HAProxy), not three."""
    from ray.serve.context import _get_global_client

    try:
        client = _get_global_client()
        if client is not None:
            client.delete_apps(apps, blocking=wait)
    except Exception as exc:  # noqa: BLE001 - Serve itself gone, or a removal past Serve's own 60 s wait
        logging.getLogger(__name__).warning("could not remove trial app(s) %s: %s", ", ".join(apps), exc)


def remove_trial_apps(wait: bool = True) -> list[str]:
    """Delete every temporary trial app left on the cluster (a run killed before its cleanup ran leaves one), and
    (`wait`) wait until each is gone. Without a Ray connection there is no cluster to clean (and none is started)."""
    import ray

    if not ray.is_initialized():
        return []
    try:
        left = [name for name in serve.status().applications if name.startswith(f"{TRIAL_PREFIX}-")]
    except Exception as exc:  # noqa: BLE001 - no Serve to ask: nothing to remove
        logging.getLogger(__name__).warning("could not list Serve apps: %s", exc)
        return []
    if left:
        remove_apps(left, wait=wait)
    return left


def remove_trial_apps_on(address: str | None) -> list[str]:
    """`remove_trial_apps` from a process that may not be connected to Ray (Prefect's worker running a cancelled
    run's hooks): it joins the cluster at `address` for the clean-up and leaves it again. Connected already, the
    connection is used; with neither, there is no cluster to clean (and none is started)."""
    import ray

    if ray.is_initialized() or not address:
        return remove_trial_apps()
    ray.init(address=address, log_to_driver=False, configure_logging=False, include_dashboard=False)
    try:
        return remove_trial_apps()
    finally:
        ray.shutdown()


def measure_config(
    model: str,
    variant: str | None,
    config: ServingConfig,
    policy: Policy,
    knee: KneeSearch,
    *,
    number: int = 0,
    extra_args: dict[str, Any] | None = None,
    wait_removal: bool = True,
) -> KneeTrial:
    """Deploy `config`, find its knee on the endpoint, remove the app. A deployment that never becomes healthy,
    an app that crashes mid-measurement or an endpoint that stops answering is a failed trial with the reason.
    `wait_removal=False` leaves the app's removal under way (`remove_trial_apps` waits for it)."""
    started = time.monotonic()
    marks: dict[str, float] = {}  # when the app answered, when the knee search ended
    app = f"{TRIAL_PREFIX}-{slug(model)}" + (f"-{number}" if number else "")
    try:
        with trial_app(
            model, variant, config, policy, name=app, extra_args=extra_args, wait_removal=wait_removal
        ) as (url, key):
            marks["deployed"] = time.monotonic()
            with InferopsClient(url, key) as client:
                name = client.models()[0]
                meta = client.check_serves(name)
            # the trial's replica processes, where they run on this host (their CPU use is the trial's); on another
            # node, a sampler on each node that runs one
            pids = replica_pids(f"{RAY_REPLICA_MARKER}:{app}:")
            spec = model_target(url, name, key, meta, pids=pids)
            if knee.warmup_s > 0:
                run_load(spec, policy=policy, rate=knee.start_rps, duration_s=knee.warmup_s)
            with sampled_on_replica_nodes(app) if not pids else nullcontext(NodeUsage()) as on_nodes:
                result = run_stress(spec, policy=policy, **knee.knobs())
            marks["measured"] = time.monotonic()
        at_knee = result.load.summary() if result.load is not None else {}
        return KneeTrial(
            config,
            "ok",
            result.knee_rps,
            at_knee.get("p99_ms"),
            at_knee.get("error_rate"),
            time.monotonic() - started,
            result.stopped_reason,
            number,
            _phases(started, marks),
            result.breakdown,
            variant or "",
            replica_usage(result.system, config, len(pids)) if pids else node_usage(on_nodes, config),
            tuple(on_nodes.errors),
        )
    except Exception as exc:  # noqa: BLE001 - the trial fails with its reason, the search goes on
        return KneeTrial(
            config,
            "failed",
            seconds=time.monotonic() - started,
            reason=f"{type(exc).__name__}: {exc}",
            number=number,
            phases=_phases(started, marks),
            variant=variant or "",
        )


def replica_usage(system: SystemSummary | None, config: ServingConfig, processes: int) -> dict[str, float]:
    """What the trial's replicas used during the knee search: CPU mean and peak (percent of one core, summed over
    the processes), the peak as a share of the cores the configuration holds, and GPU utilisation where a GPU was
    sampled. Nothing when no replica process was found on this host (`node_usage` then says what their nodes saw)."""
    if system is None or not system.pids:
        return {}
    gpu = system.metrics().get("gpu_utilisation_percent_mean")
    return _usage_figures(config, processes, system.cpu_percent_mean, system.cpu_percent_max, gpu)


def node_usage(usage: NodeUsage, config: ServingConfig) -> dict[str, float]:
    """`replica_usage` from the samplers on the replicas' nodes (the replicas run on other hosts than this one)."""
    if not usage.processes:
        return {}
    mean, peak = usage.cpu_percent()
    figures = _usage_figures(config, usage.processes, mean, peak, usage.gpu_utilisation_percent_mean())
    return {**figures, "replica_nodes": float(len(usage.summaries))}


def _usage_figures(
    config: ServingConfig, processes: int, mean: float, peak: float, gpu: float | None
) -> dict[str, float]:
    out = {
        "replica_processes": float(processes),
        "replica_cpu_percent_mean": mean,
        "replica_cpu_percent_max": peak,
        "replica_cpu_share_max": peak / (100.0 * config.cpus),
    }
    if gpu is not None:
        out["gpu_utilisation_percent_mean"] = gpu
    return out


def usage_sentence(trial: KneeTrial) -> str:
    """The replicas' use in words, for the report."""
    u, gaps = trial.usage, "; ".join(trial.usage_gaps)
    if not u:
        return f"replica CPU not measured ({gaps or 'no replica process of the trial found on its nodes'})"
    gpu = (
        f"; GPU {u['gpu_utilisation_percent_mean']:.0f}% busy" if "gpu_utilisation_percent_mean" in u else ""
    )
    return (
        f"replica CPU during the knee search: mean {u['replica_cpu_percent_mean']:.0f}%, peak "
        f"{u['replica_cpu_percent_max']:.0f}% of one core over {u['replica_processes']:.0f} process(es), "
        f"{u['replica_cpu_share_max']:.0%} of the {trial.config.cpus} core(s) it holds{gpu}"
        + (
            f", sampled on {u['replica_nodes']:.0f} Ray node(s) by a sampler on each"
            if "replica_nodes" in u
            else ""
        )
        + (f" (not sampled: {gaps})" if gaps else "")
    )


def _phases(started: float, marks: dict[str, float]) -> dict[str, float]:
    """Where a trial's time went: deploying the app, the warm-up and knee search, removing the app."""
    end, out = time.monotonic(), {}
    deployed, measured = marks.get("deployed"), marks.get("measured")
    if deployed is not None:
        out["deploy_s"] = round(deployed - started, 1)
        if measured is not None:
            out["knee_search_s"] = round(measured - deployed, 1)
            out["remove_s"] = round(end - measured, 1)
    return out


Measure = Callable[[ServingConfig, int], KneeTrial]


@dataclass
class SearchRun:
    """What a search measured, in order, and what it spent."""

    method: str
    trials: list[KneeTrial] = field(default_factory=list)
    seconds: float = 0.0
    stop_reason: str = ""

    @property
    def best(self) -> KneeTrial | None:
        return best_trial(self.trials)


def grid_search(space: ServingSpace, measure: Measure, say: Callable[[str], Any] = print) -> SearchRun:
    """Every configuration of the space, each measured once."""
    run, started = SearchRun("grid"), time.monotonic()
    for number, config in enumerate(space.grid(), 1):
        trial = measure(config, number)
        say(_progress("grid", number, space.size, trial))
        run.trials.append(trial)
    run.seconds, run.stop_reason = time.monotonic() - started, f"all {space.size} configurations measured"
    return run


def tpe_search(
    space: ServingSpace,
    measure: Measure,
    *,
    max_trials: int,
    max_minutes: float,
    seed: int = 0,
    start: ServingConfig | None = None,
    known: list[KneeTrial] | None = None,
    say: Callable[[str], Any] = print,
) -> SearchRun:
    """Optuna's TPE over the space, maximising the knee, within `max_trials` measured trials and `max_minutes`;
    `start` (the configuration production serves) is measured first. A configuration TPE proposes again is told its
    measured knee without a second measurement; a failed trial counts against the budget and scores 0. `known`:
    trials measured before the search (the cycle's served baseline), taken as measured when TPE proposes them; each
    counts against the trial budget once."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, max_trials))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        "replicas": optuna.distributions.CategoricalDistribution(list(space.replicas)),
        "threads": optuna.distributions.CategoricalDistribution(list(space.threads)),
        "max_batch": optuna.distributions.CategoricalDistribution(list(space.max_batch)),
        "wait_ms": optuna.distributions.CategoricalDistribution(list(space.wait_ms)),
        "cache_entries": optuna.distributions.CategoricalDistribution(list(space.cache_entries)),
    }
    run, started = SearchRun("tpe"), time.monotonic()
    deadline = started + 60.0 * max_minutes
    seen: dict[ServingConfig, KneeTrial] = {}
    before = {t.config: t for t in known or []}
    if start is not None:
        study.enqueue_trial(asdict(start))
    proposals = 0
    while len(seen) < min(max_trials, space.size):
        if time.monotonic() > deadline:
            run.stop_reason = f"time budget {max_minutes:g} min spent"
            break
        proposals += 1
        if proposals > 20 * max_trials:  # TPE keeps proposing measured configurations: the space is exhausted
            run.stop_reason = "TPE proposes only configurations already measured"
            break
        asked = study.ask(distributions)
        config = ServingConfig(**asked.params)
        if config in seen:
            study.tell(asked, seen[config].knee_rps)
            continue
        trial = before.get(config) or measure(config, next_number(seen.values()))
        seen[config] = trial
        run.trials.append(trial)
        study.tell(asked, trial.knee_rps)
        say(
            _progress("tpe", len(seen), max_trials, trial)
            + (" (measured before the search)" if config in before else "")
        )
    else:
        run.stop_reason = f"{len(seen)} trial(s): the trial budget"
    run.seconds = time.monotonic() - started
    return run


def next_number(trials: Iterable[KneeTrial]) -> int:
    """The next trial's number: one past the highest so far (a served baseline measured before the search is 0)."""
    return max((t.number for t in trials), default=0) + 1


def _progress(method: str, number: int, total: int, trial: KneeTrial) -> str:
    figure = (
        f"knee {trial.knee_rps:.1f} req/s (P99 {trial.p99_ms:.1f} ms)"
        if trial.ok and trial.p99_ms is not None
        else f"knee {trial.knee_rps:.1f} req/s"
        if trial.ok
        else f"failed: {trial.reason}"
    )
    phases = trial.phases
    where = (
        f" (deploy {phases['deploy_s']:.0f} s, knee search {phases['knee_search_s']:.0f} s, removal "
        f"{phases['remove_s']:.0f} s)"
        if "remove_s" in phases
        else ""
    )
    return f"{method} {number}/{total} {trial.config.name}: {figure} in {trial.seconds:.0f} s{where}"


def batch_wait_ms(policy: Policy) -> float:
    """The batch wait the policy serves with, in the milliseconds a `ServingConfig` holds."""
    return policy.serving.batch_wait_timeout_s * 1000.0


def config_of(params: dict[str, Any], wait_ms: float) -> ServingConfig:
    """The serving configuration a candidate's recorded params (`Candidate.params`) describe."""
    return ServingConfig(
        int(params["replicas"]),
        int(params["intra_op_threads"]),
        int(params["batch"]),
        wait_ms,
        int(params.get("cache_entries", 0)),
    )


def cycle_space(
    start: ServingConfig,
    replica_options: list[int],
    batch_options: list[int],
    thread_options: list[int] | None = None,
    cores: int | None = None,
) -> ServingSpace:
    """The serving space the cycle searches around the model-level champion: the policy's replica counts and batch
    sizes (and batch 1), threads 1, 2 and all cores (or the caller's), each with the champion's own values; the batch
    wait and the response cache stay the champion's (the knee is measured with the cache bypassed)."""
    cores = cores or os.cpu_count() or 1
    threads = set(thread_options or {1, min(2, cores), cores})
    return ServingSpace(
        replicas=tuple(sorted({*replica_options, start.replicas})),
        threads=tuple(sorted(threads | {start.threads})),
        max_batch=tuple(sorted({1, *batch_options, start.max_batch})),
        wait_ms=(start.wait_ms,),
        cache_entries=(start.cache_entries,),
    )


@dataclass
class ServingLevel:
    """One cycle's serving level: the search on the endpoint from the knobs of `variant` (the model-level champion's,
    or, when the serving path dominated and the serving level went first, the served baseline's), and the
    configuration the champion is served with: the best knee, else (no trial met the SLA) the champion's own. When
    the champion is another variant than the one searched, `confirmation` is the champion measured on the endpoint
    with the chosen knobs (its own, when none met the SLA): its knee is what production will serve.

    `judges_sla`: the serving level went first, so the model level's in-process P99 (per batch call) is not the SLA's
    verdict; a champion with no knee meeting the SLA here is not promoted. Otherwise a champion that meets the SLA at
    no rate with the chosen knobs keeps its in-process knobs (the in-process screen judged its SLA)."""

    model: str
    variant: str
    start: ServingConfig
    run: SearchRun
    confirmation: KneeTrial | None = None  # its `variant` is the champion's
    start_label: str = (
        "the in-process choice"  # what `start` is: the model-level champion's knobs, or what serves
    )
    judges_sla: bool = False

    @property
    def chosen(self) -> KneeTrial | None:
        """The trial whose configuration the champion is served with; None: none met the SLA for it."""
        best, confirm = self.run.best, self.confirmation
        if confirm is not None:
            return (best or confirm) if confirm.meets_sla else None
        return best

    @property
    def served_knee(self) -> KneeTrial | None:
        """The measured knee of what the champion is served with: the confirmation's, else the chosen trial's."""
        if self.chosen is None:
            return None
        return self.confirmation or self.chosen

    @property
    def start_trial(self) -> KneeTrial | None:
        return next((t for t in self.run.trials if t.config == self.start), None)

    @property
    def trials(self) -> list[KneeTrial]:
        """Every trial on the endpoint: the search's, then the champion's confirmation."""
        return [*self.run.trials, *([self.confirmation] if self.confirmation else [])]

    def params_for(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` with the chosen configuration's compute knobs (unchanged when nothing was chosen). The cache stays
        `params`' own: the search keeps the cache of where it started and measures every knee with it bypassed,
        while the model level judges a cache on the request log's repeats."""
        chosen = self.chosen
        if chosen is None:
            return params
        c = chosen.config
        return {**params, "replicas": c.replicas, "intra_op_threads": c.threads, "batch": c.max_batch}

    def no_knee_reason(self, variant: str) -> str:
        """Why `variant` has no knee meeting the SLA here, in words (empty when it has one)."""
        if self.served_knee is not None:
            return ""
        confirm = self.confirmation
        if confirm is not None and confirm.variant == variant:
            how = f"failed: {confirm.reason}" if not confirm.ok else "met the SLA at no rate"
            return f"{variant} with {confirm.config.name} {how}"
        return f"no configuration of {self.variant} met the SLA ({len(self.run.trials)} measured)"

    def _otherwise(self, who: str) -> str:
        if self.judges_sla:
            return f"so {who} is not promoted (the SLA is judged on the endpoint)"
        return f"so {who} keeps the knobs it was measured with in process"

    def sentence(self) -> str:
        best, start, confirm = self.run.best, self.start_trial, self.confirmation
        measured = f"{len(self.run.trials)} configuration(s) of {self.variant} measured on the endpoint by their knee"
        if best is None:
            head = f"{measured}; none met the SLA"
            if confirm is None:
                return f"{head}, {self._otherwise('the champion')}."
            if not confirm.meets_sla:
                return (
                    f"{head}; the champion {self.no_knee_reason(confirm.variant)}, {self._otherwise('it')}."
                )
            return (
                f"{head}; the champion {confirm.variant} with its own knobs {confirm.config.name}: knee "
                f"{confirm.knee_rps:.1f} req/s, is served with them."
            )
        versus = (
            f", against {start.knee_rps:.1f} req/s for {self.start_label} {self.start.name}"
            if start is not None and start.config != best.config
            else f" ({self.start_label} itself)"
            if start is not None
            else ""
        )
        figure = f"{best.config.name}: knee {best.knee_rps:.1f} req/s at P99 <= SLA{versus}"
        if confirm is None:
            return f"{measured}; served with {figure}."
        if not confirm.meets_sla:
            why = f"failed: {confirm.reason}" if not confirm.ok else "met the SLA at no rate"
            return (
                f"{measured}; best {figure}; the champion {confirm.variant} with those knobs {why}, "
                f"{self._otherwise('it')}."
            )
        return (
            f"{measured}; best {figure}; the champion {confirm.variant}, measured with those knobs: knee "
            f"{confirm.knee_rps:.1f} req/s, is served with them."
        )

    def record(self) -> dict[str, Any]:
        chosen, served = self.chosen, self.served_knee
        return {
            "variant": self.variant,
            "start": self.start.name,
            "chosen": chosen.config.name if chosen else None,
            "chosen_knee_rps": round(chosen.knee_rps, 1) if chosen else None,
            "chosen_knobs": chosen.config.knobs() if chosen else None,
            "served_knee_rps": round(served.knee_rps, 1) if served else None,
            "confirmed": self.confirmation.row() if self.confirmation else None,
            "judges_sla": self.judges_sla,
            "trials": len(self.run.trials),
            "seconds": round(self.run.seconds, 1),
            "stopped": self.run.stop_reason,
        }


def search_serving_level(
    model: str,
    params: dict[str, Any],
    space: ServingSpace,
    policy: Policy,
    knee: KneeSearch,
    *,
    max_trials: int,
    max_minutes: float,
    wait_ms: float,
    known: list[KneeTrial] | None = None,
    start_label: str = "the in-process choice",
    judges_sla: bool = False,
    say: Callable[[str], Any] = print,
    measure: Measure | None = None,
    wait_removal: bool = True,
) -> ServingLevel:
    """TPE over `space` on temporary apps of `model`'s variant in `params`, starting from `params`' own knobs;
    `known`: trials of that variant measured before (the served baseline), not measured again. `judges_sla`: the
    level goes first and is the SLA's verdict for the champion (`ServingLevel`). Every trial's app is removed however
    the search ends; `wait_removal=False` leaves the last removals under way (the caller waits for them later, with
    `remove_trial_apps`: behind HAProxy an ingress drains 30 s, time the cycle spends measuring meanwhile)."""
    variant = str(params["variant"])
    start = config_of(params, wait_ms)

    def on_endpoint(config: ServingConfig, number: int) -> KneeTrial:
        return measure_config(model, variant, config, policy, knee, number=number, wait_removal=False)

    try:
        run = tpe_search(
            space,
            measure or on_endpoint,
            max_trials=max_trials,
            max_minutes=max_minutes,
            start=start,
            known=known,
            say=say,
        )
    finally:
        if measure is None:  # every trial's app removed, however the search ended
            remove_trial_apps(wait=wait_removal)
    return ServingLevel(model, variant, start, run, start_label=start_label, judges_sla=judges_sla)


def confirm_champion(
    level: ServingLevel,
    variant: str,
    policy: Policy,
    knee: KneeSearch,
    measure: Callable[[str, ServingConfig, int], KneeTrial] | None = None,
    wait_removal: bool = True,
) -> ServingLevel:
    """When the champion is another variant than the one the serving level searched, measure it on the endpoint with
    the chosen knobs (one more trial): its knee is what production will serve. When no trial met the SLA, a level that
    judges the SLA measures the champion with its own knobs (where the search started); otherwise there is nothing
    to confirm (the champion keeps its in-process knobs). Nothing either when the variant is the one searched."""
    best = level.run.best
    if variant == level.variant or (best is None and not level.judges_sla):
        return level
    config = best.config if best is not None else level.start
    number = next_number(level.run.trials)
    try:
        trial = (
            measure(variant, config, number)
            if measure
            else measure_config(level.model, variant, config, policy, knee, number=number, wait_removal=False)
        )
    finally:
        if measure is None:
            remove_trial_apps(wait=wait_removal)
    return replace(level, confirmation=trial)
