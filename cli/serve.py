"""`inferops serve`: start the Ray Serve application locally, print the URL and an example call, block."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any

import typer


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _metrics_port() -> int | None:
    """The port this node's Ray exports its Prometheus metrics on (None where Ray does not say)."""
    import ray

    node = getattr(ray._private.worker.global_worker, "node", None)  # the connected node, local or joined
    port = getattr(node, "metrics_export_port", None)
    return int(port) if port else None


def serve(
    model: str = typer.Option("minilm", help="zoo name, onnx:/abs/path.onnx, or models:/NAME@alias"),
    variant: str | None = typer.Option(None, help="variant to serve (default onnx-fp32)"),
    extra_model: list[str] = typer.Option(
        [], help="more models to serve, 'name' or 'name:variant' (repeatable)"
    ),
    host: str = typer.Option("127.0.0.1", help="bind address"),
    port: int = typer.Option(8000, help="HTTP port"),
    ingress: str | None = typer.Option(
        None, help="auto | proxy | haproxy (default: INFEROPS_INGRESS or auto)"
    ),
    max_batch_size: int | None = typer.Option(
        None, help="dynamic batching: most requests per batch (default: policy serving.max_batch_size)"
    ),
    batch_wait_timeout_s: float | None = typer.Option(
        None,
        help="dynamic batching: longest wait to fill a batch (default: policy serving.batch_wait_timeout_s)",
    ),
    intra_op_threads: int | None = typer.Option(
        None, help="ONNX Runtime intra-op threads per replica (default: policy serving.intra_op_threads)"
    ),
    num_cpus: int | None = typer.Option(None, help="CPUs for the local Ray (default: all)"),
    metrics_port: int | None = typer.Option(
        None,
        help="port of the local Ray's Prometheus metrics (Serve's request counts, replica memory), for a "
        "Prometheus to scrape (default: a port Ray picks)",
    ),
    replicas: int | None = typer.Option(None, help="replicas of the model's deployment (default 1)"),
    cache_entries: int | None = typer.Option(
        None, help="response-cache entries per replica, 0 = off (default: policy serving.cache_entries)"
    ),
    allow_anonymous: bool = typer.Option(
        False,
        "--allow-anonymous",
        help="development only: answer inference requests that carry no key (admin routes still need one)",
    ),
) -> None:
    """Serve a model over HTTP (Open Inference Protocol v2 + OpenAI embeddings) until Ctrl-C."""
    from serving.settings import get_settings
    from tasks.policy import default_policy

    settings = get_settings()
    policy = default_policy()
    from serving.app import ingress_env
    from serving.auth import (
        API_KEYS_FILE,
        KeyFileError,
        access_from_settings,
        default_key_file,
        ensure_local_keys,
    )

    # Keys are required: the configured ones (INFEROPS_API_KEYS / INFEROPS_ADMIN_KEYS or their files), else a pair
    # made in the data dir on the first run. --allow-anonymous opens inference only, and makes no inference key.
    try:
        made = [] if allow_anonymous else ensure_local_keys(settings).files
        if allow_anonymous and not settings.admin_keys and not settings.admin_keys_file:
            made = [p for p in ensure_local_keys(settings).files if "admin" in p.name]
        access = access_from_settings(allow_anonymous=allow_anonymous)
    except (KeyFileError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if not access.inference.enabled and not allow_anonymous:
        typer.echo(
            "error: no API key is configured and none could be made: set INFEROPS_API_KEYS, or pass "
            "--allow-anonymous to serve without keys (development only)",
            err=True,
        )
        raise typer.Exit(code=2)

    try:
        env, chosen = ingress_env(ingress or settings.ingress)
    except (ValueError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    os.environ.update(env)  # before Ray starts: the controller and raylet read these at boot

    import ray
    from ray import serve as ray_serve

    from cli.render import ray_line, serve_banner
    from serving.app import PRODUCTION_APP, run_local
    from serving.auth import client_key
    from serving.client import InferopsClient

    knobs = policy.serving.default_knobs()
    if model.startswith("models:/"):
        # A registry version serves with the knobs the optimization cycle measured it with (its tags).
        from tasks.records import registry

        name, _, alias = model.removeprefix("models:/").partition("@")
        ref = registry.alias_version(name, alias) if alias else None
        knobs = registry.version_knobs(name, ref.version if ref else None, knobs)
    # The policy's serving defaults, the registry version's measured knobs over them, the command line over both.
    given = {
        "max_batch_size": max_batch_size,
        "batch_wait_timeout_s": batch_wait_timeout_s,
        "intra_op_threads": intra_op_threads,
        "num_replicas": replicas,
        "cache_entries": cache_entries,
    }
    served: dict[str, Any] = {**knobs, **{k: v for k, v in given.items() if v is not None}}
    args = policy.app_args(
        **served, model=model, variant=variant, extra_models=extra_model, allow_anonymous=allow_anonymous
    )
    # SIGTERM (a service manager, `kill`) stops like Ctrl-C: Serve and the local Ray are shut down, exit status 0.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # INFEROPS_RAY_ADDRESS joins that cluster (its CPUs are its own); unset, a Ray of this process's own, never
        # whichever cluster happens to run on this host (which a bare ray.init() would join).
        joined = bool(settings.ray_address)
        ray.init(
            address=settings.ray_address or "local",
            num_cpus=None if joined else num_cpus,
            include_dashboard=False,
            configure_logging=False,
            _metrics_export_port=None if joined else metrics_port,
        )
        url = run_local(args, name=PRODUCTION_APP, host=host, port=port)
        keyed = access.inference.enabled
        with InferopsClient(url, client_key()) as client:
            meta = client.metadata(client.models()[0])
        key_file = settings.api_keys_file or default_key_file(settings, API_KEYS_FILE)
        files = [key_file] if not settings.api_keys and key_file.exists() else []
        replicas_n = int(args.get("num_replicas") or 1)
        for line in serve_banner(url, meta, replicas_n, chosen, keyed, files, made):
            typer.echo(line)
        typer.echo(
            ray_line(
                str(ray.get_runtime_context().gcs_address),
                joined,
                _metrics_port(),
                token_auth=os.environ.get("RAY_AUTH_MODE", "").lower() == "token",
            )
        )
        typer.echo("Ctrl-C to stop.")
        # SIGTERM (a service manager, `kill`) stops like Ctrl-C: Serve and the local Ray are shut down, exit
        # status 0. Set once Ray and Serve are up: Ray's own handler, installed as they start, aborts the process.
        signal.signal(signal.SIGTERM, _interrupt)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        typer.echo("stopping")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abort the shutdown half-way
        with contextlib.suppress(Exception):
            ray_serve.shutdown()
        ray.shutdown()
    typer.echo("stopped")
