"""The pre-implementation checklist (seed 7.3.9)."""

from __future__ import annotations

import pytest

from tasks.optimize.checklist import CHECKLIST_ITEMS, ChecklistFailed, check_checklist


def test_checklist_stops_on_first_missing_item() -> None:
    facts = {name: (True, "ok") for name in CHECKLIST_ITEMS}
    assert len(check_checklist(facts)) == len(CHECKLIST_ITEMS)
    facts["rollback prepared"] = (False, "no previous champion artifact recorded")
    with pytest.raises(ChecklistFailed, match="'rollback prepared' is not met: no previous champion"):
        check_checklist(facts)


def test_an_a_a_control_in_the_plan_is_reviewed_without_a_matrix_score() -> None:
    """Naming what serves now adds it as an A/A control, of the baseline's type, which the decision matrix never
    scores (it is never promoted): the plan is reviewed all the same, and says so."""
    from pathlib import Path

    from tasks.measure.bottlenecks import breakdown
    from tasks.optimize.baseline import CycleBaseline
    from tasks.optimize.candidates import Candidate, plan_candidates
    from tasks.optimize.checklist import cycle_facts
    from tasks.optimize.trials import Measured, Trial
    from tasks.policy import default_policy

    served = Candidate("onnx-fp32", "onnx-fp32", "baseline", "baseline", 1, 8)
    measured = Measured(
        Trial((100.0, 101.0), (5.0, 5.0)), "accuracy", 0.97, None, "cpu", "ab" * 32, Path("m"), {}, 0.1
    )
    base = CycleBaseline("digits-cnn", served, measured, 0.97, "1")
    bottleneck = breakdown(10.0, {"compute": 9.0})
    policy = default_policy()
    control_only = plan_candidates("digits-cnn", served, ["onnx-fp32"])
    ok, evidence = cycle_facts(base, bottleneck, control_only, policy, None, None, None, None)[
        "plan reviewed"
    ]
    assert ok and evidence == (
        "0 candidates, each type scored by the decision matrix, and 1 A/A control (what serves now, never promoted)"
    )
    with_one = plan_candidates("digits-cnn", served, ["onnx-fp32", "onnx-int8-dynamic"])
    ok, evidence = cycle_facts(base, bottleneck, with_one, policy, None, None, None, None)["plan reviewed"]
    assert ok and evidence.startswith("1 candidates, each type scored")
    unscored = [Candidate("x", "onnx-fp32", "baseline", "model", 1, 8)]  # a baseline-typed candidate to serve
    ok, evidence = cycle_facts(base, bottleneck, unscored, policy, None, None, None, None)["plan reviewed"]
    assert not ok and evidence == "empty plan or types without matrix scores: ['baseline']"
