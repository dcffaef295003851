"""The optimization cycle as real Prefect flow runs on real models, MLflow and (for the kill test) Ray Serve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from cli.render import print_cycle
from serving.auth import client_key
from serving.client import InferopsClient
from serving.variants import ensure_variant
from tasks.records import registry
from tasks.records.store import configure
from tests.console_text import raw_lines, render

MODEL = "digits-cnn"


def _cycle(**kwargs: Any) -> dict[str, Any]:
    from flows.optimization_cycle import optimization_cycle

    return optimization_cycle(**kwargs)


@pytest.fixture(scope="module", autouse=True)
def steady_scoring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """ONNX Runtime is 5x the PyTorch baseline on digits-cnn, far beyond noise, but a per-batch P99 of ~0.2 ms on a
    shared 2-core box can triple between two repeats, and the decision matrix turns that spread into technical risk.
    With that one penalty off for this module, which candidates win is known, and the tests assert it."""
    from tasks.policy import default_policy

    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(
        "optimization:\n  scoring:\n    spread_risk_weight: 0\n"
        # the serving level's knee search in 1 s steps: these tests check what it serves, not the knee's precision
        "  serving_search:\n    step_duration_s: 1.0\n    max_steps: 8\n    bisect_steps: 0\n    warmup_s: 1.0\n",
        encoding="utf-8",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INFEROPS_POLICY_FILE", str(policy))
        default_policy.cache_clear()
        yield
    default_policy.cache_clear()


@pytest.fixture(scope="module")
def first_cycle(prefect_harness: None) -> dict[str, Any]:
    """One cycle on digits-cnn with two candidates and no knob stages: baseline torch-fp32 becomes v1.

    The registry starts without digits-cnn, whichever module of the session registered it before."""
    client = mlflow.MlflowClient(configure())
    if client.search_registered_models(filter_string=f"name = '{MODEL}'"):
        client.delete_registered_model(MODEL)
    return _cycle(
        model=MODEL,
        candidates=["onnx-fp32", "onnx-int8-dynamic"],
        repeats=2,
        thread_options=[1],
        batch_options=[8],
        replica_options=[1],
        cache_options=[0],
    )


def test_cycle_promotes_fastest_passing_and_records_everything(first_cycle: dict[str, Any]) -> None:
    rows = {r["candidate"]: r for r in first_cycle["results"]}
    assert set(rows) == {"onnx-fp32", "onnx-int8-dynamic"}
    accepted = [r for r in rows.values() if r["verdict"] == "accepted"]
    champion = registry.alias_version(MODEL, registry.CHAMPION)
    assert champion is not None
    assert rows["onnx-fp32"]["verdict"] == "accepted", rows["onnx-fp32"]["reason"]  # lossless and 5x faster
    assert first_cycle["champion"] == max(accepted, key=lambda r: r["throughput"])["candidate"]
    previous = registry.alias_version(MODEL, registry.PREVIOUS)
    assert previous is not None and previous.variant == "torch-fp32"
    assert champion.variant == first_cycle["champion"]
    assert champion.sha256 == ensure_variant(MODEL, champion.variant).sha256
    for row in rows.values():
        assert row["reason"], "every verdict carries its reason"
    configure()
    parent = mlflow.get_run(first_cycle["mlflow_run_id"])
    assert parent.data.tags["inferops.retention_class"] == "optimization_plans"
    assert {"roi", "cost_saving_rate", "performance_improvement", "baseline_throughput"} <= set(
        parent.data.metrics
    )
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert set(children["tags.mlflow.runName"]) == set(rows)
    assert {"metrics.retention", "metrics.matrix_accuracy_impact", "tags.inferops.verdict"} <= set(
        children.columns
    )
    report = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/report.md")
    assert "Pre-implementation checklist" in report and all(name in report for name in rows)


def test_cycle_output_reads_as_tables_and_sentences(first_cycle: dict[str, Any]) -> None:
    shown = render(print_cycle, first_cycle)  # what `inferops optimize` prints
    assert not raw_lines(shown), raw_lines(shown)
    assert "outcome: digits-cnn" in shown and "per million requests" in shown
    assert all(r["candidate"] in shown for r in first_cycle["results"])


def test_corrupted_candidate_is_rejected_and_champion_kept(first_cycle: dict[str, Any]) -> None:
    before = registry.alias_version(MODEL, registry.CHAMPION)
    art = ensure_variant(MODEL, "onnx-int8-static")
    original = art.path.read_bytes()
    manifest_path = art.path.with_name(art.path.name + ".manifest.json")
    manifest_text = manifest_path.read_text()
    try:
        # A corrupted artifact whose manifest was rewritten to match: the load fails, not the sha check.
        art.path.write_bytes(b"not an onnx model")
        import hashlib

        manifest = json.loads(manifest_text)
        manifest["sha256"] = hashlib.sha256(b"not an onnx model").hexdigest()
        manifest_path.write_text(json.dumps(manifest))
        out = _cycle(
            model=MODEL,
            candidates=["onnx-int8-static"],
            repeats=1,
            thread_options=[1],
            batch_options=[8],
            replica_options=[1],
            cache_options=[0],
        )
    finally:
        art.path.write_bytes(original)
        manifest_path.write_text(manifest_text)
    (row,) = out["results"]
    assert row["verdict"] == "rejected" and row["reason"].startswith("failed:")
    assert out["champion"] is None
    assert registry.alias_version(MODEL, registry.CHAMPION) == before


def test_unknown_candidate_and_unknown_model_fail_clearly(first_cycle: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not available for digits-cnn"):
        _cycle(model=MODEL, candidates=["onnx-int9"], repeats=1)
    with pytest.raises(ValueError, match="unknown model"):
        _cycle(model="no-such-model", repeats=1)


def test_unreachable_endpoint_fails_before_anything_changes(first_cycle: dict[str, Any]) -> None:
    before = registry.alias_version(MODEL, registry.CHAMPION)
    with pytest.raises(RuntimeError, match="unreachable"):
        _cycle(model=MODEL, url="http://127.0.0.1:9", repeats=1)
    assert registry.alias_version(MODEL, registry.CHAMPION) == before


@pytest.mark.slow
def test_killed_cycle_leaves_old_champion_serving(
    first_cycle: dict[str, Any], ray_session: None, tmp_path
) -> None:
    from ray import serve

    from serving.app import run_local

    url = run_local({"model": f"models:/{MODEL}@champion"}, name="cycle-kill-test", port=8000)
    try:
        # the session's keys (INFEROPS_API_KEYS), as on a configured host: the client finds them where the app does
        served = InferopsClient(url, client_key()).metadata(MODEL)
        champion = registry.alias_version(MODEL, registry.CHAMPION)
        assert champion is not None and served["sha256"] == champion.sha256
        script = (
            "from flows.optimization_cycle import optimization_cycle\n"
            f"optimization_cycle(model={MODEL!r}, url={url!r}, repeats=3)\n"
        )
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = (tmp_path / "cycle.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        configure()
        deadline = time.monotonic() + 240
        seen = 0
        while time.monotonic() < deadline and proc.poll() is None and seen < 2:
            runs = mlflow.search_runs(
                experiment_names=["inferops-optimization"], filter_string="tags.inferops.verdict != ''"
            )
            seen = len(runs) - len(first_cycle["results"]) - 1
            time.sleep(1)
        assert proc.poll() is None, (
            "the cycle finished before it could be killed: " + (tmp_path / "cycle.log").read_text()[-2000:]
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        after = InferopsClient(url, client_key()).metadata(MODEL)
        assert after["sha256"] == champion.sha256
        assert registry.alias_version(MODEL, registry.CHAMPION) == champion
    finally:
        serve.delete("cycle-kill-test")


@pytest.mark.slow
def test_minilm_cycle_rejects_plain_int8_promotes_per_channel_and_switches_endpoint(
    first_cycle: dict[str, Any], ray_session: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain INT8 keeps ~0.96 cosine fidelity and is rolled back; per-channel keeps >= 0.99 and is promoted and served.

    About accuracy, not this box's speed: per-channel INT8 measured 2-3x the PyTorch baseline on some days and
    +36-57% (batch-8 P99 120-135 ms in process) on others, so the SLA and the gain for a full score are relaxed here;
    retention and its floor are the policy's own."""
    from ray import serve

    from serving.app import run_local
    from tasks.policy import default_policy

    relaxed = tmp_path / "policy.yaml"
    relaxed.write_text(
        "rollout_gate:\n  sla_p99_ms: 2000.0\n"
        "optimization:\n  scoring:\n    spread_risk_weight: 0\n    gain_for_full_score: 0.25\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("INFEROPS_POLICY_FILE", str(relaxed))
    default_policy.cache_clear()

    # Per-channel INT8 is 2-3x the PyTorch baseline, far beyond noise (the module's steady_scoring is in force).
    model = "minilm"
    reference = ensure_variant(model, "torch-fp32")
    registry.ensure_champion(model, reference.path, {**reference.manifest, "variant": "torch-fp32"})
    url = run_local(
        {"model": f"models:/{model}@champion", "api_keys": ["cycle-key"]}, name="cycle-minilm-test", port=8000
    )
    try:
        out = _cycle(
            model=model,
            url=url,
            api_key="cycle-key",
            candidates=["onnx-int8-dynamic", "onnx-int8-dynamic-perchannel"],
            repeats=2,
            thread_options=[1],
            batch_options=[8],
            replica_options=[1],
            cache_options=[0],
            serving_trials=0,  # about accuracy: the knobs stay the in-process ones
        )
        rows = {r["candidate"]: r for r in out["results"]}
        plain, per_channel = rows["onnx-int8-dynamic"], rows["onnx-int8-dynamic-perchannel"]
        assert plain["verdict"] == "rejected" and "retention" in plain["reason"] and plain["retention"] < 0.99
        assert per_channel["retention"] >= 0.99
        configure()
        children = mlflow.search_runs(
            experiment_names=["inferops-optimization"],
            filter_string=f"tags.mlflow.parentRunId = '{out['mlflow_run_id']}'",
        )
        rolled = children[children["tags.mlflow.runName"] == "onnx-int8-dynamic"]
        assert (rolled["tags.inferops.rollback"] == "recorded").all()
        champion = registry.alias_version(model, registry.CHAMPION)
        assert champion is not None
        served = InferopsClient(url, "cycle-key").metadata(model)
        assert served["sha256"] == champion.sha256, "the endpoint serves whatever the registry calls champion"
        assert per_channel["verdict"] == "accepted", per_channel["reason"]
        assert out["champion"] == "onnx-int8-dynamic-perchannel" and champion.variant == out["champion"]
        assert registry.alias_version(model, registry.PREVIOUS).variant == "torch-fp32"
    finally:
        serve.delete("cycle-minilm-test")
        monkeypatch.undo()
        default_policy.cache_clear()


def test_frozen_model_stops_the_cycle_before_anything_is_applied(first_cycle: dict[str, Any]) -> None:
    from tasks.optimize.checklist import ChecklistFailed
    from tasks.release import freeze

    before = registry.alias_version(MODEL, registry.CHAMPION)
    freeze.freeze(MODEL, "error rate 3% > 1% after the last promotion", None)
    try:
        with pytest.raises(ChecklistFailed, match="'risk assessed' is not met.*frozen"):
            _cycle(model=MODEL, repeats=1)
    finally:
        freeze.unfreeze(MODEL)
    assert registry.alias_version(MODEL, registry.CHAMPION) == before


def test_cycle_gates_the_challenger_before_promotion(first_cycle: dict[str, Any], ray_session: None) -> None:
    """With gate=True the winner is served beside production under its own prefix, gated, and only then promoted;
    the gate's MLflow run is nested under the cycle's run."""
    # Timing noise must not decide whether the gate is reached: the module's steady_scoring is in force.
    before = registry.alias_version(MODEL, registry.CHAMPION)
    assert before is not None
    if before.variant != "torch-fp32":  # start from the PyTorch baseline, which ONNX Runtime clearly beats
        registry.rollback(MODEL, "test: start the gated cycle from the FP32 baseline")
        before = registry.alias_version(MODEL, registry.CHAMPION)
        assert before is not None and before.variant == "torch-fp32"
    pick = ["onnx-fp32"]
    out = _cycle(
        model=MODEL,
        candidates=pick,
        repeats=2,
        thread_options=[1],
        batch_options=[8],
        replica_options=[1],
        cache_options=[0],
        gate=True,
        gate_stability_s=4,
        gate_performance_s=4,
        gate_risk_window_s=4,
        require_approval=False,
    )
    after = registry.alias_version(MODEL, registry.CHAMPION)
    assert out["results"][0]["verdict"] == "accepted", out["results"][0]["reason"]
    gate = out["final"]["gate"]
    assert {row["item"] for row in gate["rows"]} == {"functional", "performance", "stability", "security"}
    # the same network converted losslessly, served on its own app at light load: every gate item passes
    assert gate["passed"], gate["rows"]
    assert after is not None and after.variant == pick[0] and out["champion"] == pick[0]
    assert registry.alias_version(MODEL, registry.CHALLENGER) is None
    configure()
    nested = mlflow.search_runs(
        experiment_names=["inferops-gate"],
        filter_string=f"tags.mlflow.parentRunId = '{out['mlflow_run_id']}'",
    )
    assert len(nested) == 1


def test_bad_request_log_stops_the_cycle_before_anything_is_recorded(
    first_cycle: dict[str, Any], tmp_path
) -> None:
    from tasks.measure.workload import WorkloadError

    configure()
    before_runs = len(mlflow.search_runs(experiment_names=["inferops-optimization"]))
    before = registry.alias_version(MODEL, registry.CHAMPION)
    with pytest.raises(WorkloadError, match="does not exist"):
        _cycle(model=MODEL, request_log=str(tmp_path / "missing.npy"), repeats=1)
    bad = tmp_path / "requests.npy"
    bad.write_bytes(b"not numpy")
    with pytest.raises(WorkloadError, match="not a .npy array"):
        _cycle(model=MODEL, request_log=str(bad), repeats=1)
    assert len(mlflow.search_runs(experiment_names=["inferops-optimization"])) == before_runs
    assert registry.alias_version(MODEL, registry.CHAMPION) == before


@pytest.mark.slow
def test_cycle_measures_replicas_and_cache_on_the_workload_and_serves_the_winner_as_measured(
    first_cycle: dict[str, Any], ray_session: None, tmp_path
) -> None:
    """Replicas run as processes, the cache is judged on the request log's repeats, and whatever wins is served
    with the knobs it was measured with, on every replica."""
    from ray import serve

    from serving.app import run_local
    from tasks.measure.workload import demo_request_log, load_request_log, repeat_share

    log = demo_request_log(MODEL, tmp_path / "requests.npy")
    share = repeat_share(load_request_log(log, "tensor"))
    url = run_local(
        {"model": f"models:/{MODEL}@champion", "api_keys": ["knob-key"]},
        name="cycle-knobs-test",
        port=8000,
        route_prefix="/knobs",
    )
    # Start from the PyTorch model, which ONNX Runtime clearly beats, so a winner (and its knobs) is certain.
    torch_fp32 = ensure_variant(MODEL, "torch-fp32")
    registry.register(MODEL, torch_fp32.path, {**torch_fp32.manifest, "variant": "torch-fp32"})
    registry.promote(MODEL)
    pick = "onnx-fp32"
    try:
        out = _cycle(
            model=MODEL,
            url=url,
            api_key="knob-key",
            candidates=[pick],
            repeats=2,
            thread_options=[1],
            replica_options=[1, 2],
            batch_options=[8],
            cache_options=[512],
            request_log=str(log),
            serving_trials=2,
            plan_order="model",  # the in-process knob stages first, then the serving level on their champion
        )
        order = out["plan_order"]
        assert order["first"] == "model level" and "as asked (plan_order=model)" in order["reason"]
        assert order["source"].startswith("on the endpoint: r1-t1-b8"), (
            order
        )  # what served, beside production
        rows = {r["candidate"]: r for r in out["results"]}
        replicas = [r for name, r in rows.items() if "+replicas=2" in name]
        cached = [r for name, r in rows.items() if "+cache=512" in name]
        assert replicas and replicas[0]["throughput"] and replicas[0]["reason"]
        assert cached and cached[0]["cache_hit_rate"] is not None
        # a cold cache over one pass can hit at most the requests that repeat an earlier one
        assert 0.5 * share < cached[0]["cache_hit_rate"] <= share + 1e-9
        assert cached[0]["retention"] == pytest.approx(1.0, abs=1e-6) or cached[0]["retention"] >= 0.99
        assert out["champion"] is not None, out["results"]  # ONNX Runtime beats the PyTorch baseline by far
        champion = next(r for r in out["results"] if r["candidate"] == out["champion"])
        applied = out["final"]["serving_knobs"]
        assert "error" not in applied, applied
        want = applied["knobs"]
        # the serving level measured the in-process choice and one more configuration on temporary apps, and the
        # champion serves with the best knee's knobs (digits-cnn at 10 req/s is far under the 100 ms SLA)
        level = out["final"]["serving_level"]
        assert level["trials"] == 2 and level["chosen_knobs"] is not None, level
        assert want == level["chosen_knobs"]
        assert not any(name.startswith("trial-") for name in serve.status().applications)
        trial_runs = mlflow.search_runs(
            experiment_names=["inferops-optimization"],
            filter_string=f"tags.mlflow.parentRunId = '{out['mlflow_run_id']}' and params.stage = 'serving'",
        )
        # what served (trial 0, measured first for the breakdown), then the serving level's two on the champion
        assert sorted(trial_runs["params.variant"]) == ["onnx-fp32", "onnx-fp32", "torch-fp32"], trial_runs
        assert (trial_runs["metrics.knee_rps"] > 0).any()
        shown = render(
            print_cycle, out
        )  # what `inferops optimize` prints: the trials as a table, the choice said
        assert not raw_lines(shown), raw_lines(shown)
        assert "serving level on the endpoint" in shown and "served with r" in shown
        assert len(applied["replicas"]) == want["num_replicas"]
        for view in applied["replicas"].values():
            assert (
                view["intra_op_threads"] == want["intra_op_threads"]
                and view["max_batch_size"] == want["max_batch_size"]
            )
            assert view["cache_entries"] == want["cache_entries"]
            assert view["sha256"] == registry.alias_version(MODEL, registry.CHAMPION).sha256
        assert ("+cache=512" in champion["candidate"]) == (want["cache_entries"] == 512)
        version = registry.alias_version(MODEL, registry.CHAMPION)
        client = mlflow.MlflowClient()
        tags = client.get_model_version(MODEL, version.version).tags
        assert tags["inferops.serve.replicas"] == str(want["num_replicas"])
        assert tags["inferops.serve.cache_entries"] == str(want["cache_entries"])

        # `inferops rollback --url`: the previous champion serves again, with its own knobs, on every replica
        from typer.testing import CliRunner

        from cli import app as cli_app
        from tasks.policy import default_policy

        previous = registry.alias_version(MODEL, registry.PREVIOUS)
        assert previous is not None
        restored = registry.version_knobs(MODEL, previous.version, default_policy().serving.default_knobs())
        result = CliRunner().invoke(
            cli_app, ["rollback", "--model", MODEL, "--url", url, "--api-key", "knob-key"]
        )
        assert result.exit_code == 0, result.output
        done = InferopsClient(url, "knob-key").wait_until(
            MODEL,
            lambda v: (
                v["sha256"] == previous.sha256
                and v["cache_entries"] == restored["cache_entries"]
                and v["intra_op_threads"] == restored["intra_op_threads"]
            ),
            replicas=restored["num_replicas"],
            timeout_s=120,
            exact=True,
        )
        assert done.converged, done.reason
        assert len(done.replicas) == restored["num_replicas"]
    finally:
        serve.delete("cycle-knobs-test")


@pytest.mark.slow
def test_a_batch_wait_dominating_on_the_endpoint_puts_the_serving_level_first(
    first_cycle: dict[str, Any], ray_session: None, tmp_path
) -> None:
    """What serves now waits 1 s for its batch of 8 to fill: on the endpoint (a copy beside production) the batch wait
    dominates, so the serving level goes first, on what serves now (its measurement is the first trial, not repeated),
    threads and batch size are not timed again in process, and the model level's champion, another variant, is
    measured on the endpoint with the knobs the serving level chose before it is served with them."""
    from ray import serve

    from serving.app import run_local
    from tasks.policy import default_policy

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        Path(os.environ["INFEROPS_POLICY_FILE"]).read_text(encoding="utf-8")
        + "serving:\n  batch_wait_timeout_s: 1.0\n"
        # lenient, so a noisy step on a shared box does not fail batch 1: the test is about the order
        + "rollout_gate:\n  sla_p99_ms: 300.0\n",
        encoding="utf-8",
    )
    torch_fp32 = ensure_variant(
        MODEL, "torch-fp32"
    )  # ONNX Runtime beats it in process by far: a champion is certain
    registry.register(MODEL, torch_fp32.path, {**torch_fp32.manifest, "variant": "torch-fp32"})
    registry.promote(MODEL)
    url = run_local(
        {"model": f"models:/{MODEL}@champion", "api_keys": ["order-key"]},
        name="cycle-order-test",
        port=8000,
        route_prefix="/order",
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("INFEROPS_POLICY_FILE", str(policy))
            default_policy.cache_clear()
            out = _cycle(
                model=MODEL,
                url=url,
                api_key="order-key",
                candidates=["onnx-fp32"],
                repeats=2,
                thread_options=[1],
                replica_options=[1],
                batch_options=[8],
                serving_trials=2,
            )
        default_policy.cache_clear()
        order = out["plan_order"]
        assert order["first"] == "serving level", order
        assert "batch wait" in order["reason"] and order["source"].startswith(
            "on the endpoint: r1-t1-b8-w1000ms"
        )
        assert out["bottleneck"] == "batch processing"
        # no in-process parallelization or batching candidates: the endpoint chose those knobs
        assert [r["candidate"] for r in out["results"]] == ["onnx-fp32"], out["results"]
        level = out["final"]["serving_level"]
        trials = out["serving"]["trials"]
        # what serves now (trial 0, measured once for the breakdown) and batch 1; then the champion's confirmation
        assert [(t["trial"], t["variant"], t["config"]) for t in trials] == [
            (0, "torch-fp32", "r1-t1-b8-w1000ms"),
            (1, "torch-fp32", "r1-t1-b1-w1000ms"),
            (2, "onnx-fp32", "r1-t1-b1-w1000ms"),
        ], trials
        assert trials[0]["knee req/s"] == 0.0 and trials[1]["knee req/s"] > 0
        assert (
            out["served_baseline"] == trials[0]
        )  # what served before, in the output for the demo's comparison
        assert level["variant"] == "torch-fp32" and level["chosen"] == "r1-t1-b1-w1000ms"
        assert level["confirmed"]["variant"] == "onnx-fp32" and level["served_knee_rps"] > 0, level
        # the endpoint judged the SLA: the champion's confirmed knee, not its in-process P99 per batch call
        assert level["judges_sla"] is True and "refusal" not in out["final"]
        assert out["champion"] == "onnx-fp32"
        assert out["final"]["serving_knobs"]["knobs"]["max_batch_size"] == 1
        assert not any(name.startswith("trial-") for name in serve.status().applications)
        # each trial one nested run, the served baseline's (with its replica's CPU use) not logged twice
        configure()
        trial_runs = mlflow.search_runs(
            experiment_names=["inferops-optimization"],
            filter_string=f"tags.mlflow.parentRunId = '{out['mlflow_run_id']}' and params.stage = 'serving'",
        )
        assert sorted(trial_runs["tags.mlflow.runName"]) == [
            "serving-0-r1-t1-b8-w1000ms",
            "serving-1-r1-t1-b1-w1000ms",
            "serving-2-r1-t1-b1-w1000ms",
        ], trial_runs["tags.mlflow.runName"]
        # the candidates are judged against the baseline timed again after the knee searches that preceded them (the
        # served baseline's and the serving level's), and before the champion's confirmation
        baseline = out["baseline"]
        assert baseline["timed"].startswith("again right before the candidates"), baseline
        timed_at = pd.Timestamp(baseline["timed at"])
        by_name = trial_runs.set_index("tags.mlflow.runName")
        assert by_name.loc["serving-1-r1-t1-b1-w1000ms", "end_time"] < timed_at, (
            by_name["end_time"],
            timed_at,
        )
        assert timed_at < by_name.loc["serving-2-r1-t1-b1-w1000ms", "start_time"], (by_name, timed_at)
        served = trial_runs[trial_runs["tags.mlflow.runName"] == "serving-0-r1-t1-b8-w1000ms"].iloc[0]
        assert served["metrics.replica_cpu_percent_max"] > 0 and served["params.variant"] == "torch-fp32"
        shown = render(print_cycle, out)
        assert "plan order" in shown and "serving level first" in shown, shown
    finally:
        default_policy.cache_clear()
        serve.delete("cycle-order-test")
