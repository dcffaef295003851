"""History retention on a real MLflow store: back-dated runs of every class, a champion model version, an unclassified
and a running run; the dry run lists exactly the expired ones, the purge deletes exactly those, for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from serving.settings import get_settings
from tasks.policy import PolicyError, load_policy
from tasks.records import names, registry, retention, runs
from tasks.records.store import configure, ensure_experiment

NOW = datetime(2030, 1, 1, tzinfo=UTC)
DAYS = dict(load_policy().history_retention_days)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    """A store of this test's own (SQLite and artifacts under tmp_path): a purge never sees the session's runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INFEROPS_DATA_DIR", str(tmp_path / "data"))
        patch.delenv("INFEROPS_MLFLOW_TRACKING_URI", raising=False)
        get_settings.cache_clear()
        yield configure()
    get_settings.cache_clear()
    configure()  # back to the session's store for the tests that follow


def add_run(
    client: MlflowClient,
    experiment: str,
    name: str,
    cls: str | None,
    age_days: float,
    *,
    status: str = "FINISHED",
    parent: str | None = None,
    now: datetime = NOW,
) -> str:
    """A run started `age_days` before `now`, with an artifact, tagged with `cls` (none when None)."""
    start = int((now - timedelta(days=age_days)).timestamp() * 1000)
    tags = {names.TAG_RETENTION_CLASS: cls} if cls else {}
    if parent:
        tags[runs.PARENT_TAG] = parent
    run = client.create_run(ensure_experiment(experiment), start_time=start, tags=tags, run_name=name)
    client.log_text(run.info.run_id, f"{name}\n", "report.md")
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status, end_time=start + 1000)
    return str(run.info.run_id)


def artifacts_dir(client: MlflowClient, run_id: str) -> Path:
    from mlflow.utils.file_utils import local_file_uri_to_path

    return Path(local_file_uri_to_path(client.get_run(run_id).info.artifact_uri))


@dataclass
class Store:
    client: MlflowClient
    ids: dict[str, str]
    expired: set[str]  # the names the purge must delete


def populate(client: MlflowClient, now: datetime = NOW) -> Store:
    """One run of each kind around its class's cut-off (policy: performance 730 days, logs and rollbacks 365)."""
    ids = {
        "cycle-old": add_run(
            client, names.OPTIMIZATION_EXPERIMENT, "cycle-old", names.OPTIMIZATION_PLANS, 3000
        ),
        "capacity-old": add_run(
            client, names.CAPACITY_EXPERIMENT, "capacity-old", names.OPTIMIZATION_PLANS, 2000
        ),
        "bench-old": add_run(client, names.BENCH_EXPERIMENT, "bench-old", names.PERFORMANCE_DATA, 800),
        "bench-new": add_run(client, names.BENCH_EXPERIMENT, "bench-new", names.PERFORMANCE_DATA, 700),
        "gate-old": add_run(client, names.GATE_EXPERIMENT, "gate-old", names.IMPLEMENTATION_LOGS, 400),
        "gate-new": add_run(client, names.GATE_EXPERIMENT, "gate-new", names.IMPLEMENTATION_LOGS, 300),
        "rollback-old": add_run(
            client, names.REGISTRY_EXPERIMENT, "rollback-old", names.ROLLBACK_RECORDS, 366
        ),
        "rollback-new": add_run(
            client, names.REGISTRY_EXPERIMENT, "rollback-new", names.ROLLBACK_RECORDS, 364
        ),
        "champion-run": add_run(client, names.BENCH_EXPERIMENT, "champion-run", names.PERFORMANCE_DATA, 900),
        "previous-run": add_run(client, names.BENCH_EXPERIMENT, "previous-run", names.PERFORMANCE_DATA, 1000),
        "legacy": add_run(client, names.BENCH_EXPERIMENT, "legacy", None, 2000),
        "odd-class": add_run(client, names.BENCH_EXPERIMENT, "odd-class", "forever", 2000),
        "running": add_run(
            client, names.GATE_EXPERIMENT, "running", names.IMPLEMENTATION_LOGS, 500, status="RUNNING"
        ),
    }
    # a candidate nested under the permanent cycle: expires on its own class
    ids["candidate-old"] = add_run(
        client,
        names.OPTIMIZATION_EXPERIMENT,
        "candidate-old",
        names.PERFORMANCE_DATA,
        800,
        parent=ids["cycle-old"],
    )
    model = "retention-model"
    client.create_registered_model(model)
    # previous-champion: a version made from the run's artifacts without naming the run; champion: by run id
    previous = client.create_model_version(
        model, source=f"{client.get_run(ids['previous-run']).info.artifact_uri}/model"
    )
    champion = client.create_model_version(
        model,
        source=f"{client.get_run(ids['champion-run']).info.artifact_uri}/model",
        run_id=ids["champion-run"],
    )
    client.set_registered_model_alias(model, registry.PREVIOUS, previous.version)
    client.set_registered_model_alias(model, registry.CHAMPION, champion.version)
    return Store(client, ids, {"bench-old", "gate-old", "rollback-old", "candidate-old"})


