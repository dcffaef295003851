"""The serving-level search: the space, the budgeted TPE loop, and trials on a real local Ray Serve that always
remove their temporary app (healthy, never healthy, or interrupted)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tasks.optimize.order import plan_order
from tasks.optimize.serving_search import (
    KneeSearch,
    KneeTrial,
    Measure,
    ServingConfig,
    ServingLevel,
    ServingSpace,
    best_trial,
    config_of,
    confirm_champion,
    cycle_space,
    grid_search,
    measure_config,
    remove_app,
    remove_trial_apps,
    replica_usage,
    search_serving_level,
    tpe_search,
    trial_app,
    usage_sentence,
)
from tasks.policy import default_policy

SPACE = ServingSpace(replicas=(1, 2), threads=(1, 2), max_batch=(1, 4, 8, 16), wait_ms=(1.0, 5.0))
# A short knee search: the trial tests check the trial's life cycle, not the figure.
QUICK = KneeSearch(
    start_rps=10.0, step_factor=2.0, step_duration_s=1.0, max_steps=3, bisect_steps=0, warmup_s=1.0
)


def landscape(config: ServingConfig, number: int) -> KneeTrial:
    """A known knee per configuration: best at 2 replicas x 1 thread, batch 8, wait 1 ms (130 req/s)."""
    knee = (
        100.0
        + 10 * (config.replicas == 2)
        - 15 * (config.threads == 2)
        + {1: -40, 4: 0, 8: 20, 16: 5}[config.max_batch]
    )
    knee -= 3 * (config.wait_ms == 5.0)
    return KneeTrial(config, "ok", knee, 50.0, 0.0, number=number)


def searched(
    params: dict[str, Any], measure: Measure, space: ServingSpace = SPACE, **kwargs: Any
) -> ServingLevel:
    """The serving level on minilm over `space` with a fake endpoint (`measure`), 5 minutes, 1 ms batch wait."""
    return search_serving_level(
        "minilm",
        params,
        space,
        default_policy(),
        QUICK,
        max_minutes=5,
        wait_ms=1.0,
        say=lambda _m: None,
        measure=measure,
        **kwargs,
    )


def test_space_is_the_product_of_its_knobs_and_refuses_an_empty_or_negative_one() -> None:
    assert SPACE.size == 32 and len(set(SPACE.grid())) == 32
    assert ServingConfig(2, 2, 8, 5.0).name == "r2-t2-b8-w5ms" and ServingConfig(2, 2, 8, 5.0).cpus == 4
    with pytest.raises(ValueError, match="threads has no value to try"):
        ServingSpace(replicas=(1,), threads=(), max_batch=(4,), wait_ms=(1.0,))
    with pytest.raises(ValueError, match=r"max_batch values \[0, 4\] must be positive"):
        ServingSpace(replicas=(1,), threads=(1,), max_batch=(0, 4), wait_ms=(1.0,))


def test_grid_measures_every_configuration_and_the_best_is_the_highest_knee() -> None:
    run = grid_search(SPACE, landscape, say=lambda _m: None)
    assert len(run.trials) == 32 and run.best is not None
    assert run.best.config == ServingConfig(2, 1, 8, 1.0) and run.best.knee_rps == 130.0


def test_equal_knees_prefer_the_configuration_holding_fewer_cpus() -> None:
    small, large = ServingConfig(1, 1, 8, 1.0), ServingConfig(2, 2, 8, 1.0)
    trials = [KneeTrial(large, "ok", 90.0), KneeTrial(small, "ok", 90.0), KneeTrial(small, "failed", 0.0)]
    assert best_trial(trials) is trials[1]
    assert best_trial([KneeTrial(small, "failed")]) is None


def test_tpe_starts_from_production_stays_in_budget_and_never_measures_twice() -> None:
    measured: list[ServingConfig] = []

    def measure(config: ServingConfig, number: int) -> KneeTrial:
        measured.append(config)
        return landscape(config, number)

    start = ServingConfig(1, 1, 16, 5.0)
    run = tpe_search(SPACE, measure, max_trials=10, max_minutes=5, seed=0, start=start, say=lambda _m: None)
    assert measured[0] == start and len(measured) == 10 == len(set(measured))
    assert [t.number for t in run.trials] == list(range(1, 11))
    assert run.best is not None and run.best.knee_rps >= landscape(start, 0).knee_rps
    assert run.stop_reason == "10 trial(s): the trial budget"


def test_tpe_stops_on_its_time_budget() -> None:
    def slow(config: ServingConfig, number: int) -> KneeTrial:
        time.sleep(0.4)
        return landscape(config, number)

    run = tpe_search(SPACE, slow, max_trials=30, max_minutes=1.0 / 60, seed=0, say=lambda _m: None)
    assert 1 <= len(run.trials) < 30 and run.stop_reason == "time budget 0.0166667 min spent"


def _apps() -> set[str]:
    from ray import serve

    return set(serve.status().applications)


@pytest.mark.usefixtures("ray_session")
def test_a_trial_measures_its_knee_on_a_temporary_app_and_removes_it() -> None:
    """The life cycle: deployed, healthy, searched on its own route, removed. A 1 s SLA, because the P99 of a 1 s
    step on a shared 2-core box in the middle of the suite must not decide it (the knee rule itself is tested in
    tests/tasks/measure)."""
    policy = default_policy()
    lenient = policy.model_copy(
        update={"rollout_gate": policy.rollout_gate.model_copy(update={"sla_p99_ms": 1000.0})}
    )
    trial = measure_config("digits-cnn", None, ServingConfig(1, 1, 4, 1.0), lenient, QUICK, number=1)
    assert trial.ok and trial.knee_rps >= QUICK.start_rps and trial.p99_ms is not None, trial
    assert not any(a.startswith("trial-") for a in _apps())


@pytest.mark.usefixtures("ray_session")
def test_a_trial_that_never_becomes_healthy_fails_with_the_reason_and_leaves_no_app() -> None:
    trial = measure_config(
        "digits-cnn", "no-such-variant", ServingConfig(1, 1, 4, 1.0), default_policy(), QUICK, number=3
    )
    assert trial.status == "failed" and trial.knee_rps == 0.0 and trial.number == 3
    assert "no-such-variant" in trial.reason, trial.reason
    assert not any(a.startswith("trial-") for a in _apps())


@pytest.mark.usefixtures("ray_session")
def test_an_interrupted_trial_removes_its_app() -> None:
    """A cancelled flow run interrupts the trial mid-measurement: the app goes all the same."""
    with pytest.raises(KeyboardInterrupt):
        with trial_app("digits-cnn", None, ServingConfig(1, 1, 4, 1.0), default_policy(), name="trial-cut"):
            assert "trial-cut" in _apps()
            raise KeyboardInterrupt
    assert "trial-cut" not in _apps()


@pytest.mark.usefixtures("ray_session")
def test_a_process_not_connected_to_ray_joins_the_cluster_to_remove_a_left_trial_app() -> None:
    """What a cancelled run's hook does in Prefect's worker: a fresh process joins the cluster at its address,
    removes the trial app the run left, and leaves production's apps alone."""
    import subprocess
    import sys

    import ray

    from serving.app import run_local

    args = default_policy().app_args(model="digits-cnn", allow_anonymous=True, num_cpus=0)
    run_local(args, name="trial-left", route_prefix="/trial-left", timeout_s=120)
    run_local(args, name="kept", route_prefix="/kept", timeout_s=120)
    address = ray.get_runtime_context().gcs_address
    code = f"from tasks.optimize.serving_search import remove_trial_apps_on; print(remove_trial_apps_on({address!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1] == "['trial-left']"
        assert "trial-left" not in _apps() and "kept" in _apps()
    finally:
        remove_app("kept")


