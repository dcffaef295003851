"""The plan order follows where a request's time goes: the serving level first when the serving path or the batch
wait dominates, the model level first when model compute does."""

from __future__ import annotations

import pytest

from tasks.measure.bottlenecks import breakdown
from tasks.optimize.order import check_forced, plan_order

ENDPOINT = "on the endpoint: r1-t1-b8-w5ms at its knee"


def test_proxy_dominant_puts_the_serving_level_first() -> None:
    # the make run: proxy / HTTP 21.5 ms of 21.9 ms per request
    order = plan_order(breakdown(21.9, {"tokenize": 0.1, "compute": 0.3, "total": 0.4}), ENDPOINT)
    assert order.first == "serving level" and order.serving_first
    assert order.reason.startswith("serving level first: proxy / HTTP")
    assert "98%" in order.reason and order.source == ENDPOINT


def test_batch_wait_dominant_puts_the_serving_level_first() -> None:
    order = plan_order(breakdown(410.0, {"batch_wait": 400.0, "compute": 2.0, "total": 405.0}), ENDPOINT)
    assert order.first == "serving level" and "batch wait" in order.reason


def test_compute_dominant_puts_the_model_level_first() -> None:
    timed = breakdown(12.0, {"tokenize": 1.0, "compute": 9.0, "queue": 0.5, "total": 10.5})
    assert timed.focus_area == "model computation"
    order = plan_order(timed, ENDPOINT)
    assert order.first == "model level" and not order.serving_first
    assert order.reason.startswith("model level first: model compute dominates")


def test_no_phase_timings_keep_the_model_level_first_and_say_why() -> None:
    order = plan_order(breakdown(5.0, {}), ENDPOINT)
    assert order.first == "model level" and "no phase timings" in order.reason


def test_an_asked_order_wins_and_still_says_what_was_measured() -> None:
    proxy = breakdown(21.9, {"compute": 0.3, "total": 0.3})
    order = plan_order(proxy, ENDPOINT, "model")
    assert order.first == "model level"
    assert "as asked (plan_order=model); measured: proxy / HTTP" in order.reason


def test_an_unknown_order_or_one_the_cycle_cannot_follow_is_refused_with_the_fix() -> None:
    with pytest.raises(
        ValueError, match=r"plan_order='fastest' is not an order: give auto .*serving .*model"
    ):
        plan_order(breakdown(5.0, {}), ENDPOINT, "fastest")
    with pytest.raises(ValueError, match=r"plan_order='serving' needs the serving level: give a url"):
        check_forced("serving", serving_runs=False)
    check_forced("model", serving_runs=False)  # the model level runs anywhere
