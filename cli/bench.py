"""`inferops bench {benchmark,load,stress,stability}`: measure an endpoint, print verdicts, record in MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from tasks.measure.loadgen import DEFAULT_ENDPOINT_PATH
from tasks.policy import default_policy

app = typer.Typer(
    no_args_is_help=True, help="Measure a serving endpoint: benchmark, load, stress (knee), stability."
)

URL = typer.Option(..., "--url", help="Base URL (e.g. http://127.0.0.1:8000) or full endpoint URL.")
MODEL = typer.Option("minilm", "--model", help="Model name sent in each request body.")
API_KEY = typer.Option(
    None, "--api-key", help="Sent as 'Authorization: Bearer KEY' (default: the first of INFEROPS_API_KEYS)."
)
PATH = typer.Option(DEFAULT_ENDPOINT_PATH, "--path", help="Endpoint path appended to a bare base URL.")
VARIANT = typer.Option("unknown", "--variant", help="Variant served (recorded in MLflow).")
SHA = typer.Option("unknown", "--sha256", help="sha256 of the served artifact (recorded in MLflow).")
RECORD = typer.Option(
    True, "--record/--no-record", help="Record the run in MLflow experiment inferops-bench."
)
BASELINE = typer.Option(None, "--baseline", help="Also tag the run as this named baseline.")
PIDS = typer.Option([], "--pid", help="Server process id(s) to sample (repeatable).")
RAY_REPLICAS = typer.Option(
    False, "--ray-replicas", help="Sample every Ray Serve replica process on this host."
)
PROM = typer.Option(None, "--prometheus-url", help="Prometheus endpoint to scrape (e.g. Ray's metrics port).")
METRICS_URL = typer.Option(
    None,
    "--metrics-url",
    help="Replica memory from a Ray node's /metrics or a Prometheus scraping the nodes (replicas on other hosts).",
)
TIMEOUT = typer.Option(
    10.0, "--timeout", help="Per-request timeout in seconds (a timeout counts as an error)."
)
JSON = typer.Option(False, "--json", help="print the result as JSON (for scripts) instead of tables")
CACHE = typer.Option(
    False,
    "--use-cache/--no-cache",
    help="Let the response cache answer (default: every request sends Cache-Control: no-cache, so the "
    "figures are the model's, as in the measurement flow).",
)


@dataclass
class _Ctx:
    spec: Any
    console: Any
    model: str
    as_json: bool = False
    accelerator: str | None = (
        None  # what the endpoint says its replica computes on (an inferops endpoint only)
    )


def _fail(console: Any, message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(2)


def _prepare(
    url: str,
    model: str,
    api_key: str | None,
    path: str,
    pids: list[int],
    ray_replicas: bool,
    prometheus_url: str | None,
    timeout: float,
    use_cache: bool,
) -> _Ctx:
    """Validate the endpoint with one preflight request before any load; build the target spec."""
    from rich.console import Console

    from tasks.measure.loadgen import EndpointError, LoadInputError, preflight
    from tasks.measure.suites import cache_mode, embeddings_target
    from tasks.measure.system_metrics import replica_pids

    console = Console()
    watched = list(pids) + (replica_pids() if ray_replicas else [])
    try:
        spec = embeddings_target(
            url, model, api_key, use_cache=use_cache, path=path, timeout_s=timeout, pids=watched
        )
        check = preflight(spec.url, spec.body_factory(0), headers=spec.headers, timeout_s=timeout)
    except (LoadInputError, EndpointError) as exc:
        raise _fail(console, str(exc)) from None
    spec.prometheus_url = prometheus_url
    timing = ", ".join(f"{k} {v:.1f} ms" for k, v in check.server_timing.items()) or "no Server-Timing header"
    cache = f"response cache {cache_mode(spec.headers)}"
    console.print(
        f"preflight: {spec.url} answered {check.status} in {check.latency_ms:.1f} ms ({timing}); {cache}"
    )
    return _Ctx(spec, console, model, accelerator=served_accelerator(url, model, api_key))


def served_accelerator(url: str, model: str, api_key: str | None) -> str | None:
    """The accelerator an inferops endpoint reports for `model` (a GPU's name, or "cpu"); None from an endpoint
    that is not inferops' (a plain HTTP service has no model metadata), so the run is recorded without it."""
    import httpx

    from serving.client import InferopsClient

    try:
        with InferopsClient(url, api_key) as client:
            return str(client.metadata(model).get("accelerator") or "") or None
    except (httpx.HTTPError, ValueError):
        return None


def _progress(console: Any, label: str) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    )


