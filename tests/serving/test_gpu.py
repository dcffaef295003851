"""GPU readings through NVML: boards that answer only some queries, the replica's own devices, throttle reasons, and
the gauges a GPU replica exports on Ray's metrics endpoint.

This machine has no GPU, so the boards are a stand-in: `BoardsNvml` answers pynvml's calls for one full H200 and one
MIG slice that, like a real one, raises NotSupported for utilisation, temperature and power. The code under test is
the real reading and exporting code; `benchmarks/gpu.py` runs it against a real board on the GPU box.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from serving.gpu import THROTTLE_REASONS, GpuSample, gpu_status, own_gpus, read_gpu, sample_gpus
from serving.gpu import throttle_reason_names as names_of
from serving.gpu import visible_gpu_indices as visible
from serving.metrics import GPU_THROTTLED, GpuExporter, gpu_gauge_values


class NotSupported(Exception):
    """pynvml.NVMLError_NotSupported's stand-in."""


class BoardsNvml:
    """pynvml's calls for two boards: index 0 a whole H200, index 1 a MIG slice without the optional sensors."""

    NVML_TEMPERATURE_GPU = 0
    boards = (
        {"name": b"NVIDIA H200", "uuid": "GPU-aaaa1111", "util": 87, "used": 30 << 30, "total": 141 << 30,
         "temp": 61, "power_mw": 412_000, "reasons": 0x4 | 0x20},
        {"name": "NVIDIA H200 MIG 1g.18gb", "uuid": "MIG-bbbb2222", "util": None, "used": 2 << 30,
         "total": 18 << 30, "temp": None, "power_mw": None, "reasons": None},
    )  # fmt: skip

    def nvmlDeviceGetCount(self) -> int:
        return len(self.boards)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.boards[i]

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> Any:
        return h["name"]

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str:
        return str(h["uuid"])

    def _value(self, h: dict[str, Any], key: str) -> Any:
        if h[key] is None:
            raise NotSupported("Not Supported")
        return h[key]

    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> Any:
        return SimpleNamespace(gpu=self._value(h, "util"), memory=0)

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> Any:
        return SimpleNamespace(used=h["used"], total=h["total"], free=h["total"] - h["used"])

    def nvmlDeviceGetTemperature(self, h: dict[str, Any], sensor: int) -> int:
        return int(self._value(h, "temp"))

    def nvmlDeviceGetPowerUsage(self, h: dict[str, Any]) -> int:
        return int(self._value(h, "power_mw"))

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: dict[str, Any]) -> int:
        return int(self._value(h, "reasons"))


def test_a_board_that_cannot_answer_some_queries_still_reports_the_rest() -> None:
    nvml = BoardsNvml()
    whole, mig = read_gpu(nvml, 0), read_gpu(nvml, 1)
    assert whole == GpuSample(
        index=0,
        name="NVIDIA H200",
        utilisation_percent=87.0,
        memory_used_bytes=30 << 30,
        memory_total_bytes=141 << 30,
        temperature_c=61.0,
        power_w=412.0,
        uuid="GPU-aaaa1111",
        throttle_reasons=("sw_power_cap", "sw_thermal_slowdown"),
        unsupported=(),
    )
    assert mig.name == "NVIDIA H200 MIG 1g.18gb" and mig.memory_used_bytes == 2 << 30
    assert mig.utilisation_percent is None and mig.temperature_c is None and mig.power_w is None
    assert mig.unsupported == ("utilisation", "temperature", "power", "throttle_reasons")
    assert mig.memory_headroom == pytest.approx(16 / 18)


def test_the_replicas_own_devices_by_index_or_uuid() -> None:
    nvml = BoardsNvml()
    assert visible(nvml, "1") == [1]
    assert visible(nvml, "MIG-bbbb2222,GPU-aaaa1111") == [1, 0]  # Ray and Kubernetes set UUIDs
    assert visible(nvml, "GPU-aaaa") == [0]  # a unique UUID prefix, as CUDA accepts
    assert visible(nvml, "") == [] and visible(nvml, "7") == []  # given no GPU / one that is not there
    assert visible_gpu_indices_unset() is None


def visible_gpu_indices_unset() -> list[int] | None:
    import os

    saved = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        return visible(BoardsNvml())
    finally:
        if saved is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


def test_throttle_reason_bits_are_named() -> None:
    assert names_of(0) == ()
    assert names_of(0x1 | 0x40) == ("gpu_idle", "hw_thermal_slowdown")
    assert names_of(0x4 | 0x10000) == (
        "sw_power_cap",
        "0x10000",
    )  # a bit newer than this list keeps its value


def test_gauges_leave_out_what_a_board_does_not_report() -> None:
    nvml = BoardsNvml()
    values = gpu_gauge_values([read_gpu(nvml, 0), read_gpu(nvml, 1)])
    by_gpu: dict[str, dict[str, float]] = {}
    for metric, tags, value in values:
        key = metric if metric != GPU_THROTTLED else f"{metric}:{tags['reason']}"
        by_gpu.setdefault(tags["gpu"], {})[key] = value
    assert by_gpu["0"]["inferops_gpu_utilisation_percent"] == 87.0
    assert by_gpu["0"]["inferops_gpu_power_watts"] == 412.0
    assert by_gpu["0"]["inferops_gpu_throttled:sw_power_cap"] == 1.0
    assert by_gpu["0"]["inferops_gpu_throttled:hw_slowdown"] == 0.0
    assert sum(k.startswith(GPU_THROTTLED) for k in by_gpu["0"]) == len(THROTTLE_REASONS)
    assert set(by_gpu["1"]) == {"inferops_gpu_memory_used_bytes", "inferops_gpu_memory_total_bytes"}


def test_this_machine_says_why_it_has_no_gpu_reading() -> None:
    available, reason = gpu_status()
    if available:
        pytest.skip(f"this machine has a GPU ({reason})")
    assert reason.startswith("unavailable (")
    assert sample_gpus() == [] and own_gpus() == []
    exporter = GpuExporter()
    assert exporter.start() == reason and exporter._thread is None  # nothing runs on a CPU host


def test_a_gpu_replicas_gauges_reach_rays_metrics_endpoint(ray_session: None) -> None:
    import ray

    nvml = BoardsNvml()
    exporter = GpuExporter(read=lambda: [read_gpu(nvml, 0), read_gpu(nvml, 1)])
    assert exporter.export_once() == len(gpu_gauge_values([read_gpu(nvml, 0), read_gpu(nvml, 1)]))
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if "inferops_gpu_power_watts" in text:
            break
        exporter.export_once()
        time.sleep(2)
    lines = [
        line for line in text.splitlines() if line.startswith("inferops_gpu_") or "_inferops_gpu_" in line
    ]
    power = [line for line in lines if "gpu_power_watts{" in line]
    assert power and power[0].rstrip().endswith(" 412.0") and 'gpu="0"' in power[0], lines[:10]
    assert not any(
        "gpu_power_watts{" in line and 'gpu="1"' in line for line in lines
    )  # the MIG slice has none
    assert any('reason="sw_thermal_slowdown"' in line and line.rstrip().endswith(" 1.0") for line in lines)
