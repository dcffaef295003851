"""Load across a disruption: the event runs beside the schedule, every request is kept, phases and switch counts."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import pytest

from tasks.measure.disruption import (
    Event,
    Sample,
    failure_window,
    per_second,
    phase,
    run_across,
    sent_between,
    served_sha256,
    switch_outcome,
)
from tasks.measure.loadgen import LoadInputError, embeddings_body_factory, run_http_closed
from tests.servers import RunningServer, free_port, serve  # tests/servers.py

BODY = embeddings_body_factory("minilm", ["A short sentence for the test server."])
OLD, NEW = "a" * 64, "b" * 64


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with serve("distribution") as running:
        run_http_closed(running.endpoint, BODY, concurrency=1, duration_s=0.3)  # warm first-call paths
        yield running


def test_the_event_runs_mid_load_without_holding_up_the_schedule(server: RunningServer) -> None:
    ran_in: list[str] = []

    def slow_event() -> str:
        ran_in.append(threading.current_thread().name)
        time.sleep(1.0)  # longer than the rest of the load: the schedule must not wait for it
        return "done"

    run = run_across(
        server.endpoint, BODY, rate=40, duration_s=1.5, event=slow_event, event_at_s=0.5, event_name="slow"
    )
    assert run.event is not None and run.event.result == "done" and run.event.error is None
    assert ran_in and ran_in[0] != threading.main_thread().name
    assert 0.3 <= run.rel(run.event.started) <= 1.0, run.rel(run.event.started)
    assert len(run.samples) == run.load.sent == 60 and all(s.ok for s in run.samples)
    # requests kept leaving on schedule while the event slept
    during = sent_between(run.samples, run.event.started, run.event.finished)
    assert len(during) >= 20, len(during)


def test_an_event_that_raises_is_recorded_and_the_load_completes(server: RunningServer) -> None:
    def broken() -> None:
        raise RuntimeError("node would not die")

    run = run_across(server.endpoint, BODY, rate=20, duration_s=0.5, event=broken, event_at_s=0.1)
    assert run.event is not None and run.event.error == "RuntimeError: node would not die"
    assert run.load.ok == len(run.samples) == 10


def test_a_refused_connection_is_a_failed_sample_not_a_crash() -> None:
    run = run_across(f"http://127.0.0.1:{free_port()}/v1/embeddings", BODY, rate=20, duration_s=0.25)
    assert run.samples and all(not s.ok and s.status.startswith("error:") for s in run.samples)


def test_an_event_outside_the_load_is_refused_before_any_request() -> None:
    with pytest.raises(LoadInputError, match="outside the 1 s load"):
        run_across("http://127.0.0.1:1/", BODY, rate=1, duration_s=1, event=lambda: None, event_at_s=2)


def _s(
    sent: float, ok: bool = True, status: str = "200", sha: str | None = None, took: float = 0.01
) -> Sample:
    return Sample(sent, sent + took, status, ok, sha)


def test_phases_windows_and_seconds_from_samples() -> None:
    samples = [
        _s(0.1),
        _s(0.6),
        _s(1.2, ok=False, status="500"),
        _s(1.5, ok=False, status="timeout", took=2.0),
    ]
    samples.append(_s(2.4))
    p = phase("failover", sent_between(samples, 1.0, 2.0))
    assert (p.requests, p.ok, p.failed, p.failures) == (2, 0, 2, {"500": 1, "timeout": 1})
    assert p.p99_ms == pytest.approx(2000, rel=0.02)
    assert failure_window(samples) == (pytest.approx(1.21), pytest.approx(3.5))
    assert failure_window(samples[:2]) is None
    assert per_second(samples, 0.0) == [
        {"second": 0, "sent": 2, "ok": 2},
        {"second": 1, "sent": 2, "ok": 0},
        {"second": 2, "sent": 1, "ok": 1},
    ]
    assert math.isnan(phase("empty", []).p50_ms)


def test_served_sha256_reads_an_oip_answer_only() -> None:
    assert served_sha256(b'{"parameters": {"sha256": "%s"}}' % OLD.encode()) == OLD
    assert served_sha256(b'{"object": "list"}') is None and served_sha256(b"not json") is None


SWITCH = Event("switch", started=1.0, finished=1.5)


def test_a_clean_switch_counts_each_model_once() -> None:
    samples = [_s(0.2, sha=OLD), _s(1.1, sha=OLD), _s(1.2, sha=NEW), _s(1.8, sha=NEW)]
    out = switch_outcome(samples, SWITCH, OLD, NEW)
    assert (out.sent, out.answered_ok, out.lost, out.by_old, out.by_new) == (4, 4, 0, 2, 2)
    assert out.clean and out.switch_s == pytest.approx(0.5) and out.as_dict()["clean"] is True


def test_a_lost_request_or_an_old_answer_after_the_new_one_spoils_the_switch() -> None:
    lost = [_s(0.2, sha=OLD), _s(1.2, ok=False, status="503"), _s(1.8, sha=NEW)]
    out = switch_outcome(lost, SWITCH, OLD, NEW)
    assert out.lost == 1 and out.lost_by_status == {"503": 1} and not out.clean
    # the new model answered at 1.21 s; a request sent at 1.5 s cannot be the old model's on one replica
    mixed = [_s(0.2, sha=OLD), _s(1.2, sha=NEW), _s(1.5, sha=OLD), _s(1.6, sha="c" * 64)]
    out = switch_outcome(mixed, SWITCH, OLD, NEW)
    assert out.old_after_new == 1 and out.by_other == 1 and not out.clean