def _print_result(ctx: _Ctx, result: Any) -> None:
    from rich.table import Table

    from tasks.decision import decision_rows
    from tasks.measure.bottlenecks import render_markdown as breakdown_md

    console = ctx.console
    if result.load is not None:
        s = result.load.summary()
        table = Table(title=f"{result.suite}: {result.url}")
        for col in (
            "offered req/s",
            "throughput",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "errors",
            "error rate",
        ):
            table.add_column(col, justify="right")
        table.add_row(
            f"{s['offered_rps'] or 0:.1f}",
            f"{s['throughput_rps']:.1f}",
            f"{s['p50_ms']:.1f}",
            f"{s['p90_ms']:.1f}",
            f"{s['p99_ms']:.1f}",
            f"{s['p99.9_ms']:.1f}",
            f"{result.load.failed} / {result.load.scheduled}",
            f"{result.load.error_rate:.2%}",
        )
        console.print(table)
        counts = ", ".join(f"{status}: {n}" for status, n in sorted(s["status_counts"].items()))
        console.print(f"status counts: {counts}", highlight=False)
    steps = getattr(result, "steps", None)
    if steps:
        st = Table(title="stress search")
        for col in ("phase", "rate req/s", "p99 ms", "error rate", "throughput", "meets SLA"):
            st.add_column(col, justify="right")
        for step in steps:
            st.add_row(
                step.phase,
                f"{step.rate_rps:.3g}",
                f"{step.p99_ms:.1f}",
                f"{step.error_rate:.2%}",
                f"{step.throughput_rps:.1f}",
                "yes" if step.ok else "no",
            )
        console.print(st)
    vt = Table(title="verdicts")
    for col in ("check", "threshold", "observed", "verdict", "reason"):
        vt.add_column(col)
    for row in decision_rows(result.decisions):
        colour = {"pass": "green", "fail": "red"}.get(row["verdict"], "yellow")
        vt.add_row(
            row["check"],
            row["threshold"],
            row["observed"],
            f"[{colour}]{row['verdict']}[/{colour}]",
            row["reason"],
        )
    console.print(vt)
    if result.breakdown is not None:
        console.print(breakdown_md(result.breakdown))
    if result.system is not None:
        console.print(
            f"GPU: {result.system.gpu}; Prometheus: {result.system.prometheus_status}; "
            f"replica memory from metrics: {result.system.replica_memory_status}"
        )


def _record(ctx: _Ctx, result: Any, record: bool, variant: str, sha256: str, baseline: str | None) -> None:
    if not record:
        return
    from tasks.records.suite_runs import log_suite_run

    run_id = log_suite_run(
        result,
        model=ctx.model,
        variant=variant,
        sha256=sha256,
        baseline=baseline,
        accelerator=ctx.accelerator,
    )
    ctx.console.print(f"recorded in MLflow experiment inferops-bench, run {run_id}")


def _finish(ctx: _Ctx, result: Any, record: bool, variant: str, sha256: str, baseline: str | None) -> None:
    if ctx.as_json:
        from cli.render import print_json
        from tasks.decision import decision_rows

        print_json(
            {
                "suite": result.suite,
                "passed": result.passed,
                "response_cache": result.response_cache,
                "metrics": result.metrics(),
                "checks": decision_rows(result.decisions),
            }
        )
    else:
        _print_result(ctx, result)
    _record(ctx, result, record, variant, sha256, baseline)
    if not result.passed:
        raise typer.Exit(1)


def _check_rate(rate: float | None, duration: float | None) -> None:
    """Reject a non-positive rate or duration before anything is sent."""
    from rich.console import Console

    from tasks.measure.loadgen import LoadInputError, check_rate

    try:
        check_rate(1.0 if rate is None else rate, 1.0 if duration is None else duration)
    except LoadInputError as exc:
        raise _fail(Console(), str(exc)) from None


