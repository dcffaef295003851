"""The four layers read from a real Prometheus scraping a real Ray Serve app: every query's metric and label names
are what Ray and the replicas actually export (a live scrape, not a list typed from memory)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from serving import routes
from serving.client import InferopsClient
from serving.network import free_port
from tasks.monitoring.collect import MonitoringError, collect, probes, render_markdown, series_selectors
from tasks.policy import default_policy
from tests.conftest import TEST_API_KEY

APP = "inferops-collect-test"
SCRAPE_S = 5  # a node late in the session exports hundreds of series: time to scrape them all
MODEL = "digits-cnn"


@pytest.fixture(scope="module")
def scraped(ray_session: None, prometheus_binary: str) -> Iterator[dict[str, Any]]:
    """digits-cnn served, under a little traffic (one request refused), scraped every second by Prometheus."""
    import ray
    from ray import serve

    from serving.app import run_local
    from tests.prometheus_server import prometheus_server, wait_until

    port = ray._private.worker.global_worker.node.metrics_export_port
    with prometheus_server(prometheus_binary, [f"127.0.0.1:{port}"], interval_s=SCRAPE_S) as prometheus:
        url = run_local(
            default_policy().app_args(model=MODEL, variant="onnx-fp32"),
            name=APP,
            port=free_port(),
            route_prefix="/collect-test",
        )
        try:
            with InferopsClient(url, TEST_API_KEY) as client:
                pixels = np.zeros((2, 1, 8, 8), dtype=np.float32)

                def fidelity_probed() -> bool:
                    return client.metadata(MODEL)["accuracy_fidelity"].get("value") is not None

                wait_until(fidelity_probed, 120, "the replica's accuracy-fidelity probe")
                for _ in range(30):
                    client.infer(MODEL, pixels)
                assert client.call(routes.INFER, MODEL, json={"inputs": []}).status_code == 400
                meta = client.metadata(MODEL)
            from tasks.monitoring.collect import instant

            def exported(metric: str) -> bool:
                return bool(instant(prometheus.url, f'count({metric}{{application="{APP}"}})'))

            for metric in (
                "ray_serve_num_http_requests_total",
                "ray_inferops_accuracy_fidelity",
                "ray_inferops_batch_size_count",
            ):
                wait_until(
                    lambda metric=metric: exported(metric),
                    120,
                    f"{metric} in Prometheus ({scrapes(prometheus.url)})",
                )
            # Ray exports its counters every few seconds: traffic shows as a rate once two exports differ, so keep
            # sending while waiting for it
            qps = probes(APP, MODEL)["qps"].query
            with InferopsClient(url, TEST_API_KEY) as client:

                def rate_seen() -> bool:
                    client.infer(MODEL, pixels)
                    return any(v > 0 for _, v in instant(prometheus.url, qps))

                wait_until(rate_seen, 90, "the request rate in Prometheus")
            yield {"prometheus": prometheus.url, "meta": meta}
        finally:
            serve.delete(APP)


def scrapes(prometheus: str) -> str:
    """How the scrapes of the Ray node go (for a failure message): up, duration, samples."""
    from tasks.monitoring.collect import instant

    facts = {q: instant(prometheus, q) for q in ("up", "scrape_duration_seconds", "scrape_samples_scraped")}
    return ", ".join(f"{q}={[round(v, 3) for _, v in got]}" for q, got in facts.items())


def test_the_alert_rules_read_series_this_deployment_exports(scraped: dict[str, Any]) -> None:
    """The names the alert rules read are those a real Ray Serve exports, and every recording rule evaluates."""
    from tasks.monitoring import rules
    from tasks.monitoring.collect import instant

    prometheus = scraped["prometheus"]
    found = rules.selectors(APP, MODEL)
    for key in ("requests", "latency_bucket", "replica_rss"):
        assert instant(prometheus, f"last_over_time({found[key]}[5m])"), key
    for record in rules.recording_rules(APP, MODEL):
        assert instant(prometheus, record["expr"].replace("[1h]", "[5m]")), record["record"]


def test_every_required_series_of_a_cpu_deployment_is_found(scraped: dict[str, Any]) -> None:
    policy = default_policy()
    report = collect(scraped["prometheus"], APP, MODEL, policy.monitoring, gpu=False)
    assert [f"{r.layer}/{r.metric}" for r in report.missing] == []
    assert report.coverage() == 1.0
    by = {(r.layer, r.metric): r for r in report.readings}
    # GPU series are not applicable to CPU replicas: neither missing nor present
    assert not by[("system", "gpu_utilisation")].applicable
    assert by[("application", "qps")].value is not None and by[("application", "qps")].value > 0
    fidelity = by[("business", "accuracy")].value
    assert fidelity == pytest.approx(scraped["meta"]["accuracy_fidelity"]["value"], abs=1e-6)
    assert fidelity >= 0.99  # the FP32 ONNX export agrees with the FP32 PyTorch model
    text = render_markdown(report, policy.rollout_gate.completion.monitoring_coverage_min)
    assert "monitoring coverage of inferops-collect-test is 100% (meets the 95%" in text


def test_a_deployment_that_is_not_there_has_no_coverage(scraped: dict[str, Any]) -> None:
    report = collect(scraped["prometheus"], "no-such-app", MODEL, default_policy().monitoring, gpu=False)
    missing = {r.metric for r in report.missing}
    assert {"qps", "response_time", "accuracy", "concurrency"} <= missing
    assert report.coverage() is not None and report.coverage() < 0.5  # only node-wide series remain


def test_every_selector_names_a_series_this_deployment_exports(scraped: dict[str, Any]) -> None:
    """The label check: each metric and label a query selects is one the live scrape holds."""
    from tasks.monitoring.collect import instant

    gpu_free = {name: p for name, p in probes(APP, MODEL).items() if not p.gpu}
    for name, probe in gpu_free.items():
        for selector in series_selectors(probe.query):
            assert instant(scraped["prometheus"], f"count({selector})"), f"{name}: {selector} selects nothing"


def test_unreachable_prometheus_and_unknown_metrics_say_what_to_fix() -> None:
    with pytest.raises(MonitoringError, match="cannot be reached"):
        collect(f"http://127.0.0.1:{free_port()}", APP, MODEL, default_policy().monitoring, gpu=False)
    policy = default_policy()
    bad = policy.monitoring.model_copy(
        update={
            "layers": {
                "business": policy.monitoring.layers["business"].model_copy(update={"metrics": ["vibes"]})
            }
        }
    )
    with pytest.raises(MonitoringError, match="names 'vibes'"):
        collect("http://127.0.0.1:1", APP, MODEL, bad, gpu=False)


def test_a_rules_file_reading_series_the_deployment_does_not_export_is_refused(
    scraped: dict[str, Any],
) -> None:
    """The bug this checks against: rules filtering on the model's name as the app read nothing and never fire."""
    from serving.settings import get_settings
    from tasks.monitoring import rules

    prometheus, policy = scraped["prometheus"], default_policy()
    baseline = rules.ServedBaseline(50.0, 10.0, "test")
    good = rules.render_rules(APP, MODEL, baseline, policy)
    assert rules.unseen_selectors(prometheus, good, gpu=False) == []
    wrong = rules.render_rules("minilm", MODEL, baseline, policy)  # the model's name where the app's belongs
    unseen = rules.unseen_selectors(prometheus, wrong, gpu=False)
    assert any(
        'inferops:serve_p99_ms:5m reads ray_serve_http_request_latency_ms_bucket{application="minilm"}' in u
        for u in unseen
    ), unseen
    target = get_settings().data_dir / "monitoring" / f"minilm-{MODEL}.rules.yml"
    with pytest.raises(rules.RefusedFile, match="hold no series"):
        rules.write_rules("minilm", MODEL, wrong, prometheus=prometheus)
    assert not target.exists()  # nothing half-written for Prometheus to load
    # an unreachable Prometheus writes nothing either, and says which
    with pytest.raises(MonitoringError, match="cannot be reached"):
        rules.write_rules(APP, MODEL, good, prometheus=f"http://127.0.0.1:{free_port()}")