def test_the_cycle_space_holds_the_champions_own_knobs_beside_the_policys_options() -> None:
    start = config_of({"replicas": 1, "intra_op_threads": 2, "batch": 8, "cache_entries": 4096}, 5.0)
    assert start == ServingConfig(1, 2, 8, 5.0, 4096)
    space = cycle_space(start, replica_options=[1, 2], batch_options=[4, 16], cores=2)
    assert space.replicas == (1, 2) and space.threads == (1, 2) and space.max_batch == (1, 4, 8, 16)
    assert space.wait_ms == (5.0,) and space.cache_entries == (4096,) and start in space.grid()


def test_the_serving_level_serves_the_best_knee_not_the_in_process_choice() -> None:
    """The in-process choice (r1-t2-b16) is measured first; the champion is served with the best knee."""
    params = {"variant": "onnx-fp32", "replicas": 1, "intra_op_threads": 2, "batch": 16, "cache_entries": 0}
    space = ServingSpace(replicas=(1, 2), threads=(1, 2), max_batch=(1, 4, 8, 16), wait_ms=(1.0,))
    level = searched(params, landscape, space, max_trials=16)
    assert level.run.trials[0].config == level.start == ServingConfig(1, 2, 16, 1.0)
    assert level.chosen is not None and level.chosen.config == ServingConfig(2, 1, 8, 1.0)
    assert level.params_for(params) == {**params, "replicas": 2, "intra_op_threads": 1, "batch": 8}
    assert "served with r2-t1-b8-w1ms: knee 130.0 req/s" in level.sentence()
    assert "against 90.0 req/s for the in-process choice r1-t2-b16-w1ms" in level.sentence()


