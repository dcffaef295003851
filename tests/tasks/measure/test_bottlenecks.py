"""Bottleneck breakdown: the dominant phase, mapped to the seed's focus areas, with its evidence."""

from __future__ import annotations

import pytest

from tasks.measure.bottlenecks import breakdown, render_markdown


def test_compute_dominates_and_proxy_is_the_remainder() -> None:
    timings = {"queue": 1.0, "batch_wait": 3.0, "tokenize": 0.5, "compute": 9.0, "serialize": 0.5}
    result = breakdown(20.0, timings)
    assert result.server_ms == pytest.approx(14.0)
    phases = {p.name: p for p in result.phases}
    assert phases["proxy_http"].ms == pytest.approx(6.0)
    assert sum(p.share for p in result.phases) == pytest.approx(1.0)
    assert result.dominant is not None and result.dominant.name == "compute"
    assert result.focus_area == "model computation"
    assert "9.0 ms of 20.0 ms" in result.evidence and "proxy_http 6.0 ms" in result.evidence


def test_serving_path_and_batch_wait_findings() -> None:
    slow_proxy = breakdown(40.0, {"compute": 5.0, "serialize": 1.0})
    assert slow_proxy.dominant is not None and slow_proxy.dominant.name == "proxy_http"
    assert slow_proxy.focus_area == "serving path"
    batchy = breakdown(30.0, {"batch_wait": 20.0, "compute": 6.0})
    assert batchy.focus_area == "batch processing"


def test_gpu_memory_and_model_loading_findings() -> None:
    tight = breakdown(12.0, {"compute": 10.0}, gpu_memory_headroom=0.04, model_load_s=3.25)
    assert tight.focus_area == "GPU memory"
    assert any("4% free (threshold 10%) -> low" in f for f in tight.findings)
    assert any("model loading: 3.25 s" in f for f in tight.findings)
    roomy = breakdown(12.0, {"compute": 10.0}, gpu_memory_headroom=0.6)
    assert roomy.focus_area == "model computation"
    cpu_only = breakdown(12.0, {"compute": 10.0}, gpu_status="unavailable (no GPU)")
    assert cpu_only.findings == ["GPU memory: unavailable (no GPU)"]


def test_no_server_timing_says_so() -> None:
    result = breakdown(15.0, {})
    assert result.dominant is None and result.focus_area == "unknown"
    assert "no Server-Timing header" in result.evidence


def test_render_markdown() -> None:
    text = render_markdown(breakdown(12.0, {"compute": 9.0, "queue": 1.0}))
    assert "**model computation**" in text and "| model compute | model computation | 9.00 | 75% |" in text
