"""Custom serving metrics on Ray's Prometheus endpoint (via `ray.serve.metrics`), one tag set per model."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from serving.fidelity import FIDELITY_GAUGE
from serving.gpu import THROTTLE_REASONS, GpuSample, gpu_status, own_gpus

log = logging.getLogger(__name__)

GPU_SAMPLE_PERIOD_S = (
    5.0  # how often a GPU replica refreshes its GPU gauges (Prometheus scrapes every 15 s or so)
)

# Bucket boundaries are display choices, not thresholds: batch sizes up to the largest sane max_batch_size,
# latencies around the 100 ms SLA.
BATCH_SIZE_BOUNDARIES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
LATENCY_MS_BOUNDARIES = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
EFFICIENCY_BOUNDARIES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]


class ServingMetrics:
    """Batch size, queue wait, compute time, padding efficiency, fallbacks, errors and model switches."""

    def __init__(self, model: str) -> None:
        from ray.serve.metrics import Counter, Gauge, Histogram

        self.tags = {"model": model}
        keys = ("model",)
        self.batch_size = Histogram(
            "inferops_batch_size",
            description="Requests (texts or tensors) per engine batch.",
            boundaries=BATCH_SIZE_BOUNDARIES,
            tag_keys=keys,
        )
        self.queue_ms = Histogram(
            "inferops_queue_wait_ms",
            description="Time a request waited for the engine to be free (ms).",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=keys,
        )
        self.batch_wait_ms = Histogram(
            "inferops_batch_wait_ms",
            description="Time a request waited for its batch to fill (ms).",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=keys,
        )
        self.compute_ms = Histogram(
            "inferops_model_compute_ms",
            description="Model compute time per engine call (ms).",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=keys,
        )
        self.padding_efficiency = Histogram(
            "inferops_padding_efficiency",
            description="Real tokens / padded tokens per text batch after length bucketing.",
            boundaries=EFFICIENCY_BOUNDARIES,
            tag_keys=keys,
        )
        self.padding_efficiency_last = Gauge(
            "inferops_padding_efficiency_last",
            description="Padding efficiency of the last batch.",
            tag_keys=keys,
        )
        self.fallbacks = Counter(
            "inferops_provider_fallbacks", description="Engine loads that fell back to CPU.", tag_keys=keys
        )
        self.on_fallback = Gauge(
            "inferops_cpu_fallback_active",
            description="1 when the loaded engine runs on a fallback provider.",
            tag_keys=keys,
        )
        self.rejected = Counter(
            "inferops_rejected_requests",
            description="Requests rejected with a 4xx, by status.",
            tag_keys=("model", "status"),  # type: ignore[arg-type]
        )
        self.cache_lookups = Counter(
            "inferops_cache_lookups",
            description="Response-cache lookups, by result (hit or miss).",
            tag_keys=("model", "result"),  # type: ignore[arg-type]
        )
        self.switches = Counter(
            "inferops_model_switches",
            description="Model switch attempts, by outcome.",
            tag_keys=("model", "outcome"),  # type: ignore[arg-type]
        )
        self.fidelity: Any = None  # made on the first probe: a model without a reference exports no gauge

    def observe_fidelity(self, value: float) -> None:
        if self.fidelity is None:
            from ray.serve.metrics import Gauge

            self.fidelity = Gauge(
                FIDELITY_GAUGE,
                description="Served outputs on the golden set against the FP32 reference: mean cosine (text) "
                "or top-1 agreement (tensor).",
                tag_keys=("model",),
            )
        self.fidelity.set(value, tags=self.tags)

    def observe_batch(self, size: int, compute_s: float, efficiency: float | None) -> None:
        self.batch_size.observe(size, tags=self.tags)
        self.compute_ms.observe(compute_s * 1000.0, tags=self.tags)
        if efficiency is not None:
            self.padding_efficiency.observe(efficiency, tags=self.tags)
            self.padding_efficiency_last.set(efficiency, tags=self.tags)

    def observe_wait(self, queue_s: float, batch_wait_s: float) -> None:
        self.queue_ms.observe(queue_s * 1000.0, tags=self.tags)
        self.batch_wait_ms.observe(batch_wait_s * 1000.0, tags=self.tags)

    def observe_engine(self, info: dict[str, Any]) -> None:
        fell_back = bool(info.get("fallback_reason"))
        if fell_back:
            self.fallbacks.inc(tags=self.tags)
        self.on_fallback.set(1.0 if fell_back else 0.0, tags=self.tags)

    def observe_rejection(self, status: int) -> None:
        self.rejected.inc(tags={**self.tags, "status": str(status)})

    def observe_cache(self, hits: int, misses: int) -> None:
        if hits:
            self.cache_lookups.inc(hits, tags={**self.tags, "result": "hit"})
        if misses:
            self.cache_lookups.inc(misses, tags={**self.tags, "result": "miss"})

    def observe_switch(self, outcome: str) -> None:
        self.switches.inc(tags={**self.tags, "outcome": outcome})


# (metric name, description, the GpuSample field it reads); `None` readings (a MIG slice, a board without the
# sensor) are left out, never exported as zeros.
GPU_GAUGES = (
    ("inferops_gpu_utilisation_percent", "GPU utilisation (%), NVML.", "utilisation_percent"),
    ("inferops_gpu_memory_used_bytes", "GPU memory in use (bytes), NVML.", "memory_used_bytes"),
    ("inferops_gpu_memory_total_bytes", "GPU memory on the board (bytes), NVML.", "memory_total_bytes"),
    ("inferops_gpu_temperature_celsius", "GPU core temperature (C), NVML.", "temperature_c"),
    ("inferops_gpu_power_watts", "GPU board power draw (W), NVML.", "power_w"),
)
GPU_GAUGE_DESCRIPTIONS = {metric: description for metric, description, _ in GPU_GAUGES}
GPU_THROTTLED = "inferops_gpu_throttled"
GPU_TAG_KEYS = ("gpu", "name")


def gpu_gauge_values(samples: Sequence[GpuSample]) -> list[tuple[str, dict[str, str], float]]:
    """What a GPU replica exports: (metric, tags, value) per reading its board gives; throttling as one 0/1 series
    per known reason, when the board reports reasons at all."""
    out: list[tuple[str, dict[str, str], float]] = []
    for sample in samples:
        tags = {"gpu": str(sample.index), "name": sample.name}
        for metric, _, attr in GPU_GAUGES:
            value = getattr(sample, attr)
            if value is not None:
                out.append((metric, tags, float(value)))
        if sample.throttle_reasons is not None:
            for reason in THROTTLE_REASONS.values():
                out.append(
                    (GPU_THROTTLED, {**tags, "reason": reason}, float(reason in sample.throttle_reasons))
                )
    return out


class GpuExporter:
    """A GPU replica's own GPUs as Prometheus gauges on Ray's metrics endpoint, refreshed every `period_s` in a
    daemon thread. `start()` on a machine without a usable GPU starts nothing and returns the reason."""

    def __init__(
        self, period_s: float = GPU_SAMPLE_PERIOD_S, read: Callable[[], list[GpuSample]] = own_gpus
    ) -> None:
        self.period_s = period_s
        self.read = read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gauges: dict[str, Any] = {}

    def _gauge(self, metric: str) -> Any:
        from ray.serve.metrics import Gauge

        if metric not in self._gauges:
            keys = (*GPU_TAG_KEYS, "reason") if metric == GPU_THROTTLED else GPU_TAG_KEYS
            self._gauges[metric] = Gauge(
                metric,
                description=GPU_GAUGE_DESCRIPTIONS.get(
                    metric, "1 while the GPU's clocks are held back for the reason."
                ),
                tag_keys=keys,  # type: ignore[arg-type]
            )
        return self._gauges[metric]

    def export_once(self) -> int:
        """Read the GPUs and set the gauges; the number of series set."""
        values = gpu_gauge_values(self.read())
        for metric, tags, value in values:
            self._gauge(metric).set(value, tags=tags)
        return len(values)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.export_once()
            except (
                Exception
            ) as exc:  # a failed NVML read must not take the replica down; the next one may work
                log.warning("GPU gauges not refreshed: %s", exc)
            self._stop.wait(self.period_s)

    def start(self) -> str | None:
        available, reason = gpu_status()
        if not available:
            return reason
        self._thread = threading.Thread(target=self._run, name="gpu-gauges", daemon=True)
        self._thread.start()
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.period_s + 1)
