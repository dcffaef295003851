"""The alert-noise model: Prometheus' `for` and resolve, Alertmanager's group_wait/group_interval/repeat_interval and
inhibition counted exactly on hand-made alerts, each noise-reduction strategy on constructed streams with known
faults, and on the real NAB and ServeGen streams the four strategies combined."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.monitoring import anomaly as an
from tasks.monitoring import noise as nz
from tasks.policy import default_policy
from tests.shared_data import shared_file

POLICY = default_policy()
STEP = 60  # one-minute evaluations in the hand-made cases
N = 60


def steps_on(*ranges: tuple[int, int], n: int = N) -> np.ndarray:
    """A boolean series true on each [first, last) range."""
    out = np.zeros(n, dtype=bool)
    for lo, hi in ranges:
        out[lo:hi] = True
    return out


def alert(
    name: str, firing: np.ndarray, app: str = "a", layer: str = "application", **extra: str
) -> nz.Alert:
    labels = {"alertname": name, "application": app, "layer": layer, "severity": "critical", **extra}
    return nz.Alert(labels, firing)


def routing(group_by: tuple[str, ...] | None, wait: int, interval: int, repeat: int) -> nz.Routing:
    return nz.Routing(group_by, {"critical": nz.Timings(wait, interval, repeat)})


AGGREGATED = routing(("alertname", "application"), 120, 300, 900)
ALONE = routing(None, 0, STEP, 900)


def times(sent: list[nz.Notification]) -> list[int]:
    return [x.time_s for x in sent]


# ------------------------------------------------------------------------------------------- evaluation model


def test_for_fires_after_the_condition_held_for_steps_and_resolves_when_it_stops() -> None:
    condition = np.array([0, 1, 1, 1, 1, 0, 1, 1, 0], dtype=bool)
    assert nz.evaluate(condition, 0).tolist() == condition.tolist()
    assert nz.evaluate(condition, 2).astype(int).tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert not nz.evaluate(condition, 4).any()  # never held five evaluations in a row


def test_group_wait_then_repeat_interval_then_resolve() -> None:
    sent = nz.notifications([alert("A", steps_on((10, 40)))], STEP, AGGREGATED)
    # created at 600 s, first flush at 600 + 120; flushes every 300 s; a repeat once 900 s have passed
    assert times(sent) == [720, 1620]
    assert [x.repeat for x in sent] == [False, True]


def test_group_interval_tells_a_new_alert_of_the_group_once() -> None:
    a = alert("A", steps_on((10, 30)), instance="r0")
    b = alert("A", steps_on((13, 30)), instance="r1")
    assert times(nz.notifications([a, b], STEP, AGGREGATED)) == [720, 1020]  # {r0}, then {r0, r1}
    # without grouping each alert pages alone, and repeats alone 900 s later
    assert times(nz.notifications([a, b], STEP, ALONE)) == [600, 780, 1500, 1680]


def test_a_flap_inside_group_interval_is_not_a_new_page() -> None:
    flap = [alert("A", steps_on((10, 15), (16, 21)))]
    assert times(nz.notifications(flap, STEP, AGGREGATED)) == [720]
    assert times(nz.notifications(flap, STEP, ALONE)) == [600, 960]  # the gap deleted the group: a new one


def test_inhibition_mutes_the_target_only_while_the_source_fires() -> None:
    rules = nz.policy_inhibit_rules(POLICY)  # alertmanager.py's rules, parsed from the config it renders
    down = alert("RayMetricsTargetDown", steps_on((10, 20)), layer="infrastructure")
    slow = alert("ServeP99OverSLA", steps_on((12, 30)))
    other_app = alert("ServeP99OverSLA", steps_on((12, 30)), app="b")
    sent = nz.notifications([down, slow, other_app], STEP, ALONE, rules)
    by_app = {(x.group, x.time_s) for x in sent}
    assert [t for g, t in by_app if ("alertname", "ServeP99OverSLA") in g and ("application", "a") in g] == [
        1200
    ]
    assert sorted(t for g, t in by_app if ("application", "b") in g) == [720, 1620]  # another app: not muted
    alone = nz.notifications([slow], STEP, ALONE, rules)
    assert times(alone) == [720, 1620]  # no source firing: nothing muted
    # an alert matching both sides never inhibits itself
    assert not nz.inhibited([down], rules)[0].any()


def test_matchers_follow_alertmanager() -> None:
    m = nz.Matcher.parse('alertname=~"ServiceUnavailable|RayMetricsTargetDown"')
    assert m.matches({"alertname": "RayMetricsTargetDown"}) and not m.matches(
        {"alertname": "RayMetricsTarget"}
    )
    assert nz.Matcher.parse('layer!="application"').matches({})  # a missing label is ""
    with pytest.raises(nz.NoiseError, match="label op"):
        nz.Matcher.parse("layer application")
    with pytest.raises(nz.NoiseError, match="5m"):
        nz.seconds("5 minutes")


def test_detector_keeps_the_policy_spans_of_time_on_other_steps() -> None:
    config = an.DetectorConfig(**POLICY.monitoring.anomaly.model_dump())
    ten = nz.detector_for(config, 600)
    assert (ten.window, ten.warmup, ten.cooldown) == (
        config.window // 2,
        config.warmup // 2,
        config.cooldown // 2,
    )
    assert nz.detector_for(config, 300) == config


def test_learned_gate_passes_a_firing_run_from_its_first_flag() -> None:
    firing = np.array([1, 1, 1, 0, 1, 1], dtype=bool)
    flagged = np.array([0, 1, 0, 0, 0, 0], dtype=bool)
    assert nz.learned_gate(firing, flagged).astype(int).tolist() == [0, 1, 1, 0, 0, 0]


# ------------------------------------------------------------------------------------ strategies, constructed


def service() -> nz.Stream:
    """Two weeks of a growing daily request rate at 10-minute points, with the injected faults."""
    n = 2016
    days = np.arange(n) / 144
    noise = np.random.default_rng(3).normal(size=n)
    rate = 1000 * (1 + 0.3 * np.sin(2 * np.pi * (days - 0.25))) * (1 + 0.03 * days) * (1 + 0.05 * noise)
    return nz.service_stream("svc", rate, 600, POLICY)


def flapping() -> nz.Stream:
    """A 5-minute metric with lone spikes over its threshold, and one labelled window around a flapping burst."""
    n = 2000
    values = np.random.default_rng(5).normal(size=n)
    values[600::97] += 8  # lone spikes: noise for a static threshold
    values[1500:1520:2] += 20  # the fault: a burst that flaps every other point ...
    values[1520:1526] += 20  # ... then holds for half an hour (a flap alone never outlasts a `for`)
    timestamps = pd.date_range("2024-01-01", periods=n, freq="5min").to_numpy()
    return nz.nab_stream(an.LabelledSeries("flap/metric.csv", timestamps, values, [(1490, 1540)]))


@pytest.fixture(scope="module")
def measured() -> dict[str, dict[str, nz.Summary]]:
    out = {}
    for name, stream in (("service", service()), ("flapping", flapping())):
        summaries, _ = nz.measure([stream], POLICY)
        out[name] = {s.strategy: s for s in summaries}
    return out


@pytest.mark.parametrize(
    "strategy, stream",
    [
        ("dynamic thresholds", "service"),
        ("suppression", "service"),
        ("suppression: inhibition only", "service"),
        ("learned filter", "service"),
        ("all four", "service"),
        ("aggregation", "flapping"),
        ("suppression: `for` only", "flapping"),
        ("learned filter", "flapping"),
    ],
)
def test_each_strategy_cuts_notifications_and_still_catches_the_faults(
    measured: dict[str, dict[str, nz.Summary]], strategy: str, stream: str
) -> None:
    base, cut = measured[stream]["baseline"], measured[stream][strategy]
    assert cut.notifications < base.notifications, (strategy, cut.notifications, base.notifications)
    assert base.missed == () and cut.missed == (), cut.missed


def test_the_service_stream_injects_every_fault_kind_twice() -> None:
    stream = service()
    assert sorted(f.kind for f in stream.faults) == sorted(2 * list(nz.INJECTED))
    assert all(f.start >= stream.calibration for f in stream.faults)
    killed = next(f for f in stream.faults if f.kind == nz.KILL)
    assert (stream.series["up"][killed.start : killed.end + 1] == 0).all()
    assert (stream.series["request_rate"][killed.start : killed.end + 1] == 0).all()


# ----------------------------------------------------------------------------------------------- real data


def test_real_streams_all_four_cut_notifications_and_miss_no_injected_fault() -> None:
    nab = an.load_nab(shared_file("nab", "combined_windows.json").parent)
    streams = [nz.nab_stream(s) for s in nab]
    streams += [
        nz.servegen_stream(shared_file("traces", f"servegen_{m}_agg_rate_10min.csv"), POLICY)
        for m in ("m-mid", "m-small")
    ]
    summaries, _ = nz.measure(streams, POLICY, [nz.BASELINE, nz.STRATEGIES[-1]])
    base, combined = summaries
    assert combined.reduction > 0.5, combined
    assert combined.injected_caught == combined.injected_total == 12, combined.missed
