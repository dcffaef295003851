"""Hot model switch under open-loop load at twice the measured knee: is any request lost?

    .venv/bin/python benchmarks/switch_under_load.py [--ingress auto|proxy|haproxy] [--factor 2] [--json]

Serves `--model` at `--from` on a local Ray (one replica, the policy's serving defaults), measures its knee with the
stress search (tasks.measure.suites.find_knee: the highest open-loop rate whose P99 meets the SLA), then drives
open-loop load at `--factor` x the knee for `--duration` seconds and hot-switches the model to `--to`
`--switch-at` seconds in. Every request may wait `--answer-timeout-s` for its answer: above the knee requests
queue, and the question is whether any is dropped (5xx, reset, timeout), not how slow the queue is. Printed: the
knee, the load, requests sent / answered 200 / lost, served by the old and the new model, and P99 during the switch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script, this file's folder comes first on sys.path and its name would shadow the `serving` package.
    sys.path[0] = str(ROOT)

from serving import routes  # noqa: E402 (after the path fix above)
from serving.client import InferopsClient, auth_headers  # noqa: E402
from serving.network import free_port  # noqa: E402
from tasks.policy import default_policy  # noqa: E402

KEY = "switch-bench-key"
EXAMPLES = 64


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from serving.app import ingress_env
    from serving.variants import ensure_variant

    old = ensure_variant(args.model, args.from_variant)
    new = ensure_variant(args.model, args.to_variant)  # built before the load, so the switch only loads it
    env, chosen = ingress_env(args.ingress)
    os.environ.update(env)  # before Ray starts: Serve reads the ingress mode when its controller boots

    import ray
    from ray import serve

    from serving.app import run_local
    from tasks.measure.disruption import run_across, switch_outcome
    from tasks.measure.suites import find_knee, oip_body_factory, step_line

    policy = default_policy()
    body = oip_body_factory(args.model, {}, EXAMPLES)

    ray.init(address="local", include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        app_args = policy.app_args(model=args.model, variant=args.from_variant, api_keys=[KEY])
        url = run_local(app_args, name="switch-bench", port=free_port())
        headers = {**auth_headers(KEY), "Cache-Control": "no-cache"}
        endpoint = url + routes.INFER.path(args.model)
        with InferopsClient(url, KEY, timeout_s=60) as client:
            client.wait_ready()
            knee = find_knee(
                endpoint,
                body,
                policy=policy,
                headers=headers,
                start_rps=args.start_rps,
                step_factor=1.6,
                step_duration_s=args.step_s,
                bisect_steps=2,
                time_budget_s=180,
                on_step=lambda step: log(step_line(step)),
            )
            if knee.knee_rps <= 0:
                raise SystemExit(f"no rate met the SLA ({knee.stopped_reason}); lower --start-rps")
            rate = args.factor * knee.knee_rps
            log(f"knee {knee.knee_rps:.1f} req/s; switching under {rate:.1f} req/s")
            run = run_across(
                endpoint,
                body,
                rate=rate,
                duration_s=args.duration,
                event=lambda: client.switch(args.model, variant=args.to_variant),
                event_name="switch",
                event_at_s=args.switch_at,
                headers=headers,
                timeout_s=args.answer_timeout_s,
                # every request may wait in Serve's queue: the generator itself drops none
                concurrency_cap=int(rate * args.duration) + 1,
                read_sha256=True,
            )
            served_after = client.metadata(args.model)["sha256"]
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
    outcome = switch_outcome(run.samples, run.event, old.sha256, new.sha256)
    event = run.event
    reply = event.result if event is not None else None
    drained_s = max(s.answered for s in run.samples) - run.started - args.duration
    return {
        "model": args.model,
        "from": args.from_variant,
        "to": args.to_variant,
        "ingress": chosen,
        "sla_p99_ms": knee.sla_p99_ms,
        "knee_rps": knee.knee_rps,
        "knee_stopped": knee.stopped_reason,
        "factor": args.factor,
        "rate_rps": rate,
        "duration_s": args.duration,
        "switch_at_s": args.switch_at,
        "switch_status": reply.status if reply is not None else None,
        "switch_verdict": reply.body.get("verdict") if reply is not None else None,
        "switch_error": event.error if event is not None else None,
        "switch_started_s": run.rel(event.started) if event is not None else None,
        "serving_after": served_after,
        "backlog_drained_s": drained_s,
        "generator_send_lag_p99_ms": run.load.generator.send_lag_p99_ms,
        **outcome.as_dict(),
    }


def render(r: dict[str, Any]) -> str:
    """The figures as a plain-text table (what the other benchmarks print)."""
    rows = [
        ("knee (P99 <= SLA)", f"{r['knee_rps']:.1f} req/s (SLA {r['sla_p99_ms']:g} ms)"),
        ("load rate", f"{r['rate_rps']:.1f} req/s ({r['factor']:g} x knee) for {r['duration_s']:g} s"),
        ("requests sent", f"{r['sent']}"),
        ("answered 200", f"{r['answered_ok']}"),
        ("lost", f"{r['lost']}" + (f" {r['lost_by_status']}" if r["lost"] else "")),
        (f"served by old ({r['from']})", f"{r['by_old']}"),
        (f"served by new ({r['to']})", f"{r['by_new']}"),
        ("served by neither", f"{r['by_other']}"),
        ("old after new", f"{r['old_after_new']}"),
        ("switch", f"HTTP {r['switch_status']} {r['switch_verdict']} in {r['switch_s']:.2f} s"),
        ("p99 during the switch", f"{r['p99_during_switch_ms']:.0f} ms"),
        ("p99 overall", f"{r['p99_ms']:.0f} ms"),
        ("backlog drained", f"{r['backlog_drained_s']:.1f} s after the load stopped"),
    ]
    width = max(len(k) for k, _ in rows)
    head = (
        f"hot switch {r['model']} {r['from']} -> {r['to']} under open-loop load at {r['factor']:g} x the knee "
        f"(one replica, {r['ingress']} ingress, this 2-core box)"
    )
    verdict = "no request lost" if r["clean"] else "REQUESTS LOST OR MIXED"
    return "\n".join([head, *(f"  {k:{width}}  {v}" for k, v in rows), f"verdict: {verdict}"])


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--from", dest="from_variant", default="onnx-fp32")
    parser.add_argument("--to", dest="to_variant", default="onnx-int8-dynamic")
    parser.add_argument("--ingress", default="auto", choices=["auto", "proxy", "haproxy"])
    parser.add_argument("--factor", type=float, default=2.0, help="load rate as a multiple of the knee")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of load above the knee")
    parser.add_argument("--switch-at", type=float, default=1.0, help="seconds into the load to switch")
    parser.add_argument("--start-rps", type=float, default=10.0, help="where the knee search starts")
    parser.add_argument("--step-s", type=float, default=3.0, help="seconds per knee-search step")
    parser.add_argument("--answer-timeout-s", type=float, default=180.0)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    out = sys.stdout
    # Ray's driver prints cluster errors to sys.stdout: keep stdout for the table or the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        result = measure(args)
    print(json.dumps(result, indent=2) if args.json else render(result), file=out, flush=True)


if __name__ == "__main__":
    main()