def test_dry_run_lists_exactly_the_expired_runs_and_deletes_nothing(store: str) -> None:
    client = MlflowClient(store)
    s = populate(client)
    plan = retention.build_plan(DAYS, NOW)
    by_id = {v: k for k, v in s.ids.items()}
    assert {by_id[e.run_id] for e in plan.delete} == s.expired
    kept = {by_id[e.run_id]: e.reason for e in plan.kept}
    assert kept["champion-run"] == "backs model version retention-model v2 (champion)"
    assert kept["previous-run"] == "backs model version retention-model v1 (previous-champion)"
    assert kept["running"] == "still running"
    assert "no retention class" in kept["legacy"] and "'forever' is not in policy" in kept["odd-class"]
    classes = {c.retention_class: c for c in plan.classes}
    assert classes[names.OPTIMIZATION_PLANS].days is None and not classes[names.OPTIMIZATION_PLANS].delete
    assert classes[names.OPTIMIZATION_PLANS].within == 2  # permanent: the 3000-day-old cycle stays
    assert classes[names.PERFORMANCE_DATA].within == 1 and classes[names.ROLLBACK_RECORDS].within == 1
    bench = next(e for e in plan.delete if e.name == "bench-old")
    assert bench.experiment == names.BENCH_EXPERIMENT and round(bench.age_days or 0) == 800
    assert bench.reason == "800 days old, past its 730 days"

    markdown = retention.render_markdown(plan)
    assert markdown.startswith("# History retention: dry run")
    assert (
        "4 runs outlived their retention and would be deleted" in markdown
        and "nothing was deleted" in markdown
    )
    assert "| would delete |" in markdown and s.ids["bench-old"] in markdown
    # nothing was touched
    for run_id in s.ids.values():
        assert client.get_run(run_id).info.lifecycle_stage == "active"
        assert (artifacts_dir(client, run_id) / "report.md").exists()


def test_purge_deletes_exactly_the_expired_runs_and_their_artifacts_for_good(store: str) -> None:
    client = MlflowClient(store)
    s = populate(client)
    dirs = {k: artifacts_dir(client, v) for k, v in s.ids.items()}
    result = retention.purge(retention.build_plan(DAYS, NOW))
    by_id = {v: k for k, v in s.ids.items()}
    assert {by_id[e.run_id] for e in result.deleted} == s.expired
    assert not result.failed and not result.soft_deleted and not result.store_note
    everything = client.search_runs(
        [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)],
        run_view_type=ViewType.ALL,
    )
    left = {r.info.run_id for r in everything}
    for name, run_id in s.ids.items():
        if name in s.expired:
            assert run_id not in left, f"{name} is still in the store (even deleted runs are searched)"
            with pytest.raises(MlflowException):
                client.get_run(run_id)
            assert not dirs[name].exists(), f"{name}'s artifacts are still on disk"
        else:
            assert run_id in left and (dirs[name] / "report.md").exists(), name
    # the registry is as it was
    assert (
        client.get_model_version_by_alias("retention-model", registry.CHAMPION).run_id
        == s.ids["champion-run"]
    )
    # and the next plan has nothing left to delete
    assert retention.build_plan(DAYS, NOW).delete == ()
    assert "Purge at 2030-01-01 00:00 UTC: 4 of 4 expired runs deleted" in retention.summary(
        result.plan, result
    )


def test_a_run_whose_artifacts_cannot_be_deleted_is_left_whole_and_named(store: str) -> None:
    client = MlflowClient(store)
    good = add_run(client, names.GATE_EXPERIMENT, "gate-old", names.IMPLEMENTATION_LOGS, 400)
    # an experiment whose artifact store no artifact repository serves: deleting the artifacts fails
    broken = client.create_experiment("retention-broken", artifact_location="nowhere://bucket/x")
    start = int((NOW - timedelta(days=400)).timestamp() * 1000)
    bad = client.create_run(
        broken, start_time=start, tags={names.TAG_RETENTION_CLASS: names.IMPLEMENTATION_LOGS}, run_name="bad"
    ).info.run_id
    client.set_terminated(bad, "FINISHED", end_time=start + 1)
    plan = retention.build_plan(DAYS, NOW)
    assert {e.run_id for e in plan.delete} == {good, bad}
    with pytest.raises(retention.PurgeError, match=bad) as failure:
        retention.purge(plan)
    result = failure.value.result
    assert [e.run_id for e in result.deleted] == [good]
    assert [(f.entry.run_id, f.step) for f in result.failed] == [(bad, "artifacts")]
    assert client.get_run(bad).info.lifecycle_stage == "active"  # untouched: the next purge retries it
    assert [e.run_id for e in retention.build_plan(DAYS, NOW).delete] == [bad]
    assert "failed" in retention.render_markdown(plan, result) and "nowhere://" in retention.render_markdown(
        plan, result
    )


