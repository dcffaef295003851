"""Validation on constructed measurements: noise, SLA, accuracy, fastest-passing, the marginal-gain stop."""

from __future__ import annotations

from tasks.optimize.trials import Trial
from tasks.optimize.validation import (
    CandidateResult,
    control_verdict,
    failed_candidate,
    fastest_passing,
    marginal_gain_exhausted,
    validate,
)
from tasks.policy import load_policy

OPT = load_policy().optimization
BASE = Trial((100.0, 102.0, 98.0), (20.0, 21.0, 19.0))


def _cand(name: str, thr: tuple[float, ...], p99: tuple[float, ...], retention: float) -> CandidateResult:
    return CandidateResult(name, "quantization", {}, Trial(thr, p99), retention, retention, "cosine")


def test_accepts_real_gain_and_rejects_noise_accuracy_and_sla() -> None:
    good = validate(_cand("good", (230, 235, 228), (12, 13, 12), 0.995), BASE, OPT, 100)
    assert good.accepted, good.reason
    noisy = validate(_cand("noisy", (60, 140, 105), (20, 21, 19), 0.999), BASE, OPT, 100)
    assert not noisy.accepted and "spread" in noisy.reason
    lossy = validate(_cand("lossy", (300, 301, 299), (10, 10, 10), 0.96), BASE, OPT, 100)
    assert not lossy.accepted and "retention 0.9600" in lossy.reason
    slow_tail = validate(_cand("tail", (400, 401, 399), (150, 160, 155), 1.0), BASE, OPT, 100)
    assert not slow_tail.accepted and "SLA" in slow_tail.reason


def test_fastest_passing_not_first_passing() -> None:
    first = validate(_cand("first", (230, 231, 229), (12, 12, 12), 0.995), BASE, OPT, 100)
    faster = validate(_cand("faster", (300, 301, 299), (10, 10, 10), 0.994), BASE, OPT, 100)
    broken = failed_candidate("broken", "quantization", {}, "cosine", RuntimeError("export crashed"))
    assert fastest_passing([first, faster, broken]) is faster
    assert not validate(broken, BASE, OPT, 100).accepted
    assert "export crashed" in broken.reason
    assert fastest_passing([broken]) is None


def test_marginal_gain_stop() -> None:
    assert marginal_gain_exhausted(100, 103, OPT)
    assert not marginal_gain_exhausted(100, 150, OPT)


def test_a_p99_per_batch_call_is_recorded_not_judged_when_the_endpoint_judges_the_sla() -> None:
    """Batch 32 on two replicas: 150 ms per batch call in process is no request's latency; the serving level, which
    went first, judges the SLA per request on the endpoint."""
    in_process = validate(_cand("b32", (400, 401, 399), (150, 160, 155), 1.0), BASE, OPT, 100)
    assert not in_process.accepted and "median P99 155.0 ms vs SLA 100" in in_process.reason
    on_endpoint = validate(
        _cand("b32", (400, 401, 399), (150, 160, 155), 1.0), BASE, OPT, 100, sla_on_endpoint=True
    )
    assert on_endpoint.accepted, on_endpoint.reason
    sla = next(c for c in on_endpoint.checks if c.name == "P99 within SLA")
    assert sla.passed is None and sla.observed == 155.0 and "judged on the endpoint" in sla.reason
    # the other checks still judge in process
    lossy = validate(
        _cand("lossy", (400, 401, 399), (150, 160, 155), 0.9), BASE, OPT, 100, sla_on_endpoint=True
    )
    assert not lossy.accepted and "retention 0.9000" in lossy.reason


def test_what_serves_now_measured_again_is_an_a_a_control_never_promoted() -> None:
    """Within the spread it is like for like; far outside (a warm cache against cold candidates) it is a mismatch."""
    alike = control_verdict(_cand("onnx-fp32", (99, 101, 100), (20, 20, 20), 1.0), BASE)
    assert alike.control and not alike.accepted and alike.checks[0].passed is True
    assert abs(alike.gain) <= alike.noise and alike.row()["verdict"] == "A/A control"
    assert alike.reason.startswith(
        "what serves now, measured again as a candidate (A/A control, never promoted)"
    )
    assert alike.reason.endswith("like for like")
    colder = control_verdict(_cand("onnx-fp32", (60, 61, 59), (30, 30, 30), 1.0), BASE)
    assert not colder.accepted and colder.checks[0].passed is False
    assert "throughput -40.0% vs run-to-run spread 4.0%: a measurement mismatch" in colder.reason
    assert fastest_passing([alike, colder]) is None


def test_an_a_a_gap_under_the_floor_is_like_for_like_and_one_over_it_a_mismatch() -> None:
    """On a quiet machine two repeats of four agree within 1%: a +3% gap between two separate measurements is outside
    that spread but under the smallest gain the search acts on (the floor), so it is no mismatch; +8% is."""
    quiet = Trial((100.0, 100.5, 100.2, 99.9), (20.0, 20.0, 20.0, 20.0))
    gap = control_verdict(
        _cand("onnx-fp32", (103.0, 103.2, 103.1, 102.9), (20, 20, 20, 20), 1.0), quiet, 0.05
    )
    assert gap.noise < 0.01 < gap.gain < 0.05 and gap.checks[0].passed is True, gap.reason
    assert "(floor 5%, the smallest gain the search acts on): like for like" in gap.reason
    assert (
        control_verdict(_cand("onnx-fp32", (103.0, 103.2, 103.1, 102.9), (20,) * 4, 1.0), quiet)
        .checks[0]
        .passed
        is False
    )  # without the floor the same gap is a mismatch
    far = control_verdict(
        _cand("onnx-fp32", (108.0, 108.2, 108.1, 107.9), (20, 20, 20, 20), 1.0), quiet, 0.05
    )
    assert far.checks[0].passed is False and far.reason.endswith("a measurement mismatch"), far.reason