def test_with_no_configuration_meeting_the_sla_the_in_process_knobs_stay() -> None:
    params = {"variant": "onnx-fp32", "replicas": 1, "intra_op_threads": 1, "batch": 4, "cache_entries": 0}

    def nothing_meets_it(config: ServingConfig, number: int) -> KneeTrial:
        return KneeTrial(config, "ok", 0.0, 250.0, 0.0, number=number)

    level = searched(params, nothing_meets_it, max_trials=3)
    assert len(level.run.trials) == 3 and level.chosen is None
    assert level.params_for(params) == params and "none met the SLA" in level.sentence()


@pytest.mark.usefixtures("ray_session")
def test_a_configuration_faster_in_process_but_slower_on_the_endpoint_loses() -> None:
    """Batch 16 beats batch 1 in process (measured here), where no request waits for a batch to fill. Served with a
    1 s batch wait, a request at the knee search's first rate waits for its batch on the endpoint, far over a 300 ms
    SLA (lenient, so a noisy step on a shared box does not fail batch 1): the serving level, which measures the
    endpoint, serves batch 1 instead."""
    from tasks.optimize.candidates import Candidate
    from tasks.optimize.trials import measure

    policy = default_policy()
    policy = policy.model_copy(
        update={"rollout_gate": policy.rollout_gate.model_copy(update={"sla_p99_ms": 300.0})}
    )
    in_process = {
        b: measure(
            "digits-cnn",
            Candidate(f"b{b}", "onnx-fp32", "batching", "batching", 1, b),
            2,
            policy.optimization,
        ).trial.median_throughput
        for b in (1, 16)
    }
    assert in_process[16] > in_process[1], in_process
    params = {"variant": "onnx-fp32", "replicas": 1, "intra_op_threads": 1, "batch": 16, "cache_entries": 0}
    space = ServingSpace(replicas=(1,), threads=(1,), max_batch=(1, 16), wait_ms=(1000.0,))
    level = search_serving_level(
        "digits-cnn",
        params,
        space,
        policy,
        QUICK,
        max_trials=2,
        max_minutes=5,
        wait_ms=1000.0,
        say=lambda _m: None,
    )
    by_batch = {t.config.max_batch: t for t in level.run.trials}
    assert by_batch[16].ok and by_batch[16].knee_rps == 0.0, by_batch[16]
    # where its requests' time went on the endpoint (Server-Timing): waiting for the batch to fill, which puts the
    # serving level first
    waited = by_batch[16].breakdown
    assert waited is not None and waited.dominant is not None and waited.dominant.name == "batch_wait", waited
    assert plan_order(waited, "on the endpoint").first == "serving level"
    # what the trial's replica (one process: the model is served inside the ingress) used during its knee search
    usage = by_batch[1].usage
    assert usage["replica_processes"] == 1.0 and usage["replica_cpu_percent_max"] > 0, usage
    assert usage["replica_cpu_share_max"] == usage["replica_cpu_percent_max"] / 100.0
    assert level.chosen is not None and level.chosen.config.max_batch == 1, level.run.trials
    assert level.params_for(params)["batch"] == 1
    assert not any(a.startswith("trial-") for a in _apps())


@pytest.mark.usefixtures("ray_session")
def test_a_trial_app_a_killed_run_left_behind_is_removed_by_the_next() -> None:
    from ray import serve

    from serving.app import run_local
    from serving.network import free_port

    policy = default_policy()
    args = policy.app_args(model="digits-cnn", api_keys=["k" * 24], num_cpus=0)
    run_local(args, name="trial-left-behind", port=free_port(), route_prefix="/trial-left-behind")
    assert "trial-left-behind" in _apps()
    assert remove_trial_apps() == ["trial-left-behind"]
    assert "trial-left-behind" not in set(serve.status().applications)


