"""The phase-gate flow end to end: real Prefect runs, real MLflow registry, real HTTP.

The healthy champion is the real Ray Serve app serving digits-cnn from the registry; the approval and rollback
cases use the fake replica (tests/fake_replica.py) (a slowdown on demand after promotion).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest

from cli.render import print_gate
from serving.artifacts import sha256_file
from tasks.records import registry
from tasks.records.store import configure
from tests.console_text import raw_lines, render
from tests.fake_replica import API_KEY, fake_replica
from tests.servers import free_port

# Seconds, not the seed's 72 h: every item still runs, just briefly.
STABILITY_S, PERFORMANCE_S, RISK_WINDOW_S = 2.0, 2.0, 3.0


def _policy_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Iterator[None]:
    """A user policy file (INFEROPS_POLICY_FILE) with `text`, in force for one test."""
    from tasks.policy import default_policy

    override = tmp_path / "policy.yaml"
    override.write_text(text)
    monkeypatch.setenv("INFEROPS_POLICY_FILE", str(override))
    default_policy.cache_clear()
    yield
    monkeypatch.delenv("INFEROPS_POLICY_FILE")
    default_policy.cache_clear()


@pytest.fixture
def lenient_sla(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A 1 s SLA: these tests are about approval and rollback, and tail latency on a shared 2-core box must not
    decide them (the SLA itself is tested in tests/tasks/release/test_checks.py)."""
    yield from _policy_override(tmp_path, monkeypatch, "rollout_gate:\n  sla_p99_ms: 1000.0\n")


@pytest.fixture
def calm_risk_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A rollback trigger only a real slowdown reaches: a healthy champion's P99 of a few ms moves by more than 50%
    between windows of seconds on a shared 2-core box. The trigger itself is tested by
    test_slowdown_after_promotion_rolls_back_once_the_next_window_confirms_it."""
    yield from _policy_override(tmp_path, monkeypatch, "rollout_risk:\n  perf_deviation_rollback: 10.0\n")


@pytest.fixture
def calm_lenient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Both of the above: a release on production judged neither by a shared box's tail latency nor its jitter."""
    text = "rollout_gate:\n  sla_p99_ms: 1000.0\nrollout_risk:\n  perf_deviation_rollback: 10.0\n"
    yield from _policy_override(tmp_path, monkeypatch, text)


def _register(model: str, tmp: Path, tag: str) -> registry.VersionRef:
    """A small artifact file registered as `challenger` (distinct bytes per tag, so a distinct sha256)."""
    path = tmp / f"{model}-{tag}.onnx"
    path.write_bytes(f"fake onnx bytes for {model} {tag}".encode() * 64)
    return registry.register(model, path, {"variant": tag})


def _champion_then_challenger(model: str, tmp: Path) -> tuple[registry.VersionRef, registry.VersionRef]:
    old = _register(model, tmp, "old")
    registry.promote(model)
    new = _register(model, tmp, "new")
    return old, new


