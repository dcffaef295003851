"""The cycle's decisions on constructed measurements: noise, SLA, accuracy, fastest-passing, checklist."""

from __future__ import annotations

import pytest

from tasks.optimize.validation import (
    CHECKLIST_ITEMS,
    CandidateResult,
    ChecklistFailed,
    Trial,
    check_checklist,
    failed_candidate,
    fastest_passing,
    marginal_gain_exhausted,
    render_report,
    roi_figures,
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


def test_marginal_gain_and_roi() -> None:
    assert marginal_gain_exhausted(100, 103, OPT)
    assert not marginal_gain_exhausted(100, 150, OPT)
    roi = roi_figures(100, 400, OPT, target_qps=20)
    assert roi["performance_improvement"] == pytest.approx(3.0)
    assert roi["cost_saving_rate"] == pytest.approx(0.75)
    assert roi["cost_per_million_after"] < roi["cost_per_million_before"]


def test_checklist_stops_on_first_missing_item() -> None:
    facts = {name: (True, "ok") for name in CHECKLIST_ITEMS}
    assert len(check_checklist(facts)) == len(CHECKLIST_ITEMS)
    facts["rollback prepared"] = (False, "no previous champion artifact recorded")
    with pytest.raises(ChecklistFailed, match="'rollback prepared' is not met: no previous champion"):
        check_checklist(facts)


def test_report_lists_every_candidate() -> None:
    a = validate(_cand("a", (230, 231, 229), (12, 12, 12), 0.995), BASE, OPT, 100)
    b = validate(_cand("b", (300, 301, 299), (10, 10, 10), 0.9), BASE, OPT, 100)
    checklist = check_checklist({name: (True, "ok") for name in CHECKLIST_ITEMS})
    text = render_report("m", {"throughput": 100}, "model computation", [a, b], a, {"rps": 230}, {"roi": 1.0}, checklist)
    assert "| a | quantization |" in text and "| b | quantization |" in text and "Champion: **a**" in text


def test_knob_stages_cover_threads_replicas_batch_and_cache_within_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.optimize.cycle import Candidate, knob_stage, knob_values
    from tasks.policy import default_policy

    opt = default_policy().optimization.model_copy(update={"replica_options": [1, 2, 4], "cache_options": [0, 128]})
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    pairs = knob_values("parallelization", [1, 2], opt)
    assert {(p["replicas"], p["intra_op_threads"]) for p in pairs} == {(1, 1), (1, 2), (2, 1), (2, 2), (4, 1)}
    best = Candidate("v", "v", "quantization", "model", 1, 8)
    names = [c.name for c in knob_stage(best, "parallelization", pairs)]
    assert names == ["v+threads=2+batch=8", "v+threads=1+batch=8+replicas=2", "v+threads=2+batch=8+replicas=2",
                     "v+threads=1+batch=8+replicas=4"]  # fmt: skip  (the current configuration is not re-measured)
    on_top = Candidate("v+threads=1+batch=8+replicas=2", "v", "parallelization", "parallelization", 1, 8, replicas=2)
    (cached,) = knob_stage(on_top, "caching", knob_values("caching", None, opt))
    assert (cached.replicas, cached.cache_entries, cached.optimization_type) == (2, 128, "caching")
    assert cached.serving_knobs() == {"intra_op_threads": 1, "max_batch_size": 8, "num_replicas": 2, "cache_entries": 128}
    with pytest.raises(ValueError, match="unknown knob stage"):
        knob_stage(best, "sharding", [])