@app.command("benchmark")
def benchmark(
    url: str = URL,
    model: str = MODEL,
    rate: float | None = typer.Option(
        None, "--rate", help="Requests/s (default: policy rollout_gate.target_qps)."
    ),
    duration: float | None = typer.Option(
        None, "--duration", help="Seconds (default: policy test_suite.benchmark)."
    ),
    api_key: str | None = API_KEY,
    path: str = PATH,
    pid: list[int] = PIDS,
    ray_replicas: bool = RAY_REPLICAS,
    prometheus_url: str | None = PROM,
    timeout: float = TIMEOUT,
    use_cache: bool = CACHE,
    as_json: bool = JSON,
    variant: str = VARIANT,
    sha256: str = SHA,
    record: bool = RECORD,
    baseline: str | None = BASELINE,
) -> None:
    """Fixed open-loop load: the baseline figures (per release)."""
    from tasks.measure.suites import run_benchmark

    _check_rate(rate, duration)
    ctx = _prepare(url, model, api_key, path, pid, ray_replicas, prometheus_url, timeout, use_cache)
    ctx.as_json = as_json
    with _progress(ctx.console, "benchmark") as bar:
        task = bar.add_task("benchmark", total=1.0)
        result = run_benchmark(
            ctx.spec,
            policy=default_policy(),
            rate=rate,
            duration_s=duration,
            progress=lambda f: bar.update(task, completed=f),
        )
    _finish(ctx, result, record, variant, sha256, baseline)


@app.command("load")
def load(
    url: str = URL,
    model: str = MODEL,
    rate: float | None = typer.Option(
        None, "--rate", help="Mean requests/s (default: policy target_qps); with --trace, rescales it."
    ),
    duration: float | None = typer.Option(
        None, "--duration", help="Seconds (default: policy test_suite.load); truncates a trace."
    ),
    trace: Path | None = typer.Option(
        None, "--trace", help="CSV of request timestamps to replay (e.g. the Azure LLM trace)."
    ),
    trace_column: str = typer.Option("TIMESTAMP", "--trace-column", help="Timestamp column of the trace."),
    speedup: float = typer.Option(
        1.0, "--speedup", help="Replay the trace this many times faster (ignored with --rate)."
    ),
    api_key: str | None = API_KEY,
    path: str = PATH,
    pid: list[int] = PIDS,
    ray_replicas: bool = RAY_REPLICAS,
    prometheus_url: str | None = PROM,
    timeout: float = TIMEOUT,
    use_cache: bool = CACHE,
    as_json: bool = JSON,
    variant: str = VARIANT,
    sha256: str = SHA,
    record: bool = RECORD,
    baseline: str | None = BASELINE,
) -> None:
    """The expected load for a duration (weekly): Poisson at --rate, or a replayed --trace."""
    from rich.console import Console

    from tasks.measure.loadgen import LoadInputError, load_trace
    from tasks.measure.suites import run_load

    _check_rate(rate, duration)
    offsets = None
    if trace is not None:
        window = duration if duration is not None else default_policy().test_suite.load.duration_s
        try:
            offsets = load_trace(
                trace, column=trace_column, speedup=speedup, target_rps=rate, max_duration_s=window
            )
        except LoadInputError as exc:
            raise _fail(Console(), str(exc)) from None
        if not offsets:
            raise _fail(
                Console(),
                f"trace {trace} has no arrivals in the first {window} s; raise --speedup or --duration",
            )
    ctx = _prepare(url, model, api_key, path, pid, ray_replicas, prometheus_url, timeout, use_cache)
    ctx.as_json = as_json
    with _progress(ctx.console, "load") as bar:
        task = bar.add_task("load", total=1.0)
        result = run_load(
            ctx.spec,
            policy=default_policy(),
            rate=rate,
            duration_s=duration,
            trace_offsets=offsets,
            progress=lambda f: bar.update(task, completed=f),
        )
    _finish(ctx, result, record, variant, sha256, baseline)


