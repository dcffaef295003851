"""Gate checks against replicas that misbehave on demand: slow, leaking, serving the wrong artifact.

The fake replica (tests/fake_replica.py) is the real HTTP layer over a model that misbehaves on demand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.client import InferopsClient
from tasks.policy import default_policy
from tasks.release import checks as gate_checks
from tasks.release.gate import decide
from tests.fake_replica import API_KEY, FAKE_MODEL, HEALTHY_SHA, fake_replica

# ---- tests -----------------------------------------------------------------------------------------------------


POLICY = default_policy()
GATE = POLICY.rollout_gate


def _perf(client: InferopsClient) -> gate_checks.ItemResult:
    item, _ = gate_checks.performance_item(
        client,
        FAKE_MODEL,
        sla_p99_ms=GATE.sla_p99_ms,
        target_qps=GATE.target_qps,
        duration_s=2.0,
        max_error_rate=POLICY.test_suite.max_error_rate,
        utilisation_ceiling=POLICY.rollout_risk.utilisation_scale_out,
        warmup_s=POLICY.rollout_gate.performance_warmup_s,
    )
    return item


def _stability(client: InferopsClient, duration_s: float = 3.0) -> gate_checks.ItemResult:
    return gate_checks.stability_item(
        client,
        FAKE_MODEL,
        duration_s=duration_s,
        rate_rps=GATE.target_qps,
        availability_min=GATE.items["stability"].minimum,
        leak_slope_mb_per_h=POLICY.test_suite.stability.leak_slope_mb_per_h,
        leak_min_growth_mb=POLICY.test_suite.stability.leak_min_growth_mb,
        sla_p99_ms=GATE.sla_p99_ms,
    )


def _by_name(item: gate_checks.ItemResult) -> dict[str, dict[str, object]]:
    return {c.name: c for c in item.checks}


def test_healthy_fake_meets_performance_and_stability(tmp_path: Path) -> None:
    """The control case: the same checks pass on a replica that behaves, so the failures below mean something."""
    with fake_replica(tmp_path) as rep:
        client = InferopsClient(rep.url, API_KEY)
        perf = _perf(client)
        stab = _stability(client)
    assert perf.observed >= GATE.items["performance"].minimum, perf.checks
    assert stab.observed >= GATE.items["stability"].minimum, stab.checks
    gpu = _by_name(perf)["GPU utilisation at target rate"]
    assert gpu.passed is None and "not applicable" in str(gpu.reason)
    leak = next(c for c in stab.checks if "leak" in str(c.name))
    assert leak.passed is True, leak


def test_slow_replica_fails_performance(tmp_path: Path) -> None:
    slow_ms = GATE.sla_p99_ms * 2.5
    with fake_replica(tmp_path, latency_ms=slow_ms) as rep:
        item = _perf(InferopsClient(rep.url, API_KEY))
    p99 = _by_name(item)[f"P99 at {GATE.target_qps:g} req/s (open loop)"]
    assert p99.passed is False and float(p99.observed) >= slow_ms  # type: ignore[arg-type]
    assert p99.threshold == GATE.sla_p99_ms
    assert item.observed < GATE.items["performance"].minimum


def test_leaking_replica_fails_stability(tmp_path: Path) -> None:
    with fake_replica(tmp_path, leak_kb=1024) as rep:
        item = _stability(InferopsClient(rep.url, API_KEY))
    leak = next(c for c in item.checks if "RSS" in str(c.name))
    assert leak.passed is False, leak
    assert float(leak.observed) > float(leak.threshold)  # type: ignore[arg-type]
    availability = _by_name(item)["availability"]
    assert availability.passed is True  # it answers everything, and still fails: the leak decides
    assert item.observed < GATE.items["stability"].minimum


def test_sha_mismatch_fails_security_and_hostile_corpus_is_refused(tmp_path: Path) -> None:
    with fake_replica(tmp_path, sha256="b" * 64) as rep:
        client = InferopsClient(rep.url, API_KEY)
        item = gate_checks.security_item(
            client,
            [FAKE_MODEL],
            {FAKE_MODEL: (HEALTHY_SHA, "registry fake-cnn@challenger")},
            POLICY.endpoint,
            files=["model.onnx"],
        )
        still_live = client.live()
    checks = _by_name(item)
    sha = checks[f"artifact sha256 {FAKE_MODEL}"]
    assert sha.passed is False and "!=" in str(sha.reason)
    others = [c for name, c in checks.items() if name != f"artifact sha256 {FAKE_MODEL}"]
    assert all(c.passed for c in others), [c for c in others if not c.passed]
    assert checks["no key: infer"].observed == 401
    assert checks["hostile: oversized body"].observed == 413
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
            InferopsClient(rep.url, API_KEY),
            [FAKE_MODEL, "not-served"],
            model_load_rate_min=GATE.completion.model_load_rate_min,
        )
    checks = _by_name(item)
    assert checks["model load rate"].passed is False and "not-served" in str(checks["model load rate"].reason)
    assert all(checks[f"infer {FAKE_MODEL} batch={n}"].passed for n in gate_checks.FUNCTIONAL_BATCH_SIZES)
    assert checks["multi-model concurrency"].passed is True
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
    threshold = POLICY.test_suite.stability.leak_slope_mb_per_h
    floor = POLICY.test_suite.stability.leak_min_growth_mb
    ts = [i * 0.1 for i in range(50)]
    small = [(t, int(200 * 2**20 + t / 5 * 2 * 2**20)) for t in ts]
    big = [(t, int(200 * 2**20 + t / 5 * 100 * 2**20)) for t in ts]
    assert gate_checks.leak_check("rss", small, threshold, floor).passed is True
    assert gate_checks.leak_check("rss", big, threshold, floor).passed is False
