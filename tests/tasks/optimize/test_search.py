"""What the search outcome promotes when the serving level ran: the in-process champion with the endpoint's knobs,
or, when the endpoint judges the SLA and the champion met it at no rate there, nothing."""

from __future__ import annotations

from tasks.optimize.search import SearchOutcome
from tasks.optimize.serving_search import KneeTrial, SearchRun, ServingConfig, ServingLevel
from tasks.optimize.trials import Trial
from tasks.optimize.validation import CandidateResult

START = ServingConfig(2, 1, 32, 5.0)
BEST = ServingConfig(2, 1, 8, 5.0)
PARAMS = {
    "variant": "onnx-int8-dynamic",
    "replicas": 2,
    "intra_op_threads": 1,
    "batch": 32,
    "cache_entries": 0,
}


def _outcome(confirmation: KneeTrial, judges_sla: bool) -> SearchOutcome:
    searched = [
        KneeTrial(START, "ok", 60.0, 70.0, 0.0, number=0, variant="onnx-fp32"),
        KneeTrial(BEST, "ok", 90.0, 80.0, 0.0, number=1, variant="onnx-fp32"),
    ]
    level = ServingLevel(
        "minilm", "onnx-fp32", START, SearchRun("tpe", searched), confirmation, "what serves now", judges_sla
    )
    champion = CandidateResult(
        "onnx-int8-dynamic", "quantization", PARAMS, Trial((300.0,), (150.0,)), 0.99, 0.98, "cosine", True
    )
    return SearchOutcome(results=[champion], serving=level)


def test_a_confirmed_champion_is_promoted_with_the_knobs_of_its_knee() -> None:
    met = KneeTrial(BEST, "ok", 150.0, 60.0, 0.0, number=2, variant="onnx-int8-dynamic")
    outcome = _outcome(met, judges_sla=True)
    assert outcome.refusal == "" and outcome.champion is not None
    assert outcome.champion.params == {**PARAMS, "batch": 8}


def test_a_champion_meeting_the_sla_at_no_rate_on_a_judging_endpoint_is_not_promoted() -> None:
    too_slow = KneeTrial(BEST, "ok", 0.0, 400.0, 0.0, number=2, variant="onnx-int8-dynamic")
    refused = _outcome(too_slow, judges_sla=True)
    assert refused.model_champion is not None and refused.champion is None
    assert refused.refusal == (
        "onnx-int8-dynamic passed in process, but on the endpoint onnx-int8-dynamic with r2-t1-b8-w5ms met the SLA "
        "at no rate: the SLA is judged there, per request, so it is not promoted"
    )
    # where the in-process screen judged the SLA (the model level went first), it keeps its in-process knobs
    screened = _outcome(too_slow, judges_sla=False)
    assert screened.refusal == "" and screened.champion is not None and screened.champion.params == PARAMS