def test_every_run_log_run_writes_carries_its_class_and_an_unknown_one_is_refused(
    store: str, tmp_path: Path
) -> None:
    client = MlflowClient(store)
    expected = [
        (runs.RunRecord("suite", names.BENCH_EXPERIMENT), names.PERFORMANCE_DATA),
        (runs.RunRecord("cycle", names.OPTIMIZATION_EXPERIMENT), names.OPTIMIZATION_PLANS),
        (runs.RunRecord("plan", names.CAPACITY_EXPERIMENT), names.OPTIMIZATION_PLANS),
        (runs.RunRecord("gate", names.GATE_EXPERIMENT), names.IMPLEMENTATION_LOGS),
        (runs.RunRecord("purge", names.RETENTION_EXPERIMENT), names.IMPLEMENTATION_LOGS),
        (
            runs.RunRecord(
                "candidate", names.OPTIMIZATION_EXPERIMENT, retention_class=names.PERFORMANCE_DATA
            ),
            names.PERFORMANCE_DATA,
        ),
    ]
    for record, cls in expected:
        run_id = runs.log_run(record)
        assert client.get_run(run_id).data.tags[names.TAG_RETENTION_CLASS] == cls, record.name
    # the registry's own runs: a registration is an implementation log, a rollback a rollback record
    for version in ("v1", "v2"):
        artifact = tmp_path / f"{version}.onnx"
        artifact.write_bytes(version.encode())
        registry.register("retention-classes", artifact, {"variant": version})
        registry.promote("retention-classes")
    registry.rollback("retention-classes", "test")
    registry_runs = client.search_runs(
        [client.get_experiment_by_name(names.REGISTRY_EXPERIMENT).experiment_id]
    )
    assert sorted((r.info.run_name, r.data.tags[names.TAG_RETENTION_CLASS]) for r in registry_runs) == [
        ("register-retention-classes", names.IMPLEMENTATION_LOGS),
        ("register-retention-classes", names.IMPLEMENTATION_LOGS),
        ("rollback-retention-classes", names.ROLLBACK_RECORDS),
    ]
    assert set(names.RETENTION_CLASSES) == set(
        DAYS
    )  # the classes runs get are the policy's, no more, no less
    assert set(names.EXPERIMENT_RETENTION.values()) <= set(DAYS)

    before = len(client.search_experiments())
    with pytest.raises(runs.RetentionClassError) as refused:
        runs.log_run(runs.RunRecord("x", names.BENCH_EXPERIMENT, retention_class="performance_date"))
    text = str(refused.value)
    assert "'performance_date'" in text and "history_retention_days" in text
    assert all(c in text for c in names.RETENTION_CLASSES)
    with pytest.raises(runs.RetentionClassError, match="EXPERIMENT_RETENTION"):
        runs.log_run(runs.RunRecord("x", "someone-elses-experiment"))
    with pytest.raises(runs.RetentionClassError, match="disagrees"):
        runs.log_run(
            runs.RunRecord(
                "x",
                names.BENCH_EXPERIMENT,
                tags={names.TAG_RETENTION_CLASS: names.ROLLBACK_RECORDS},
                retention_class=names.PERFORMANCE_DATA,
            )
        )
    assert len(client.search_experiments()) == before  # refused before anything was written


def test_policy_refuses_retention_that_would_purge_at_once_or_keep_nothing(tmp_path: Path) -> None:
    for body, problem in [
        ("history_retention_days:\n  performance_data: -30\n", "greater than or equal to 1"),
        ("history_retention_days:\n  implementation_logs: 0\n", "greater than or equal to 1"),
        ("history_retention_days:\n  performance_date: 730\n", "performance_date"),
    ]:
        path = tmp_path / "policy.yaml"
        path.write_text(body, encoding="utf-8")
        with pytest.raises(PolicyError, match=problem):
            load_policy(path)
    with pytest.raises(ValueError, match="no time zone"):
        retention.build_plan(DAYS, datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="whole number of days"):
        retention.plan_for([], {names.PERFORMANCE_DATA: -1}, retention.Protection(), NOW, "sqlite://")


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` (SQLite behind it, artifacts proxied) on a free loopback port."""
    from serving.network import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "server-artifacts"),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # its own process group: the server's workers stop with it
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else "exited"
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start in 60 s"
            time.sleep(0.2)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("INFEROPS_MLFLOW_TRACKING_URI", url)
            get_settings.cache_clear()
            yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        get_settings.cache_clear()
        configure()


def test_against_an_mlflow_server_runs_are_marked_deleted_and_their_artifacts_removed(
    mlflow_server: str, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_server)
    old = add_run(client, names.GATE_EXPERIMENT, "gate-old", names.IMPLEMENTATION_LOGS, 400)
    new = add_run(client, names.GATE_EXPERIMENT, "gate-new", names.IMPLEMENTATION_LOGS, 10)
    served = tmp_path / "server-artifacts"
    assert list(served.rglob("report.md"))  # proxied: the server wrote them
    result = retention.purge(retention.build_plan(DAYS, NOW))
    assert [e.run_id for e in result.soft_deleted] == [old] and not result.deleted
    assert "mlflow gc --backend-store-uri" in result.store_note
    assert client.get_run(old).info.lifecycle_stage == "deleted"
    assert client.get_run(new).info.lifecycle_stage == "active"
    assert [p.parent.parent.name for p in served.rglob("report.md")] == [new]  # only the kept run's artifacts
