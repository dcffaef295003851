"""Custom serving metrics on Ray's Prometheus endpoint (via `ray.serve.metrics`), one tag set per model."""

from __future__ import annotations

from typing import Any

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