def test_a_negative_serving_trial_budget_is_refused_with_the_fix() -> None:
    from tasks.optimize.search import CycleSettings

    policy = default_policy().optimization
    assert (
        CycleSettings.resolve(
            policy, threads=1, batch=8, serving_trials=0
        ).optimization.serving_search.max_trials
        == 0
    )
    with pytest.raises(
        ValueError, match=r"serving_trials=-1: .* cannot be negative; give 0 to serve the in-process"
    ):
        CycleSettings.resolve(policy, threads=1, batch=8, serving_trials=-1)


def test_a_trial_measured_before_the_search_is_not_measured_again_and_counts_against_the_budget() -> None:
    """The cycle's served baseline, measured on the endpoint for the bottleneck breakdown, is the serving level's
    first trial when the serving level goes first."""
    params = {"variant": "onnx-fp32", "replicas": 1, "intra_op_threads": 2, "batch": 16, "cache_entries": 0}
    served = KneeTrial(ServingConfig(1, 2, 16, 1.0), "ok", 10.0, 60.0, 0.0, variant="onnx-fp32")
    measured: list[ServingConfig] = []

    def counted(config: ServingConfig, number: int) -> KneeTrial:
        measured.append(config)
        return landscape(config, number)

    level = searched(params, counted, max_trials=3, known=[served], start_label="what serves now")
    assert level.run.trials[0] is served and served.config not in measured
    assert len(level.run.trials) == 3 and len(measured) == 2
    # every other configuration's knee (42 req/s and up) beats what serves now
    assert "against 10.0 req/s for what serves now r1-t2-b16-w1ms" in level.sentence()


def _level_on(variant: str) -> ServingLevel:
    params = {"variant": variant, "replicas": 1, "intra_op_threads": 2, "batch": 16, "cache_entries": 0}
    return searched(params, landscape, max_trials=4)


def test_a_champion_of_another_variant_is_measured_with_the_chosen_knobs_and_served_with_them() -> None:
    level = _level_on("onnx-fp32")
    best = level.run.best
    seen: list[tuple[str, ServingConfig]] = []

    def on_endpoint(variant: str, config: ServingConfig, number: int) -> KneeTrial:
        seen.append((variant, config))
        return KneeTrial(config, "ok", 150.0, 40.0, 0.0, number=number, variant=variant)

    confirmed = confirm_champion(level, "onnx-int8-dynamic", default_policy(), QUICK, on_endpoint)
    assert seen == [("onnx-int8-dynamic", best.config)]
    assert confirmed.chosen is best and confirmed.served_knee is confirmed.confirmation
    assert (
        confirmed.record()["served_knee_rps"] == 150.0 and confirmed.trials[-1].variant == "onnx-int8-dynamic"
    )
    assert (
        "the champion onnx-int8-dynamic, measured with those knobs: knee 150.0 req/s" in confirmed.sentence()
    )
    # the searched variant itself needs no confirmation
    assert (
        confirm_champion(level, "onnx-fp32", default_policy(), QUICK, on_endpoint) is level and len(seen) == 1
    )


def test_a_champion_that_meets_the_sla_at_no_rate_with_the_chosen_knobs_keeps_its_in_process_knobs() -> None:
    level = _level_on("onnx-fp32")
    params = {
        "variant": "onnx-int8-dynamic",
        "replicas": 1,
        "intra_op_threads": 2,
        "batch": 16,
        "cache_entries": 0,
    }

    def too_slow(variant: str, config: ServingConfig, number: int) -> KneeTrial:
        return KneeTrial(config, "ok", 0.0, 400.0, 0.0, number=number, variant=variant)

    confirmed = confirm_champion(level, "onnx-int8-dynamic", default_policy(), QUICK, too_slow)
    assert confirmed.chosen is None and confirmed.params_for(params) == params
    assert (
        "met the SLA at no rate, so it keeps the knobs it was measured with in process"
        in confirmed.sentence()
    )


def _too_slow(variant: str, config: ServingConfig, number: int) -> KneeTrial:
    return KneeTrial(config, "ok", 0.0, 400.0, 0.0, number=number, variant=variant)


def test_a_level_that_judges_the_sla_refuses_a_champion_with_no_knee_meeting_it() -> None:
    """The serving level went first: the endpoint, not the in-process P99 per batch call, is the SLA's verdict."""
    params = {"variant": "onnx-fp32", "replicas": 1, "intra_op_threads": 2, "batch": 16, "cache_entries": 0}
    level = searched(params, landscape, max_trials=4, judges_sla=True)
    confirmed = confirm_champion(level, "onnx-int8-dynamic", default_policy(), QUICK, _too_slow)
    assert confirmed.chosen is None and confirmed.served_knee is None
    assert (
        "met the SLA at no rate, so it is not promoted (the SLA is judged on the endpoint)"
        in confirmed.sentence()
    )
    assert confirmed.no_knee_reason("onnx-int8-dynamic") == (
        f"onnx-int8-dynamic with {level.run.best.config.name} met the SLA at no rate"
    )
    assert confirmed.record()["judges_sla"] is True


