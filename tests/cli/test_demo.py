"""The demo's summary compares the champion with what served before on the cycle's own trial apps."""

from __future__ import annotations

from typing import Any

from cli.demo import knee_comparison


def _cycle(before: dict[str, Any] | None, champion: str | None, served_knee: float | None) -> dict[str, Any]:
    return {
        "champion": champion,
        "served_baseline": before,
        "final": {"serving_level": {"served_knee_rps": served_knee}},
    }


BEFORE = {"trial": 0, "variant": "torch-fp32", "config": "r1-t1-b8-w5ms", "status": "ok", "knee req/s": 40.0}


def test_the_champions_knee_is_set_against_the_served_baselines_measured_alike() -> None:
    said = knee_comparison(_cycle(BEFORE, "onnx-int8-dynamic-perchannel", 300.0))
    assert said is not None
    assert said.startswith(
        "300.0 req/s for the champion vs 40.0 req/s for what served before (torch-fp32 r1-t1-b8"
    )
    assert "7.5x, each on a trial app beside production by the same knee search" in said


def test_with_nothing_promoted_only_what_serves_is_given() -> None:
    # the level's knee belongs to a champion that was not promoted: it is not set against anything
    assert knee_comparison(_cycle(BEFORE, None, 300.0)) == (
        "40.0 req/s for what serves (torch-fp32 r1-t1-b8-w5ms); nothing promoted"
    )


def test_a_failed_or_missing_served_baseline_gives_no_comparison() -> None:
    assert knee_comparison(_cycle({**BEFORE, "status": "failed", "knee req/s": 0.0}, "x", 300.0)) is None
    assert knee_comparison(_cycle(None, "x", 300.0)) is None