def _in_thread(fn: Callable[[], dict[str, Any]]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test's assertion
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str, box: dict[str, Any]) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if "error" in box:
            raise AssertionError(f"flow failed while waiting for {what}") from box["error"]
        if "result" in box:
            raise AssertionError(f"flow finished before {what}: {box['result']}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def _gate_run(run_id: str) -> Any:
    configure()
    return mlflow.MlflowClient().get_run(run_id)


@pytest.fixture(scope="module")
def digits_app(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real Ray Serve app serving `models:/digits-cnn@challenger` (a freshly built ONNX variant)."""
    from ray import serve

    from serving.app import run_local
    from serving.variants import ensure_variant
    from serving.zoo import train_digits_cnn

    # Train first, outside the export's torch.inference_mode (training inside it fails: reported to the lead).
    train_digits_cnn()
    artifact = ensure_variant("digits-cnn", "onnx-fp32")
    registry.register("digits-cnn", artifact.path, artifact.manifest)
    url = run_local(
        {"model": "models:/digits-cnn@challenger", "api_keys": API_KEY},
        name="gate-flow-test",
        port=free_port(),
    )
    yield url
    serve.delete("gate-flow-test")


def test_healthy_champion_passes_the_gate_and_is_promoted(
    prefect_harness: None, digits_app: str, calm_risk_window: None
) -> None:
    from prefect.client.orchestration import get_client

    from flows.phase_gate import phase_gate

    candidate = registry.alias_version("digits-cnn", registry.CHALLENGER)
    assert candidate is not None
    out = phase_gate(
        model="digits-cnn",
        url=digits_app,
        api_key=API_KEY,
        require_approval=False,
        stability_duration_s=STABILITY_S,
        performance_duration_s=PERFORMANCE_S,
        risk_window_s=RISK_WINDOW_S,
    )
    assert out["passed"], out["rows"]
    assert {r["item"] for r in out["rows"]} == {"functional", "performance", "stability", "security"}
    assert all(r["passed"] for r in out["rows"]), out["rows"]
    champion = registry.alias_version("digits-cnn", registry.CHAMPION)
    assert champion is not None and champion.version == candidate.version
    shown = render(print_gate, out)  # what `inferops gate` prints: tables and sentences, no raw data
    assert not raw_lines(shown), raw_lines(shown)
    assert f"promoted: version {candidate.version} is champion" in shown
    run = _gate_run(out["mlflow_run_id"])
    assert run.data.tags["inferops.gate.verdict"] == "pass"
    assert run.data.tags["inferops.approval.decided_by"] == "policy"
    assert run.data.metrics["security.observed"] == 1.0 and run.data.metrics["functional.minimum"] == 1.0
    checks = mlflow.artifacts.load_dict(f"runs:/{out['mlflow_run_id']}/gate_checks.json")
    leak = [c for c in checks["stability"]["checks"] if "leak" in c["name"]]
    assert leak and all(c["passed"] is True for c in leak), leak  # Ray replica pids were found and watched
    names = [c["name"] for c in checks["security"]["checks"]]
    assert "artifact sha256 digits-cnn" in names and any(n.startswith("file access") for n in names)
    assert len(checks["functional"]["checks"]) >= 5  # load rate, 3 batch sizes, concurrency
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()  # latest version of every keyed artifact
    keys = {a.key for a in artifact}
    assert {"phase-gate-digits-cnn", "phase-gate-digits-cnn-report", "phase-gate-digits-cnn-decision"} <= keys


def test_without_a_url_the_gate_serves_the_candidate_itself_and_cleans_up(
    prefect_harness: None, digits_app: str, lenient_sla: None
) -> None:
    """About where the candidate is served and that it is removed: tail latency must not decide it."""
    from ray import serve

    from flows.phase_gate import phase_gate
    from serving.variants import ensure_variant

    artifact = ensure_variant("digits-cnn", "onnx-fp32")
    candidate = registry.register("digits-cnn", artifact.path, artifact.manifest)
    out = phase_gate(
        model="digits-cnn",
        url=None,
        require_approval=False,
        stability_duration_s=STABILITY_S,
        performance_duration_s=PERFORMANCE_S,
        risk_window_s=RISK_WINDOW_S,
    )
    assert out["url"].endswith("/gate-digits-cnn"), out["url"]  # beside the production app, not over it
    assert out["passed"], out["rows"]
    assert out["decision"]["candidate_version"] == candidate.version
    assert "gate-digits-cnn" not in serve.status().applications
    assert "gate-flow-test" in serve.status().applications  # the production app was left alone


def test_rejected_approval_keeps_the_old_champion(
    prefect_harness: None, lenient_sla: None, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    from flows.phase_gate import phase_gate

    model = "gate-approval-model"
    old, new = _champion_then_challenger(model, tmp_path)
    with fake_replica(tmp_path, sha256=new.sha256, model=model) as rep:
        thread, box = _in_thread(
            lambda: phase_gate(
                model=model,
                url=rep.url,
                api_key=API_KEY,
                require_approval=True,
                approval_timeout_s=300,
                stability_duration_s=STABILITY_S,
                performance_duration_s=PERFORMANCE_S,
                risk_window_s=RISK_WINDOW_S,
            )
        )
        paused_filter = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
        )

        def paused() -> list[Any]:
            with get_client(sync_client=True) as client:
                return [
                    r
                    for r in client.read_flow_runs(flow_run_filter=paused_filter)
                    if r.parameters.get("model") == model
                ]

        _wait(lambda: bool(paused()), 240, "the approval pause", box)
        assert registry.alias_version(model, registry.CHAMPION).version == old.version  # type: ignore[union-attr]
        resume_flow_run(
            paused()[0].id, run_input={"approve": False, "comment": "not before the freeze window"}
        )
        thread.join(timeout=120)
    assert "error" not in box, box.get("error")
    out = box["result"]
    assert out["passed"] and out["decision"]["decided_by"] == "human" and not out["decision"]["promote"]
    assert out["promotion"] is None
    assert registry.alias_version(model, registry.CHAMPION).version == old.version  # type: ignore[union-attr]
    assert registry.alias_version(model, registry.CHALLENGER) is None
    tags = _gate_run(out["mlflow_run_id"]).data.tags
    assert tags["inferops.approval.approved"] == "false"
    assert tags["inferops.approval.comment"] == "not before the freeze window"


def test_slowdown_after_promotion_rolls_back_once_the_next_window_confirms_it(
    prefect_harness: None, lenient_sla: None, tmp_path: Path
) -> None:
    from flows.phase_gate import phase_gate

    model = "gate-rollback-model"
    old, new = _champion_then_challenger(model, tmp_path)
    assert new.sha256 == sha256_file(tmp_path / f"{model}-new.onnx")
    with fake_replica(tmp_path, latency_ms=20.0, sha256=new.sha256, model=model) as rep:
        thread, box = _in_thread(
            lambda: phase_gate(
                model=model,
                url=rep.url,
                api_key=API_KEY,
                require_approval=False,
                stability_duration_s=STABILITY_S,
                performance_duration_s=PERFORMANCE_S,
                risk_window_s=RISK_WINDOW_S,
            )
        )

        def promoted() -> bool:
            champion = registry.alias_version(model, registry.CHAMPION)
            return champion is not None and champion.version == new.version

        _wait(promoted, 240, "the promotion", box)
        rep.set(latency_ms=200.0)  # the new champion slows down 10x once it takes traffic
        thread.join(timeout=120)
        state = rep.state()
    assert "error" not in box, box.get("error")
    out = box["result"]
    assert out["passed"], out["rows"]
    assert out["promotion"]["promoted"]
    rollback = [a for a in out["risk_actions"] if a["action"] == "rollback"]
    assert rollback and rollback[0]["done"], out["risk_actions"]
    assert rollback[0]["observed"] >= rollback[0]["threshold"] == 0.5
    assert registry.alias_version(model, registry.CHAMPION).version == old.version  # type: ignore[union-attr]
    assert state["switches"] == [{"uri": f"models:/{model}/{old.version}"}]  # the endpoint was switched back
    run = _gate_run(out["mlflow_run_id"]).data
    assert "rollback" in run.tags["inferops.risk.actions"]
    assert run.metrics["risk.windows"] == 2  # the breach held through the confirming window


def test_a_passed_release_reaches_production_is_watched_there_and_benchmarked(
    prefect_harness: None, digits_app: str, calm_lenient: None
) -> None:
    """The candidate is gated on its own app; production (the app at digits_app) is rolled out only after the pass,
    watched under load and benchmarked as production's new baseline."""
    from ray import serve

    from flows.phase_gate import phase_gate
    from serving.client import InferopsClient
    from serving.variants import ensure_variant
    from tasks.records import names
    from tasks.records.suite_runs import get_baseline

    artifact = ensure_variant("digits-cnn", "onnx-fp32-optall")  # other bytes than production serves
    candidate = registry.register("digits-cnn", artifact.path, artifact.manifest)
    with InferopsClient(digits_app, API_KEY) as client:
        before = client.metadata("digits-cnn")["sha256"]
    assert before != candidate.sha256
    out = phase_gate(
        model="digits-cnn",
        production_url=digits_app,
        api_key=API_KEY,
        require_approval=False,
        stability_duration_s=STABILITY_S,
        performance_duration_s=PERFORMANCE_S,
        risk_window_s=RISK_WINDOW_S,
        benchmark_duration_s=2.0,
    )
    assert out["passed"], out["rows"]
    assert out["url"].endswith("/gate-digits-cnn")  # gated on its own app, not on production
    assert "gate-digits-cnn" not in serve.status().applications
    release = out["release"]
    assert release["url"] == digits_app and not release["rolled_back"], release
    assert release["served"]["version"] == candidate.version
    with InferopsClient(digits_app, API_KEY) as client:
        assert client.metadata("digits-cnn")["sha256"] == candidate.sha256  # production serves the release
    assert release["risk_window"]["throughput_rps"] > 0
    bench = release["benchmark"]
    baseline = get_baseline(names.release_baseline("digits-cnn"))
    assert baseline.run_id == bench["mlflow_run_id"]
    assert baseline.tags["inferops.sha256"] == candidate.sha256
    assert baseline.tags["inferops.accelerator"] == "cpu"  # what the served replica reported it computes on
    shown = render(print_gate, out)
    assert f"released to {digits_app}: v{candidate.version}" in shown
    assert "benchmark per release" in shown and not raw_lines(shown)


def test_a_release_that_slows_production_is_rolled_back_there(
    prefect_harness: None, lenient_sla: None, tmp_path: Path
) -> None:
    """Gated healthy on its own endpoint, the new version is 10x slower on production: production is switched back
    to the previous champion and the registry follows; no benchmark records the bad release as a baseline."""
    from flows.phase_gate import phase_gate

    model = "release-rollback-model"
    old, new = _champion_then_challenger(model, tmp_path)
    old_uri, new_uri = f"models:/{model}/{old.version}", f"models:/{model}/{new.version}"
    by_uri = {
        new_uri: {"sha256": new.sha256, "latency_ms": 200.0},
        old_uri: {"sha256": old.sha256, "latency_ms": 20.0},
    }
    with (
        fake_replica(tmp_path, latency_ms=20.0, sha256=new.sha256, model=model) as gated,
        fake_replica(tmp_path, latency_ms=20.0, sha256=old.sha256, model=model) as production,
    ):
        production.set(by_uri=by_uri)
        out = phase_gate(
            model=model,
            url=gated.url,
            production_url=production.url,
            api_key=API_KEY,
            require_approval=False,
            stability_duration_s=STABILITY_S,
            performance_duration_s=PERFORMANCE_S,
            risk_window_s=RISK_WINDOW_S,
            benchmark_duration_s=1.0,
        )
        prod, gate_side = production.state(), gated.state()
    assert out["passed"] and out["promotion"]["promoted"], out["rows"]
    release = out["release"]
    assert release["rolled_back"] and release["benchmark"] is None, release
    assert prod["switches"][0]["uri"] == new_uri and prod["switches"][-1]["uri"] == old_uri
    assert prod["sha256"] == old.sha256  # production serves the previous champion again
    assert "switches" not in gate_side  # the gated endpoint was measured, never switched
    assert registry.alias_version(model, registry.CHAMPION).version == old.version  # type: ignore[union-attr]
    rollback = [a for a in out["risk_actions"] if a["action"] == "rollback"]
    assert rollback and rollback[0]["done"] and rollback[0]["observed"] >= 0.5, out["risk_actions"]
