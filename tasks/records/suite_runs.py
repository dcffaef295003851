"""MLflow records of suite runs (experiment `inferops-bench`) and named baselines fetched back for comparison."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient

from tasks.decision import decision_rows, markdown_table
from tasks.measure.bottlenecks import render_markdown as breakdown_md
from tasks.measure.loadgen import LoadResult
from tasks.measure.suites import StabilityResult, StressResult, SuiteResult
from tasks.measure.suites import render_markdown as suite_md
from tasks.measure.system_metrics import hardware_info
from tasks.records.names import (
    BENCH_EXPERIMENT,
    TAG_ACCELERATOR,
    TAG_BASELINE,
    TAG_MODEL,
    TAG_SHA256,
    TAG_SUITE,
    TAG_VARIANT,
)
from tasks.records.runs import RunRecord, log_run
from tasks.records.store import configure, ensure_experiment

EXPERIMENT = BENCH_EXPERIMENT
# Points of the percentile curve written to the table artifact (the HDR iterator's own ticks are too many).
TABLE_PERCENTILES: tuple[float, ...] = (0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100)


class BaselineNotFound(LookupError):
    """No run carries the baseline tag asked for."""


@dataclass(frozen=True)
class Baseline:
    """A named baseline read back from MLflow."""

    name: str
    run_id: str
    suite: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


def percentile_table(load: LoadResult) -> list[dict[str, float]]:
    """Rows (percentile, latency ms, count below) from the HDR histogram of every answered request."""
    hist = load.histogram
    total = hist.get_total_count()
    rows = []
    for p in TABLE_PERCENTILES:
        value_ms = hist.get_value_at_percentile(p) / 1000.0 if total else float("nan")
        rows.append({"percentile": p, "latency_ms": value_ms, "count": float(round(total * p / 100.0))})
    return rows


def _plot_histogram(load: LoadResult, title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = load.histogram
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    values = [
        (it.value_iterated_to / 1000.0, it.count_added_in_this_iter_step)
        for it in hist.get_recorded_iterator()
    ]
    if values:
        ax1.bar([v for v, _ in values], [c for _, c in values], width=max(v for v, _ in values) / 200 or 0.01)
    ax1.set_xlabel("latency (ms)")
    ax1.set_ylabel("requests")
    ax1.set_title("latency histogram")
    points = [
        (it.percentile_level_iterated_to, it.value_iterated_to / 1000.0)
        for it in hist.get_percentile_iterator(5)
    ]
    points = [(p, v) for p, v in points if p < 100.0]
    if points:
        ax2.plot([1.0 / (1.0 - p / 100.0) for p, _ in points], [v for _, v in points], marker=".")
        ax2.set_xscale("log")
        ticks = [1, 2, 10, 100, 1000]
        ax2.set_xticks(ticks, ["0%", "50%", "90%", "99%", "99.9%"])
    ax2.set_xlabel("percentile")
    ax2.set_ylabel("latency (ms)")
    ax2.set_title("HDR percentile distribution")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _plot_stress(result: StressResult) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = sorted(result.steps, key=lambda s: s.rate_rps)
    ok = [s for s in steps if s.ok]
    bad = [s for s in steps if not s.ok]
    ax.plot([s.throughput_rps for s in steps], [s.p99_ms for s in steps], color="grey", lw=0.8)
    ax.scatter([s.throughput_rps for s in ok], [s.p99_ms for s in ok], color="tab:green", label="meets SLA")
    ax.scatter([s.throughput_rps for s in bad], [s.p99_ms for s in bad], color="tab:red", label="breaks SLA")
    ax.axhline(result.sla_p99_ms, ls="--", color="k", lw=0.8, label=f"SLA P99 {result.sla_p99_ms:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("achieved throughput (req/s)")
    ax.set_ylabel("P99 latency (ms)")
    ax.set_title(f"latency vs throughput — knee {result.knee_rps:.3g} req/s offered")
    ax.legend()
    fig.tight_layout()
    return fig


def _params(
    result: SuiteResult, model: str, variant: str, sha256: str, batching: str | None, replicas: int | None
) -> dict[str, Any]:
    hw = hardware_info()
    params: dict[str, Any] = {
        "model": model,
        "variant": variant,
        "sha256": sha256,
        "batching": batching or "unknown",
        "replicas": replicas if replicas is not None else "unknown",
        "url": result.url,
        "sla_p99_ms": result.sla_p99_ms,
        "max_error_rate": result.max_error_rate,
        "response_cache": result.response_cache,
        **{f"hardware_{k}": v for k, v in hw.items()},
    }
    if result.load is not None:
        params.update(
            {
                "load_mode": result.load.mode,
                "offered_rps": result.load.offered_rps,
                "duration_s": round(result.load.duration_s, 2),
                "concurrency_cap": result.load.concurrency,
            }
        )
    return params


def suite_record(
    result: SuiteResult,
    *,
    model: str,
    variant: str = "unknown",
    sha256: str = "unknown",
    batching: str | None = None,
    replicas: int | None = None,
    baseline: str | None = None,
    run_name: str | None = None,
    extra_params: dict[str, Any] | None = None,
    accelerator: str | None = None,
) -> RunRecord:
    """One suite run as a record: tags to find it by, params, metrics, verdicts, percentiles, plots and tables.
    `accelerator` is what the served replica computes on, as the endpoint reports it (a GPU's name, or "cpu")."""
    tags = {TAG_SUITE: result.suite, TAG_MODEL: model, TAG_VARIANT: variant, TAG_SHA256: sha256}
    if accelerator:
        tags[TAG_ACCELERATOR] = accelerator
    if baseline:
        tags[TAG_BASELINE] = baseline
    metrics = {k.replace(".", "_"): v for k, v in result.metrics().items()}
    metrics["passed"] = 1.0 if result.passed else 0.0
    report = suite_md(result)
    if result.breakdown is not None:
        report += "\n" + breakdown_md(result.breakdown)
    if result.system is not None:
        report += (
            f"\n- GPU: {result.system.gpu}\n- Prometheus: {result.system.prometheus_status}\n"
            f"- Replica memory from metrics: {result.system.replica_memory_status}\n"
        )
    checks = decision_rows(result.decisions)
    record = RunRecord(
        run_name or f"{result.suite}-{model}-{variant}",
        EXPERIMENT,
        tags=tags,
        params=_params(result, model, variant, sha256, batching, replicas) | (extra_params or {}),
        metrics=dict(metrics),
        texts={"report.md": report},
        tables={"verdicts.json": {k: [r[k] for r in checks] for k in checks[0]} if checks else {}},
    )
    if result.load is not None and result.load.histogram.get_total_count():
        rows = percentile_table(result.load)
        record.tables["latency_percentiles.json"] = {k: [r[k] for r in rows] for k in rows[0]}
        shown = [
            {"percentile": f"{r['percentile']:g}", "latency (ms)": f"{r['latency_ms']:.3f}"} for r in rows
        ]
        record.texts["latency_percentiles.md"] = markdown_table(shown)
        # the full histogram, HDR-encoded, so a later comparison can merge or re-read it exactly
        record.texts["latency.hdr"] = result.load.histogram.encode().decode("ascii")
        record.figures["latency_histogram.png"] = _plot_histogram(
            result.load, f"{result.suite} — {model} {variant}"
        )
    if isinstance(result, StressResult) and result.steps:
        record.tables["stress_steps.json"] = {
            "phase": [s.phase for s in result.steps],
            "rate_rps": [s.rate_rps for s in result.steps],
            "p99_ms": [s.p99_ms for s in result.steps],
            "error_rate": [s.error_rate for s in result.steps],
            "throughput_rps": [s.throughput_rps for s in result.steps],
            "ok": [s.ok for s in result.steps],
        }
        record.figures["latency_vs_throughput.png"] = _plot_stress(result)
    if isinstance(result, StabilityResult) and result.system is not None:
        series = result.system.rss_series()
        record.tables["rss_series.json"] = {
            "t_s": [t for t, _ in series],
            "rss_mb": [b / 2**20 for _, b in series],
        }
    return record


def log_suite_run(result: SuiteResult, *, model: str, **meta: Any) -> str:
    """Record one suite run in `inferops-bench`; return its run id (see `suite_record` for what it holds)."""
    return log_run(suite_record(result, model=model, **meta))


def save_baseline(name: str, result: SuiteResult, *, model: str = "unknown", **meta: Any) -> str:
    """Record `result` as the named baseline (a run tagged `inferops.baseline=<name>`); return its run id."""
    if not name or not name.strip():
        raise ValueError("a baseline needs a non-empty name, e.g. 'minilm-onnx-int8-v1'")
    return log_suite_run(result, model=model, baseline=name, run_name=f"baseline-{name}", **meta)


def get_baseline(name: str) -> Baseline:
    """The most recent run tagged `inferops.baseline=<name>`; BaselineNotFound lists the names that exist."""
    experiment_id = ensure_experiment(EXPERIMENT)
    client = MlflowClient(configure())
    escaped = name.replace("'", "\\'")
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_BASELINE}` = '{escaped}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        known = sorted(
            {
                r.data.tags[TAG_BASELINE]
                for r in client.search_runs(
                    [experiment_id], filter_string=f"tags.`{TAG_BASELINE}` != ''", max_results=200
                )
            }
        )
        raise BaselineNotFound(
            f"no baseline named {name!r} in experiment {EXPERIMENT!r}; known baselines: {known or 'none'}; "
            "record one with save_baseline(name, result, model=...)"
        )
    run = runs[0]
    return Baseline(
        name=name,
        run_id=run.info.run_id,
        suite=run.data.tags.get(TAG_SUITE, ""),
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
    )