def test_with_nothing_meeting_the_sla_a_judging_level_measures_the_champion_with_its_own_knobs() -> None:
    """What serves now meets the SLA at no rate; the faster champion is measured where the search started."""
    params = {"variant": "onnx-fp32", "replicas": 1, "intra_op_threads": 2, "batch": 16, "cache_entries": 0}

    def nothing_meets_it(config: ServingConfig, number: int) -> KneeTrial:
        return KneeTrial(config, "ok", 0.0, 250.0, 0.0, number=number, variant="onnx-fp32")

    seen: list[tuple[str, ServingConfig]] = []

    def champion_meets_it(variant: str, config: ServingConfig, number: int) -> KneeTrial:
        seen.append((variant, config))
        return KneeTrial(config, "ok", 80.0, 60.0, 0.0, number=number, variant=variant)

    judging = searched(params, nothing_meets_it, max_trials=2, judges_sla=True)
    confirmed = confirm_champion(judging, "onnx-int8-dynamic", default_policy(), QUICK, champion_meets_it)
    assert seen == [("onnx-int8-dynamic", judging.start)] and confirmed.confirmation.number == 3
    assert confirmed.served_knee is confirmed.confirmation and confirmed.params_for(params) == params
    assert (
        "the champion onnx-int8-dynamic with its own knobs r1-t2-b16-w1ms: knee 80.0 req/s"
        in confirmed.sentence()
    )
    # the same level refusing: the champion's own knobs meet the SLA at no rate either
    refused = confirm_champion(judging, "onnx-int8-dynamic", default_policy(), QUICK, _too_slow)
    assert refused.served_knee is None and "is not promoted" in refused.sentence()
    # a level that does not judge the SLA measures nothing more: the in-process screen judged it
    screening = searched(params, nothing_meets_it, max_trials=2)
    assert (
        confirm_champion(screening, "onnx-int8-dynamic", default_policy(), QUICK, champion_meets_it)
        is screening
    )
    assert len(seen) == 1  # the screening level measured nothing more


def test_replica_usage_is_the_share_of_the_cores_a_configuration_holds_and_nothing_when_none_ran_here() -> (
    None
):
    from tasks.measure.system_metrics import SystemSummary

    def seen(pids: list[int], mean: float, peak: float) -> SystemSummary:
        return SystemSummary(pids, [], 50.0, mean, peak, 0, 0, 0, "unavailable (no GPU)")

    usage = replica_usage(seen([11, 12], 120.0, 300.0), ServingConfig(2, 2, 8, 5.0), 2)
    assert usage == {
        "replica_processes": 2.0,
        "replica_cpu_percent_mean": 120.0,
        "replica_cpu_percent_max": 300.0,
        "replica_cpu_share_max": 0.75,  # 300% of one core over the 4 cores 2 replicas x 2 threads hold
    }
    assert replica_usage(seen([], 0.0, 0.0), ServingConfig(1, 1, 8, 5.0), 0) == {}
    assert replica_usage(None, ServingConfig(1, 1, 8, 5.0), 0) == {}


def test_the_usage_sentence_says_why_a_node_was_not_sampled() -> None:
    config = ServingConfig(2, 1, 4, 1.0)
    unsampled = KneeTrial(
        config, "ok", 90.0, usage_gaps=("node 1a2b: sampler did not start (RayError: gone)",)
    )
    assert usage_sentence(unsampled) == (
        "replica CPU not measured (node 1a2b: sampler did not start (RayError: gone))"
    )
    usage = {
        "replica_processes": 1.0,
        "replica_nodes": 1.0,
        "replica_cpu_percent_mean": 40.0,
        "replica_cpu_percent_max": 80.0,
        "replica_cpu_share_max": 0.4,
    }
    partly = KneeTrial(
        config, "ok", 90.0, usage=usage, usage_gaps=("node 3c4d: sampler not stopped (timeout)",)
    )
    shown = usage_sentence(partly)
    assert "sampled on 1 Ray node(s)" in shown and shown.endswith(
        "(not sampled: node 3c4d: sampler not stopped (timeout))"
    )
