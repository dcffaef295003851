"""The cycle's markdown report."""

from __future__ import annotations

from tasks.optimize.checklist import CHECKLIST_ITEMS, check_checklist
from tasks.optimize.report import render_report
from tasks.optimize.trials import Trial
from tasks.optimize.validation import (
    CandidateResult,
    validate,
)
from tasks.policy import load_policy

OPT = load_policy().optimization
BASE = Trial((100.0, 102.0, 98.0), (20.0, 21.0, 19.0))


def _cand(name: str, thr: tuple[float, ...], p99: tuple[float, ...], retention: float) -> CandidateResult:
    return CandidateResult(name, "quantization", {}, Trial(thr, p99), retention, retention, "cosine")


def test_report_lists_every_candidate() -> None:
    a = validate(_cand("a", (230, 231, 229), (12, 12, 12), 0.995), BASE, OPT, 100)
    b = validate(_cand("b", (300, 301, 299), (10, 10, 10), 0.9), BASE, OPT, 100)
    checklist = check_checklist({name: (True, "ok") for name in CHECKLIST_ITEMS})
    text = render_report(
        "m", {"throughput": 100}, "model computation", [a, b], a, {"rps": 230}, {"roi": 1.0}, checklist
    )
    assert "| a | quantization |" in text and "| b | quantization |" in text and "Champion: **a**" in text


def test_report_shows_the_seeds_expected_gain_beside_the_measured_one_in_a_well_formed_table() -> None:
    a = validate(_cand("a", (230, 231, 229), (12, 12, 12), 0.995), BASE, OPT, 100)
    checklist = check_checklist({name: (True, "ok") for name in CHECKLIST_ITEMS})
    text = render_report(
        "m", {}, "model computation", [a], a, {}, {}, checklist, expected_gain=OPT.expected_gain
    )
    section = text.split("## Candidates", 1)[1].split("## Outcome", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1  # header, rule and rows have the same columns
    header = [c.strip() for c in table[0].strip("|").split("|")]
    row = [c.strip() for c in table[2].strip("|").split("|")]
    low, high = OPT.expected_gain["int8_pruning_distillation"]
    assert row[header.index("gain")] == str(a.row()["gain"])
    assert row[header.index("seed's expected gain")] == f"{low:+.0%} to {high:+.0%}" == "+100% to +300%"


def test_a_champion_the_endpoint_refused_is_named_with_why_nothing_was_promoted() -> None:
    a = validate(_cand("a", (230, 231, 229), (120, 120, 120), 0.995), BASE, OPT, 100, sla_on_endpoint=True)
    checklist = check_checklist({name: (True, "ok") for name in CHECKLIST_ITEMS})
    why = "a passed in process, but on the endpoint a with r1-t1-b8-w5ms met the SLA at no rate"
    text = render_report(
        "m", {}, "serving path", [a], None, {"champion": "unchanged (fp32)", "refusal": why}, {}, checklist
    )
    assert a.accepted and f"Nothing promoted: {why}. The previous champion keeps serving." in text
    plain = render_report("m", {}, "serving path", [a], None, {"champion": "unchanged (fp32)"}, {}, checklist)
    assert (
        "No candidate passed: the previous champion keeps serving." in plain
        and "Nothing promoted" not in plain
    )
