"""Gate checks against replicas that misbehave on demand: slow, leaking, serving the wrong artifact.

The fake replica is the real HTTP layer (`serving.api.create_api`: auth, limits, hostile-input handling) over
a tiny numpy model whose latency, memory leak and reported sha256 come from a control file the test edits.
A user cannot make a real replica leak on demand; everything else here is real HTTP on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    from servers import subprocess_server
except ModuleNotFoundError:  # the fake replica's own process runs as `python -m tests.test_gate_checks`
    from tests.servers import subprocess_server

from tasks import gate_checks
from tasks.gate import decide
from tasks.policy import default_policy

API_KEY = "gate-test-key"
FAKE_MODEL = "fake-cnn"
FEATURES = 4
HEALTHY_SHA = "a" * 64


# ---- the fake replica -------------------------------------------------------------------------------------------


def build_fake_app(control: Path) -> Any:
    """`create_api` over a fake InferenceService driven by `control` (JSON, re-read on every request)."""
    from serving.api import Limits, RequestRejected, create_api
    from serving.auth import RateLimiter, build_keyring

    ep = default_policy().endpoint
    weights = np.random.default_rng(0).standard_normal((FEATURES, 3)).astype(np.float32)

    class FakeService:
        limits = Limits(max_body_bytes=ep.max_body_bytes, max_items=ep.max_items, max_text_chars=ep.max_text_chars)
        keyring = build_keyring([API_KEY])
        limiter: RateLimiter | None = None
        held: list[bytes] = []

        def cfg(self) -> dict[str, Any]:
            return dict(json.loads(control.read_text()))

        def model_names(self) -> list[str]:
            return [self.cfg()["model"]]

        async def health(self) -> dict[str, Any]:
            cfg = self.cfg()
            return {"ready": True, "models": [{"name": cfg["model"], "sha256": cfg["sha256"]}]}

        async def metadata(self, model: str) -> dict[str, Any]:
            cfg = self.cfg()
            if model != cfg["model"]:
                raise RequestRejected(404, "model", "known_model", [cfg["model"]], f"unknown model {model!r}")
            return {
                "name": model,
                "kind": "tensor",
                "input_shape": [None, FEATURES],
                "sha256": cfg["sha256"],
                "variant": "fake",
                "provider": "CPUExecutionProvider",
            }

        async def infer_tensor(self, model: str, array: np.ndarray, use_cache: bool = True) -> dict[str, Any]:
            cfg = self.cfg()
            await asyncio.sleep(cfg["latency_ms"] / 1000.0)  # concurrent: slow answers, not a queue
            if cfg.get("leak_kb"):
                self.held.append(b"\x01" * (cfg["leak_kb"] * 1024))  # filled, so the pages are resident
            logits = array.reshape(len(array), -1) @ weights
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            return {
                "outputs": probs / probs.sum(axis=1, keepdims=True),
                "sha256": cfg["sha256"],
                "variant": "fake",
                "timings": {"compute": cfg["latency_ms"] / 1000.0},
            }

        async def embed(self, model: str, texts: list[str], truncate: bool, use_cache: bool = True) -> dict[str, Any]:
            raise RequestRejected(400, "model", "text_model", None, f"{model} is not an embedding model")

        async def switch_model(self, model: str, request: dict[str, Any]) -> dict[str, Any]:
            cfg = self.cfg()
            cfg["latency_ms"] = cfg.get("fast_ms", 5.0)
            cfg["switches"] = [*cfg.get("switches", []), request]
            control.write_text(json.dumps(cfg))
            return {"verdict": "switched", "model": model, "request": request}

        async def rollback_model(self, model: str) -> dict[str, Any]:
            return await self.switch_model(model, {"rollback": True})

        async def configure_model(self, model: str, patch: dict[str, Any], num_replicas: int | None) -> dict[str, Any]:
            return {"persisted": False, "reason": "the fake replica has no serving knobs"}

    return create_api(FakeService())


@dataclass
class FakeReplica:
    url: str
    pid: int
    control: Path

    def set(self, **changes: Any) -> None:
        cfg = json.loads(self.control.read_text())
        cfg.update(changes)
        self.control.write_text(json.dumps(cfg))

    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.control.read_text()))


@contextmanager
def fake_replica(
    tmp: Path, *, latency_ms: float = 5.0, leak_kb: int = 0, sha256: str = HEALTHY_SHA, model: str = FAKE_MODEL
) -> Iterator[FakeReplica]:
    """Start the fake replica serving `model` in a subprocess on a free loopback port; stop it on exit."""
    control = tmp / f"fake-replica-{time.monotonic_ns()}.json"
    cfg = {"model": model, "latency_ms": latency_ms, "fast_ms": latency_ms, "leak_kb": leak_kb, "sha256": sha256}
    control.write_text(json.dumps(cfg))
    args = ["--control", str(control)]
    with subprocess_server("tests.test_gate_checks", args, "/v2/health/live", startup_s=60) as (url, proc):
        yield FakeReplica(url, proc.pid, control)


# ---- tests -----------------------------------------------------------------------------------------------------


POLICY = default_policy()
GATE = POLICY.rollout_gate


def _perf(client: gate_checks.ServingClient) -> gate_checks.ItemResult:
    item, _ = gate_checks.performance_item(
        client,
        FAKE_MODEL,
        sla_p99_ms=GATE.sla_p99_ms,
        target_qps=GATE.target_qps,
        duration_s=2.0,
        max_error_rate=POLICY.test_suite.max_error_rate,
        utilisation_ceiling=POLICY.rollout_risk.utilisation_scale_out,
    )
    return item


def _stability(client: gate_checks.ServingClient, duration_s: float = 3.0) -> gate_checks.ItemResult:
    return gate_checks.stability_item(
        client,
        FAKE_MODEL,
        duration_s=duration_s,
        rate_rps=GATE.target_qps,
        availability_min=GATE.items["stability"].minimum,
        leak_slope_mb_per_h=float(POLICY.test_suite.stability.leak_slope_mb_per_h or 0),
        sla_p99_ms=GATE.sla_p99_ms,
    )


def _by_name(item: gate_checks.ItemResult) -> dict[str, dict[str, object]]:
    return {str(c["check"]): c for c in item.checks}


def test_healthy_fake_meets_performance_and_stability(tmp_path: Path) -> None:
    """The control case: the same checks pass on a replica that behaves, so the failures below mean something."""
    with fake_replica(tmp_path) as rep:
        client = gate_checks.ServingClient(rep.url, API_KEY)
        perf = _perf(client)
        stab = _stability(client)
    assert perf.observed >= GATE.items["performance"].minimum, perf.checks
    assert stab.observed >= GATE.items["stability"].minimum, stab.checks
    gpu = _by_name(perf)["GPU utilisation at target rate"]
    assert gpu["passed"] is None and "not applicable" in str(gpu["reason"])
    leak = next(c for c in stab.checks if "leak" in str(c["check"]))
    assert leak["passed"] is True, leak


def test_slow_replica_fails_performance(tmp_path: Path) -> None:
    slow_ms = GATE.sla_p99_ms * 2.5
    with fake_replica(tmp_path, latency_ms=slow_ms) as rep:
        item = _perf(gate_checks.ServingClient(rep.url, API_KEY))
    p99 = _by_name(item)[f"P99 at {GATE.target_qps:g} req/s (open loop)"]
    assert p99["passed"] is False and float(p99["observed"]) >= slow_ms  # type: ignore[arg-type]
    assert p99["threshold"] == GATE.sla_p99_ms
    assert item.observed < GATE.items["performance"].minimum


def test_leaking_replica_fails_stability(tmp_path: Path) -> None:
    with fake_replica(tmp_path, leak_kb=1024) as rep:
        item = _stability(gate_checks.ServingClient(rep.url, API_KEY))
    leak = next(c for c in item.checks if "RSS" in str(c["check"]))
    assert leak["passed"] is False, leak
    assert float(leak["observed"]) > float(leak["threshold"])  # type: ignore[arg-type]
    availability = _by_name(item)["availability"]
    assert availability["passed"] is True  # it answers everything, and still fails: the leak decides
    assert item.observed < GATE.items["stability"].minimum


def test_sha_mismatch_fails_security_and_hostile_corpus_is_refused(tmp_path: Path) -> None:
    with fake_replica(tmp_path, sha256="b" * 64) as rep:
        client = gate_checks.ServingClient(rep.url, API_KEY)
        item = gate_checks.security_item(
            client, [FAKE_MODEL], {FAKE_MODEL: (HEALTHY_SHA, "registry fake-cnn@challenger")}, POLICY.endpoint, files=["model.onnx"]
        )
        still_live = client.live()
    checks = _by_name(item)
    sha = checks[f"artifact sha256 {FAKE_MODEL}"]
    assert sha["passed"] is False and "!=" in str(sha["reason"])
    others = [c for name, c in checks.items() if name != f"artifact sha256 {FAKE_MODEL}"]
    assert all(c["passed"] for c in others), [c for c in others if not c["passed"]]
    assert checks["no key: infer"]["observed"] == 401
    assert checks["hostile: oversized body"]["observed"] == 413
    assert still_live
    verdict = decide(
        [
            gate_checks.ItemResult("functional", 1.0),
            gate_checks.ItemResult("performance", 1.0),
            gate_checks.ItemResult("stability", 1.0),
            item,
        ],
        GATE,
    )
    assert not verdict.passed and "security" in verdict.reason


def test_functional_item_on_fake(tmp_path: Path) -> None:
    with fake_replica(tmp_path) as rep:
        item = gate_checks.functional_item(
            gate_checks.ServingClient(rep.url, API_KEY), [FAKE_MODEL, "not-served"], model_load_rate_min=GATE.completion.model_load_rate_min
        )
    checks = _by_name(item)
    assert checks["model load rate"]["passed"] is False and "not-served" in str(checks["model load rate"]["reason"])
    assert all(checks[f"infer {FAKE_MODEL} batch={n}"]["passed"] for n in gate_checks.FUNCTIONAL_BATCH_SIZES)
    assert checks["multi-model concurrency"]["passed"] is True
    assert item.observed < 1.0


def test_output_sanity_rules() -> None:
    rows = np.eye(3, dtype=np.float32)
    assert gate_checks.output_sanity("text", 3, rows)[0]
    assert not gate_checks.output_sanity("text", 3, rows * 2)[0]
    assert not gate_checks.output_sanity("text", 4, rows)[0]
    bad = rows.copy()
    bad[0, 0] = np.nan
    assert not gate_checks.output_sanity("tensor", 3, bad)[0]


def test_leak_floor_ignores_small_warmup_growth() -> None:
    """A 2 MB bump in a 5 s run extrapolates far above the MB/h limit but is not a leak; 100 MB is."""
    threshold = float(POLICY.test_suite.stability.leak_slope_mb_per_h or 0)
    ts = [i * 0.1 for i in range(50)]
    small = [(t, int(200 * 2**20 + t / 5 * 2 * 2**20)) for t in ts]
    big = [(t, int(200 * 2**20 + t / 5 * 100 * 2**20)) for t in ts]
    assert gate_checks.leak_check("rss", small, threshold)["passed"] is True
    assert gate_checks.leak_check("rss", big, threshold)["passed"] is False


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="fake replica for the gate tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(build_fake_app(args.control), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
