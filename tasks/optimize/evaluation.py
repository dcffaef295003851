"""Measure variants in-process: throughput and latency per batch size, accuracy and retention vs FP32."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving.engines import load_engine
from serving.variants import VariantUnavailable, ensure_variant, list_variants
from serving.zoo import EvalResult, get_model, minilm_dir
from tasks.decision import Decision

# Measurement sizes: enough calls per batch size that p99 means something, small enough for a 2-core box.
BENCH_ITEMS = 256
BENCH_MIN_CALLS = 20
QUICK_ITEMS = 64
QUICK_MIN_CALLS = 5
WARMUP_CALLS = 2
DEFAULT_BATCH_SIZES = (1, 8, 32)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BatchTiming:
    """Sequential in-process calls at one batch size."""

    batch: int
    items_per_s: float
    p50_ms: float
    p99_ms: float
    calls: int
    started: float = (
        0.0  # wall clock (time.time) of the first timed call: replicas' windows are compared on it
    )
    ended: float = 0.0


@dataclass
class VariantReport:
    """One row of the variants table."""

    model: str
    variant: str
    provider: str = "-"
    sha256: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[int, BatchTiming] = field(default_factory=dict)
    evaluation: EvalResult | None = None
    retention: float | None = None
    stsb_retention: float | None = None
    decision: Decision | None = None
    skipped: str | None = None

    def best_throughput(self) -> float:
        return max((t.items_per_s for t in self.timings.values()), default=0.0)


def measure_batches(
    infer: Callable[[Any], Any],
    inputs: Sequence[Any] | np.ndarray,
    batch: int,
    min_calls: int,
    before_timing: Callable[[], None] | None = None,
) -> BatchTiming:
    """Time sequential calls of `batch` items over `inputs` (cycled so there are at least `min_calls`);
    `before_timing` runs after the warm-up calls (a cache under test is emptied there)."""
    n = max(len(inputs), batch * min_calls)
    idx = [i % len(inputs) for i in range(n)]
    chunks = [idx[i : i + batch] for i in range(0, n, batch)]

    def take(chunk: list[int]) -> Any:
        return inputs[np.asarray(chunk)] if isinstance(inputs, np.ndarray) else [inputs[i] for i in chunk]

    for chunk in chunks[:WARMUP_CALLS]:
        infer(take(chunk))
    if before_timing is not None:
        before_timing()
    lat = []
    wall_start = time.time()
    start = time.perf_counter()
    for chunk in chunks:
        t0 = time.perf_counter()
        infer(take(chunk))
        lat.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    ms = np.asarray(lat) * 1e3
    return BatchTiming(
        batch,
        n / total,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 99)),
        len(chunks),
        wall_start,
        wall_start + total,
    )


def retention_decision(metric: str, observed: float, baseline: float, threshold: float) -> Decision:
    """Retention = metric / FP32 metric, passed when it reaches the policy threshold."""
    retention = observed / baseline if baseline else 0.0
    ok = retention >= threshold
    reason = (
        f"{metric} {observed:.4f} vs FP32 {baseline:.4f}: retention {retention:.4f} "
        f"{'>=' if ok else '<'} threshold {threshold:.4f}"
    )
    return Decision(f"{metric} retention", threshold, retention, ok, reason)


def measure_variant(
    model: str,
    variant: str,
    *,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    quick: bool = False,
    stsb_path: str | Path | None = None,
    baseline: EvalResult | None = None,
    retention_threshold: float | None = None,
    intra_op_threads: int | None = None,
    allow_spinning: bool = True,
) -> VariantReport:
    """Build (or reuse) the variant, time it at each batch size and score it with the zoo's evaluator; with a
    `baseline`, decide retention against `retention_threshold` (policy optimization.accuracy_retention_threshold)."""
    report = VariantReport(model, variant)
    try:
        art = ensure_variant(model, variant)
    except VariantUnavailable as exc:
        report.skipped = str(exc)
        return report
    engine = load_engine(
        art.path, expected_sha256=art.sha256, intra_op_threads=intra_op_threads, allow_spinning=allow_spinning
    )
    spec = engine.spec
    report.provider, report.sha256, report.info = engine.provider, engine.sha256, engine.info
    inputs = spec.example_inputs(QUICK_ITEMS if quick else BENCH_ITEMS)
    for b in batch_sizes:
        report.timings[b] = measure_batches(
            engine.infer, inputs, b, QUICK_MIN_CALLS if quick else BENCH_MIN_CALLS
        )
    kwargs = {"stsb_path": stsb_path} if stsb_path is not None else {}
    report.evaluation = spec.evaluate(engine, **kwargs)
    if baseline is not None:
        if retention_threshold is None:
            raise ValueError("a retention decision against a baseline needs the policy's retention_threshold")
        report.decision = retention_decision(
            report.evaluation.metric, report.evaluation.value, baseline.value, retention_threshold
        )
        report.retention = report.decision.observed
        ours, ref = (
            report.evaluation.details.get("stsb_spearman_x100"),
            baseline.details.get("stsb_spearman_x100"),
        )
        if ours is not None and ref:
            report.stsb_retention = ours / ref
    del engine
    gc.collect()
    return report


def compare_variants(
    model: str,
    variants: Sequence[str] | None = None,
    *,
    retention_threshold: float,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    quick: bool = False,
    stsb_path: str | Path | None = None,
    intra_op_threads: int | None = None,
    allow_spinning: bool = True,
    progress: Progress | None = None,
) -> list[VariantReport]:
    """Measure each variant; the FP32 reference (torch-fp32, or onnx-fp32 for onnx:PATH) is measured first."""
    say = progress or (lambda _msg: None)
    available = list_variants(model)
    chosen = list(variants) if variants else available
    unknown = [v for v in chosen if v not in available]
    if unknown:
        raise ValueError(
            f"variant(s) {', '.join(unknown)} do not apply to {model}; choose from {', '.join(available)}"
        )
    reference = "torch-fp32" if "torch-fp32" in available else "onnx-fp32"
    order = [reference] + [v for v in chosen if v != reference]
    reports: list[VariantReport] = []
    baseline: EvalResult | None = None
    for i, name in enumerate(order, start=1):
        say(f"[{i}/{len(order)}] {model} / {name}: building and measuring")
        rep = measure_variant(
            get_model(model).name if not model.startswith("onnx:") else model,
            name,
            batch_sizes=batch_sizes,
            quick=quick,
            stsb_path=stsb_path,
            baseline=baseline,
            retention_threshold=retention_threshold,
            intra_op_threads=intra_op_threads,
            allow_spinning=allow_spinning,
        )
        if name == reference and rep.evaluation is not None:
            baseline = rep.evaluation
            rep = measure_reference_decision(rep, baseline, retention_threshold)
        if rep.skipped:
            say(f"    skipped: {rep.skipped}")
        else:
            ev = rep.evaluation
            say(
                f"    {rep.provider}: best {rep.best_throughput():.1f} items/s, {ev.metric if ev else '?'} "
                f"{ev.value if ev else float('nan'):.4f}"
            )
        reports.append(rep)
    return reports


def measure_reference_decision(rep: VariantReport, baseline: EvalResult, threshold: float) -> VariantReport:
    """The reference keeps 100% of itself by definition; say so rather than leave the column blank."""
    rep.decision = retention_decision(baseline.metric, baseline.value, baseline.value, threshold)
    rep.retention = rep.decision.observed
    if "stsb_spearman_x100" in baseline.details:
        rep.stsb_retention = 1.0
    return rep


def measure_sentence_transformers(
    texts: Sequence[str], batch: int = 1, min_calls: int = BENCH_MIN_CALLS
) -> BatchTiming:
    """The naive baseline: sentence-transformers' own `encode`, FP32 PyTorch, `batch` texts per call."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)

    def encode(chunk: list[str]) -> Any:
        return st.encode(chunk, batch_size=batch, show_progress_bar=False, normalize_embeddings=True)

    return measure_batches(encode, list(texts), batch, min_calls)


