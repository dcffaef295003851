"""What the cycle tries: knob stages stacked on the best configuration, within the cores."""

from __future__ import annotations

import pytest

from tasks.optimize.candidates import Candidate, knob_stage, knob_values
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
