"""System sampler on real processes, GPU absence recorded as a reason, Prometheus text parsing and scraping."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from serving.gpu import gpu_status, sample_gpus
from tasks.measure.system_metrics import (
    PrometheusUnavailable,
    SystemSampler,
    hardware_info,
    metric_total,
    parse_prometheus_text,
    scrape_prometheus,
)
from tests.servers import free_port, serve  # tests/servers.py

PROM_TEXT = """# HELP ray_serve_num_http_requests_total The number of HTTP requests processed.
# TYPE ray_serve_num_http_requests_total counter
ray_serve_num_http_requests_total{application="app",route="/v1/embeddings",method="POST"} 1204.0
ray_serve_num_http_requests_total{application="app",route="/v2/health/ready",method="GET"} 6.0
ray_serve_deployment_queued_queries{deployment="Embedder",note="a b, c"} 3 1712345678000
process_open_fds 42
weird_metric{le="+Inf"} +Inf
this is not a sample
"""


def test_parse_prometheus_text() -> None:
    series = parse_prometheus_text(PROM_TEXT)
    assert metric_total(series, "ray_serve_num_http_requests_total") == 1210.0
    assert series['ray_serve_deployment_queued_queries{deployment="Embedder",note="a b, c"}'] == 3.0
    assert series["process_open_fds"] == 42.0
    assert math.isinf(series['weird_metric{le="+Inf"}'])
    assert math.isnan(metric_total(series, "absent_metric"))
    assert len(series) == 5  # comments and the malformed line are skipped


def test_scrape_a_real_endpoint_and_tolerate_absence() -> None:
    with serve("steady") as server:
        series = scrape_prometheus(server.url + "/metrics")
        assert metric_total(series, "test_requests_total") == 0.0
    with pytest.raises(PrometheusUnavailable, match="ConnectError"):
        scrape_prometheus(f"http://127.0.0.1:{free_port()}/metrics")
    sampler = SystemSampler([], interval_s=0.05, prometheus_url=f"http://127.0.0.1:{free_port()}/metrics")
    with sampler:
        pass
    summary = sampler.summary()
    assert summary.prometheus is None and summary.prometheus_status.startswith("unavailable (")


def test_sampler_follows_a_process_that_grows() -> None:
    code = "import time\nheld = []\nfor _ in range(12):\n    held.append(b'x' * 8 * 2**20)\n    time.sleep(0.1)\ntime.sleep(5)\n"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        sampler = SystemSampler([child.pid], interval_s=0.1).start()
        import time

        time.sleep(1.6)
        summary = sampler.stop()
    finally:
        child.kill()
        child.wait()
    assert len(summary.samples) >= 8
    assert summary.rss_end_bytes - summary.rss_start_bytes > 40 * 2**20  # 12 x 8 MiB held, most of it seen
    assert summary.rss_max_bytes >= summary.rss_end_bytes
    metrics = summary.metrics()
    assert metrics["target_rss_mb_max"] > 90 and "host_cpu_percent_mean" in metrics


def test_gpu_absence_is_recorded_as_a_reason_not_zeros() -> None:
    available, reason = gpu_status()
    with SystemSampler([], interval_s=0.05) as sampler:
        pass
    summary = sampler.summary()
    metrics = summary.metrics()
    if available:
        assert (
            sample_gpus()
            and summary.gpu.startswith("available")
            and "gpu_utilisation_percent_mean" in metrics
        )
    else:
        assert reason.startswith("unavailable (") and summary.gpu == reason
        assert sample_gpus() == [] and not any(k.startswith("gpu_") for k in metrics)
        assert not any(k.startswith("target_") for k in metrics)  # no target processes: nothing, not zeros
    hw = hardware_info()
    assert hw["cpu_cores_logical"] >= 1 and hw["cpu_model"] and hw["gpu"]