def table_rows(reports: Sequence[VariantReport], batch_sizes: Sequence[int]) -> list[dict[str, str]]:
    """Human-readable cells for the variants table (pure: the CLI and the benchmark render them)."""
    sizes = "/".join(str(b) for b in batch_sizes)
    rows = []
    for r in reports:
        row = {"variant": r.variant, "provider": r.provider.replace("ExecutionProvider", "")}
        if r.skipped:
            row["accuracy"] = f"skipped: {r.skipped}"
            rows.append(row)
            continue
        threads = r.info.get("intra_op_threads")
        row["thr"] = str(threads) if threads is not None else "-"
        timings = [r.timings.get(b) for b in batch_sizes]
        row[f"items/s @{sizes}"] = "/".join(f"{t.items_per_s:.0f}" if t else "-" for t in timings)
        row[f"p50 ms @{sizes}"] = "/".join(f"{t.p50_ms:.1f}" if t else "-" for t in timings)
        row[f"p99 ms @{sizes}"] = "/".join(f"{t.p99_ms:.1f}" if t else "-" for t in timings)
        ev = r.evaluation
        row["accuracy"] = f"{ev.metric} {ev.value:.4f}" if ev else "-"
        if ev and "fidelity_min_cosine" in ev.details:
            row["accuracy"] += f" (min {ev.details['fidelity_min_cosine']:.4f})"
        if ev and "stsb_spearman_x100" in ev.details:
            row["STS-B x100"] = f"{ev.details['stsb_spearman_x100']:.2f}"
            row["STS-B ret."] = f"{r.stsb_retention:.4f}" if r.stsb_retention is not None else "-"
        row["retention"] = f"{r.retention:.4f}" if r.retention is not None else "-"
        row["verdict"] = r.decision.verdict if r.decision else "-"
        rows.append(row)
    return rows
