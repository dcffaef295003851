"""The cycle's cost and ROI figures (seed 7.3.4 formulas)."""

from __future__ import annotations

import pytest

from tasks.optimize.improvement import roi_figures
from tasks.policy import load_policy

OPT = load_policy().optimization


def test_roi_figures() -> None:
    roi = roi_figures(100, 400, OPT, target_qps=20)
    assert roi["performance_improvement"] == pytest.approx(3.0)
    assert roi["cost_saving_rate"] == pytest.approx(0.75)
    assert roi["cost_per_million_after"] < roi["cost_per_million_before"]