@app.command("stress")
def stress(
    url: str = URL,
    model: str = MODEL,
    rate: float | None = typer.Option(
        None, "--rate", help="Start rate of the ramp (default: policy test_suite.stress.start_rps)."
    ),
    max_rate: float | None = typer.Option(
        None, "--max-rate", help="Highest rate tried (default: policy max_rps)."
    ),
    duration: float | None = typer.Option(
        None, "--duration", help="Seconds per step (default: policy step_duration_s)."
    ),
    sla_ms: float | None = typer.Option(
        None, "--sla-ms", help="P99 SLA (default: policy rollout_gate.sla_p99_ms)."
    ),
    api_key: str | None = API_KEY,
    path: str = PATH,
    pid: list[int] = PIDS,
    ray_replicas: bool = RAY_REPLICAS,
    prometheus_url: str | None = PROM,
    use_cache: bool = CACHE,
    as_json: bool = JSON,
    variant: str = VARIANT,
    sha256: str = SHA,
    record: bool = RECORD,
    baseline: str | None = BASELINE,
) -> None:
    """Find the knee: the highest rate whose P99 meets the SLA with error rate under the maximum (monthly)."""
    from tasks.measure.suites import StressStep, run_stress

    _check_rate(rate, duration)
    _check_rate(max_rate, None)
    ctx = _prepare(url, model, api_key, path, pid, ray_replicas, prometheus_url, 10.0, use_cache)
    ctx.as_json = as_json

    def show(step: StressStep) -> None:
        mark = "[green]ok[/green]" if step.ok else "[red]over[/red]"
        ctx.console.print(f"  {step.phase:6} {step.rate_rps:8.3g} req/s  {mark}  {step.reason}")

    with ctx.console.status("stress search (ramp, then bisection)..."):
        result = run_stress(
            ctx.spec,
            policy=default_policy(),
            start_rps=rate,
            max_rps=max_rate,
            step_duration_s=duration,
            sla_ms=sla_ms,
            on_step=show,
        )
    ctx.console.print(f"[bold]knee: {result.knee_rps:.3g} req/s[/bold] ({result.stopped_reason})")
    _finish(ctx, result, record, variant, sha256, baseline)


@app.command("stability")
def stability(
    url: str = URL,
    model: str = MODEL,
    rate: float | None = typer.Option(None, "--rate", help="Requests/s (default: policy target_qps)."),
    duration: float | None = typer.Option(
        None, "--duration", help="Seconds (default: policy test_suite.stability, 72 h)."
    ),
    leak_mb_per_h: float | None = typer.Option(
        None, "--leak-mb-per-h", help="Leak threshold (default: policy)."
    ),
    api_key: str | None = API_KEY,
    path: str = PATH,
    pid: list[int] = PIDS,
    ray_replicas: bool = RAY_REPLICAS,
    prometheus_url: str | None = PROM,
    metrics_url: str | None = METRICS_URL,
    timeout: float = TIMEOUT,
    use_cache: bool = CACHE,
    as_json: bool = JSON,
    variant: str = VARIANT,
    sha256: str = SHA,
    record: bool = RECORD,
    baseline: str | None = BASELINE,
) -> None:
    """Sustained load: availability and memory-leak verdicts from the server processes' RSS (and GPU memory)."""
    from tasks.measure.suites import run_stability

    _check_rate(rate, duration)
    if not pid and not ray_replicas and not metrics_url:
        from rich.console import Console

        raise _fail(
            Console(),
            "stability watches the server's memory: pass --pid PID (repeatable), --ray-replicas (this host) or "
            "--metrics-url URL (a Ray node's /metrics or a Prometheus scraping the nodes)",
        )
    ctx = _prepare(url, model, api_key, path, pid, ray_replicas, prometheus_url, timeout, use_cache)
    ctx.as_json = as_json
    ctx.spec.replica_metrics_url = metrics_url
    if not ctx.spec.pids and not metrics_url:
        raise _fail(
            ctx.console,
            "no server process found to watch (--ray-replicas found none); pass --pid PID or --metrics-url URL",
        )
    with _progress(ctx.console, "stability") as bar:
        task = bar.add_task("stability", total=1.0)
        result = run_stability(
            ctx.spec,
            policy=default_policy(),
            rate=rate,
            duration_s=duration,
            leak_threshold_mb_per_h=leak_mb_per_h,
            progress=lambda f: bar.update(task, completed=f),
        )
    _finish(ctx, result, record, variant, sha256, baseline)
