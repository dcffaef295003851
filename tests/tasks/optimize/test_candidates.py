"""What the cycle tries: knob stages stacked on the best configuration, within the cores."""

from __future__ import annotations

import pytest

from tasks.optimize.candidates import CONTROL_STAGE, Candidate, knob_stage, knob_values, plan_candidates
from tasks.policy import default_policy


def test_knob_stages_cover_threads_replicas_batch_and_cache_within_the_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opt = default_policy().optimization.model_copy(
        update={"replica_options": [1, 2, 4], "cache_options": [0, 128]}
    )
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    pairs = knob_values("parallelization", [1, 2], opt)
    assert {(p["replicas"], p["intra_op_threads"]) for p in pairs} == {(1, 1), (1, 2), (2, 1), (2, 2), (4, 1)}
    best = Candidate("v", "v", "quantization", "model", 1, 8)
    names = [c.name for c in knob_stage(best, "parallelization", pairs)]
    assert names == [
        "v+threads=2+batch=8",
        "v+threads=1+batch=8+replicas=2",
        "v+threads=2+batch=8+replicas=2",
        "v+threads=1+batch=8+replicas=4",
    ]  # the current configuration is not re-measured
    on_top = Candidate(
        "v+threads=1+batch=8+replicas=2", "v", "parallelization", "parallelization", 1, 8, replicas=2
    )
    (cached,) = knob_stage(on_top, "caching", knob_values("caching", None, opt))
    assert (cached.replicas, cached.cache_entries, cached.optimization_type) == (2, 128, "caching")
    assert cached.serving_knobs() == {
        "intra_op_threads": 1,
        "max_batch_size": 8,
        "num_replicas": 2,
        "cache_entries": 128,
    }
    with pytest.raises(ValueError, match="unknown knob stage"):
        knob_stage(best, "sharding", [])


def test_naming_what_serves_now_adds_it_first_as_an_a_a_control_with_its_own_knobs() -> None:
    served = Candidate("onnx-fp32", "onnx-fp32", "baseline", "baseline", 1, 32, replicas=2)
    plan = plan_candidates("digits-cnn", served, ["onnx-int8-dynamic", "onnx-fp32"])
    assert [(c.name, c.stage) for c in plan] == [("onnx-fp32", CONTROL_STAGE), ("onnx-int8-dynamic", "model")]
    assert plan[0].serving_knobs() == served.serving_knobs() == plan[1].serving_knobs()
    # not named: no control
    assert all(c.stage == "model" for c in plan_candidates("digits-cnn", served, ["onnx-int8-dynamic"]))
    with pytest.raises(
        ValueError, match=r"\['onnx-int9'\] are not available .* onnx-fp32 \(what serves now\)"
    ):
        plan_candidates("digits-cnn", served, ["onnx-int9"])
