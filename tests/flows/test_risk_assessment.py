"""The risk assessment flow on a live endpoint: a real Ray Serve app serving digits-cnn, probed by the flow; a faulty
model version hot-switched in makes about half the requests fail, which raises "inference performance decline"
from medium to high, opens an L2 incident (once), and is recorded with its heat map and the change in MLflow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest

from serving.network import free_port
from tasks.records import names
from tasks.records.store import configure
from tasks.risk.incidents import IncidentStore

API_KEY, ADMIN_KEY = "test-key-risk", "test-admin-risk"
APP = "risk-flow-test"
DECLINE = "inference performance decline"


@pytest.fixture(scope="module", autouse=True)
def own_records(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """An MLflow store of this module's own: the P99 baseline and the previous assessment are the ones this test
    makes, not those of a release another test recorded for digits-cnn."""
    from serving.settings import get_settings

    db = tmp_path_factory.mktemp("risk-mlflow") / "mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INFEROPS_MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()
    configure()


@pytest.fixture(scope="module")
def digits_endpoint(ray_session: None) -> Iterator[str]:
    from ray import serve

    from serving.app import run_local
    from serving.zoo import train_digits_cnn
    from tasks.policy import default_policy

    train_digits_cnn()
    url = run_local(
        default_policy().app_args(
            model="digits-cnn", variant="onnx-fp32", api_keys=[API_KEY], admin_keys=[ADMIN_KEY]
        ),
        name=APP,
        port=free_port(),
        route_prefix="/risk-test",
    )
    yield url
    serve.delete(APP)


def _faulty(tmp_path: Path) -> tuple[Path, str]:
    from benchmarks.faulty_model import faulty_copy
    from serving.artifacts import sha256_file
    from serving.variants import ensure_variant
    from serving.zoo import get_model

    source = ensure_variant("digits-cnn", "onnx-fp32").path
    examples = np.asarray(get_model("digits-cnn").example_inputs(64), dtype=np.float32)
    path, share = faulty_copy(Path(source), tmp_path / "digits-faulty.onnx", 0.5, examples)
    assert 0.3 <= share <= 0.7  # about half of the examples the probe sends make the runtime raise
    return path, sha256_file(path)


def _decline(out: dict) -> dict:
    return next(r for r in out["table"] if r["risk"] == DECLINE)


def test_an_error_rate_rise_on_the_live_endpoint_raises_the_risk_to_high_and_opens_an_incident(
    prefect_harness: None, digits_endpoint: str, tmp_path: Path
) -> None:
    from flows.risk_assessment import risk_assessment
    from serving.client import InferopsClient

    store = IncidentStore()
    before = {i.id for i in store.list()}
    healthy = risk_assessment(model="digits-cnn", url=digits_endpoint, api_key=API_KEY, app=APP)
    row = _decline(healthy)
    assert (row["level"], row["p"], row["probability from"]) == ("medium", 3, "static (register)")
    probe = next(
        s
        for r in healthy["assessment"]["risks"]
        if r["name"] == DECLINE
        for s in r["evidence"]
        if s["kind"] == "error_rate"
    )
    assert probe["value"] == 0.0 and probe["probability"] == 1 and probe["source"].startswith("probe of ")
    kinds = {
        s["kind"]: s for r in healthy["assessment"]["risks"] if r["name"] == DECLINE for s in r["evidence"]
    }
    assert kinds["latency"]["probability"] is None and "no release" in kinds["latency"]["note"]
    assert healthy["high"] == [] and healthy["incidents"] == []
    assert {i.id for i in store.list()} == before

    path, sha = _faulty(tmp_path)
    with InferopsClient(digits_endpoint, API_KEY, admin_key=ADMIN_KEY) as client:
        switched = client.switch("digits-cnn", path=str(path), sha256=sha)
        assert switched.ok, switched.body
        try:
            failing = risk_assessment(model="digits-cnn", url=digits_endpoint, api_key=API_KEY, app=APP)
            again = risk_assessment(model="digits-cnn", url=digits_endpoint, api_key=API_KEY, app=APP)
        finally:
            assert client.rollback("digits-cnn").ok
    recovered = risk_assessment(model="digits-cnn", url=digits_endpoint, api_key=API_KEY, app=APP)
    row = _decline(failing)
    assert row["level"] == "high" and row["p"] == 5, row
    assert row["probability from"].startswith("live: error_rate")
    assert row["change"].startswith("medium -> high")
    assert failing["high"] == [DECLINE]
    # one incident, at the policy's level (L2: performance degradation), of the risk's category
    (response,) = failing["incidents"]
    assert response["opened"] == "new" and response["level"] == "L2"
    incident = store.get(response["incident"])
    assert incident.category == "technical/performance" and incident.state == "notified"
    assert incident.source is not None and incident.source.startswith(f"risk:digits-cnn:{DECLINE}:")
    # still high an assessment later: the same incident, not a second one
    (same,) = again["incidents"]
    assert same["incident"] == incident.id and same["opened"] == "already open"
    assert len({i.id for i in store.list()} - before) == 1
    # the good model back: the risk is medium again, its incident stays open for a person to close
    assert _decline(recovered)["level"] == "medium" and _decline(recovered)["change"].startswith(
        "high -> medium"
    )
    assert recovered["high"] == [] and store.get(incident.id).state == "notified"

    configure()
    run = mlflow.MlflowClient().get_run(failing["mlflow_run_id"])
    assert run.data.tags[names.TAG_RISK_HIGH] == DECLINE
    assert run.data.metrics["score.inference_performance_decline"] == pytest.approx(15.0)
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"risk_heat_map.png", "assessment.json", "risks.json", "evidence.json"} <= files
    # the Prefect table: each risk with its inputs, level and change, latest version (the recovered assessment)
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        table = next(a for a in client.read_latest_artifacts() if a.key == "risk-digits-cnn")
    assert table.type == "table" and DECLINE in str(table.data) and "high -> medium" in str(table.data)
