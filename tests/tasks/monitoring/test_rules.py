"""The deployment's rules file, checked by the real promtool: it loads, and `promtool test rules` shows every alert
firing on a constructed bad series, staying silent on a healthy one and resolving when the series recovers."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from tasks.monitoring import rules as r
from tasks.monitoring.rules import (
    ServedBaseline,
    bucket_at_or_above,
    check_rules,
    render_rules,
    rules_yaml,
    selectors,
    write_rules,
)
from tasks.monitoring.thresholds import (
    RECORD_EXPECTED,
    RECORD_LOWER,
    RECORD_UPPER,
    ThresholdError,
    band_expr,
    learn_band,
)
from tasks.policy import Policy, default_policy
from tests.prometheus_server import find_binary

APP, MODEL = "inferops", "minilm"
SERVED = ServedBaseline(p99_ms=55.0, rate_rps=18.0, source="load suite at 18 req/s")
IN_PROCESS = ServedBaseline(
    p99_ms=17.0, rate_rps=18.0, source="in-process batch P99 (the old, wrong baseline)"
)
PROMTOOL_MISSING = (
    "promtool not installed (Debian package `prometheus`; `make test-tools` installs it as root)"
)
RAY = {"instance": "ray-head:8080", "job": "ray"}
SERVE = {**RAY, "application": APP, "route": "/", "method": "POST"}
REPLICA = {**RAY, "application": APP, "deployment": "InferenceIngress", "replica": "r1"}
MINUTES = 130  # length of most constructed series, at one sample a minute


def weekly_history(weeks: int = 4) -> pd.Series:
    """Office hours (08-20 UTC) 80 req/s on weekdays and 100 on Thursdays, other weekday hours 10, weekends 5; one
    point a minute from Monday 2024-01-01."""
    index = pd.date_range("2024-01-01", periods=weeks * 7 * 24 * 60, freq="1min", tz="UTC")
    weekday = index.dayofweek < 5
    office = np.where(index.dayofweek == 3, 100.0, 80.0)
    busy = (index.hour >= 8) & (index.hour < 20)
    return pd.Series(np.where(weekday & busy, office, np.where(weekday, 10.0, 5.0)), index=index)


@pytest.fixture(scope="module")
def promtool() -> str:
    found = find_binary("promtool")
    if found is None:
        pytest.skip(PROMTOOL_MISSING)
    return found


@pytest.fixture(scope="module")
def policy() -> Policy:
    return default_policy()


@pytest.fixture(scope="module")
def band() -> Any:
    return learn_band(weekly_history(), source="four constructed weeks")


# ---- series notation helpers ----------------------------------------------------------------------------------


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def cumulative(per_minute: list[float]) -> str:
    """A counter's explicit samples from per-minute increments (starting at 0)."""
    return " ".join(f"{v:g}" for v in np.concatenate([[0.0], np.cumsum(per_minute)]))


def requests(rps: float, minutes: int = MINUTES, app: str = APP, status: str = "200") -> dict[str, str]:
    return series(
        r.SERVE_REQUESTS,
        {**SERVE, "application": app, "status_code": status},
        cumulative([rps * 60] * minutes),
    )


def errors(per_minute: list[float], code: str = "500") -> dict[str, str]:
    return series(r.SERVE_ERRORS, {**SERVE, "error_code": code}, cumulative(per_minute))


def latency(shares: list[dict[float, float]], rps: float = 10.0) -> list[dict[str, str]]:
    """Histogram buckets from, per minute, the share of requests at or under each boundary (50/100/200 ms)."""
    out = []
    for le in (50.0, 100.0, 200.0, float("inf")):
        per_minute = [rps * 60 * (1.0 if le == float("inf") else s.get(le, 1.0)) for s in shares]
        labels = {**SERVE, "status_code": "200", "le": "+Inf" if le == float("inf") else f"{le:g}"}
        out.append(series(r.SERVE_LATENCY_BUCKET, labels, cumulative(per_minute)))
    return out


SLOW = {50.0: 0.0, 100.0: 0.0, 200.0: 1.0}  # every request in (100, 200] ms: P99 estimate 199 ms
HEALTHY = {50.0: 0.0, 100.0: 1.0}  # every request in (50, 100] ms (the served 55-60 ms): P99 estimate 99.5 ms


def minutes(n: int, share: dict[float, float]) -> list[dict[float, float]]:
    return [share] * n


# ---- expected alerts: the rule's own labels and annotations, its templates expanded ---------------------------


def rule(rendered: dict[str, Any], name: str) -> dict[str, Any]:
    for group in rendered["groups"]:
        for item in group["rules"]:
            if item.get("alert") == name:
                return dict(item)
    raise KeyError(name)


QUERY = re.compile(r'\{\{ with printf "[^"]*" "([^"]+)" \$labels\.application \| query \}\}.*?\{\{ end \}\}')
VALUE = re.compile(r'\{\{ \$value \| printf "([^"]+)" \}\}')
LABEL = re.compile(r"\{\{ \$labels\.(\w+) \}\}")
BARE_VALUE = "{{ $value }}"


def go_float(value: float) -> str:
    """A float as Go's template engine prints it: the shortest form that reads back, without a trailing .0."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def expand(text: str, value: float, labels: dict[str, str], queried: dict[str, float]) -> str:
    """What Prometheus' template engine makes of the few template forms the rules use."""
    text = QUERY.sub(lambda m: f"{queried[m.group(1)]:.2f}", text)
    text = VALUE.sub(lambda m: m.group(1) % value, text).replace(BARE_VALUE, go_float(value))
    return LABEL.sub(lambda m: labels.get(m.group(1), "<no value>"), text)


def fired(
    rendered: dict[str, Any],
    name: str,
    value: float,
    series_labels: dict[str, str] | None = None,
    queried: dict[str, float] | None = None,
) -> dict[str, Any]:
    item = rule(rendered, name)
    labels = {**(series_labels or {"application": APP}), **item["labels"]}
    annotations = {k: expand(v, value, labels, queried or {}) for k, v in item["annotations"].items()}
    return {"exp_labels": labels, "exp_annotations": annotations}


@dataclass
class Case:
    """One promtool test group: input series, then (eval time, alert, the alerts expected then)."""

    name: str
    input_series: list[dict[str, str]]
    checks: list[tuple[str, str, list[dict[str, Any]]]]
    samples: list[dict[str, Any]] = field(default_factory=list)

    def group(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "interval": "1m",
            "input_series": self.input_series,
            "alert_rule_test": [
                {"eval_time": t, "alertname": a, "exp_alerts": exp} for t, a, exp in self.checks
            ],
            "promql_expr_test": self.samples,
        }


def run_promtool(
    promtool: str,
    tmp_path: Path,
    rendered: dict[str, Any],
    cases: list[Case],
    evaluation_interval: str = "1m",
) -> str:
    (tmp_path / "rules.yml").write_text(rules_yaml(rendered))
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": evaluation_interval,
        # recorded series first, as Prometheus' own order within one evaluation would be at a short interval
        "group_eval_order": [g["name"] for g in rendered["groups"]],
        "tests": [c.group() for c in cases],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20))
    result = subprocess.run(
        [promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# ---- the scenarios ----------------------------------------------------------------------------------------------


def p99_over_sla(x: dict[str, Any]) -> list[Case]:
    return [
        Case(
            "slow then healthy",
            [requests(10), *latency(minutes(30, SLOW) + minutes(MINUTES - 30, HEALTHY))],
            [
                ("20m", r.ALERT_P99_OVER_SLA, [fired(x, r.ALERT_P99_OVER_SLA, 199.0)]),
                ("50m", r.ALERT_P99_OVER_SLA, []),  # resolved
            ],
        ),
        Case(
            "healthy at the served P99",
            [requests(10), *latency(minutes(MINUTES, HEALTHY))],
            [("30m", r.ALERT_P99_OVER_SLA, [])],
        ),
    ]


def p99_off_baseline(x: dict[str, Any]) -> list[Case]:
    return [
        Case(
            "a slower model at the baseline's rate",
            [requests(10), *latency(minutes(30, SLOW) + minutes(MINUTES - 30, HEALTHY))],
            [
                ("20m", r.ALERT_P99_OFF_BASELINE, [fired(x, r.ALERT_P99_OFF_BASELINE, 199.0)]),
                ("50m", r.ALERT_P99_OFF_BASELINE, []),
            ],
        ),
        Case(
            "healthy at the served P99",
            [requests(10), *latency(minutes(MINUTES, HEALTHY))],
            [("30m", r.ALERT_P99_OFF_BASELINE, [])],
        ),
        Case(
            "slow under twice the baseline's load: scale out, not roll back",
            [requests(40), *latency(minutes(MINUTES, SLOW), rps=40)],
            [
                ("20m", r.ALERT_P99_OFF_BASELINE, []),
                ("20m", r.ALERT_P99_OVER_SLA, [fired(x, r.ALERT_P99_OVER_SLA, 199.0)]),
            ],
        ),
    ]


def error_rate(x: dict[str, Any]) -> list[Case]:
    bad = [12.0] * 30 + [0.0] * (MINUTES - 30)  # 12 of 600 a minute: 2%
    return [
        Case(
            "2% 5xx, then none",
            [requests(10), errors(bad)],
            [
                ("20m", r.ALERT_ERROR_RATE, [fired(x, r.ALERT_ERROR_RATE, 0.02)]),
                ("50m", r.ALERT_ERROR_RATE, []),
            ],
        ),
        Case(
            "0.5% 5xx and 5% 429 (the client's)",
            [requests(10), errors([3.0] * MINUTES), errors([30.0] * MINUTES, code="429")],
            [("30m", r.ALERT_ERROR_RATE, [])],
        ),
        Case(
            "no error ever: the ratio is 0, not missing",
            [requests(10)],
            [("30m", r.ALERT_ERROR_RATE, [])],
            [
                {
                    "expr": f'{r.RECORD_ERROR_RATIO}{{application="{APP}"}}',
                    "eval_time": "30m",
                    "exp_samples": [{"labels": f'{r.RECORD_ERROR_RATIO}{{application="{APP}"}}', "value": 0}],
                }
            ],
        ),
    ]


GPU = {**REPLICA, "gpu": "0", "name": "NVIDIA H200"}


def gpu_temperature(x: dict[str, Any]) -> list[Case]:
    hot = series(r.GPU_TEMPERATURE, GPU, "95x20 70x30")
    warm = series(r.GPU_TEMPERATURE, {**GPU, "gpu": "1"}, "85x50")
    return [
        Case(
            "one GPU at 95 then 70 C, one at 85 C",
            [hot, warm],
            [
                ("10m", r.ALERT_GPU_CRITICAL, [fired(x, r.ALERT_GPU_CRITICAL, 95.0, GPU)]),
                (
                    "10m",
                    r.ALERT_GPU_WARNING,
                    [
                        fired(x, r.ALERT_GPU_WARNING, 95.0, GPU),  # Alertmanager inhibits this one
                        fired(x, r.ALERT_GPU_WARNING, 85.0, {**GPU, "gpu": "1"}),
                    ],
                ),
                ("40m", r.ALERT_GPU_CRITICAL, []),
                ("40m", r.ALERT_GPU_WARNING, [fired(x, r.ALERT_GPU_WARNING, 85.0, {**GPU, "gpu": "1"})]),
            ],
        ),
        Case(
            "a cool GPU",
            [series(r.GPU_TEMPERATURE, GPU, "70x50")],
            [("30m", r.ALERT_GPU_CRITICAL, []), ("30m", r.ALERT_GPU_WARNING, [])],
        ),
    ]


P99_SERIES = f'{r.RECORD_P99}{{application="{APP}"}}'


def p99_trend(x: dict[str, Any]) -> list[Case]:
    # The P99 as recorded: the recording rule itself is exercised by the threshold cases above.
    return [
        Case(
            "P99 rising 0.5 ms a minute from 60 ms, then flat",
            [{"series": P99_SERIES, "values": "60+0.5x60 90x90"}],
            [
                # at 60 min: 90 ms now, slope 30 ms/h: 120 ms an hour ahead
                ("60m", r.ALERT_P99_TREND, [fired(x, r.ALERT_P99_TREND, 120.0)]),
                ("140m", r.ALERT_P99_TREND, []),  # flat for over an hour: resolved
            ],
        ),
        Case(
            "flat P99",
            [{"series": P99_SERIES, "values": "60x120"}],
            [("90m", r.ALERT_P99_TREND, [])],
        ),
        Case(
            "already over the SLA: the threshold alert's, not the trend's",
            [{"series": P99_SERIES, "values": "110+0.5x120"}],
            [("90m", r.ALERT_P99_TREND, [])],
        ),
    ]


RSS = {**RAY, "ip": "10.0.0.2", "Component": f"ray::ServeReplica:{APP}:InferenceIngress"}
MB = 2**20


def replica_memory(x: dict[str, Any]) -> list[Case]:
    leak = f"{500 * MB}+{2 * MB}x120 {740 * MB}x120"  # +2 MB a minute (120 MB/h) for 2 h, then flat
    step = f"{500 * MB}x30 {700 * MB}x150"  # a replica added at 30 min: one step up
    other = {**RSS, "Component": "ray::ServeReplica:other-app:Ingress"}
    return [
        Case(
            "leaking 120 MB/h, then flat",
            [series(r.REPLICA_RSS, RSS, leak), series(r.REPLICA_RSS, other, leak)],
            [
                ("110m", r.ALERT_MEMORY_GROWTH, [fired(x, r.ALERT_MEMORY_GROWTH, 120.0, RSS)]),
                ("150m", r.ALERT_MEMORY_GROWTH, []),
            ],
        ),
        Case(
            "one step up (scale-out), then flat",
            [series(r.REPLICA_RSS, RSS, step)],
            [(t, r.ALERT_MEMORY_GROWTH, []) for t in ("40m", "50m", "70m", "100m")],
        ),
        Case(
            "slow growth under the leak slope",
            [series(r.REPLICA_RSS, RSS, f"{500 * MB}+{MB // 3}x180")],  # 20 MB/h
            [("150m", r.ALERT_MEMORY_GROWTH, [])],
        ),
    ]


def rate_anomaly(x: dict[str, Any], band: Any) -> list[Case]:
    """promtool's time 0 is Thursday 1970-01-01 00:00 UTC: the band is read at 03:00, 07:00, 09:00 and 15:00 of a
    Thursday (the history makes Thursday's office hours 100 req/s, other weekdays' 80: the day is matched too)."""
    at = {h: band.at(pd.Timestamp(f"1970-01-01 {h:02d}:00", tz="UTC")) for h in (3, 7, 9, 15)}
    assert (at[3].expected, at[9].expected, at[15].expected) == (10.0, 100.0, 100.0)
    per_minute = [10.0] * 240 + [100.0] * 360 + [5.0] * 360  # 10 req/s to 04:00, 100 to 10:00, then 5
    counter = series(
        r.SERVE_REQUESTS, {**SERVE, "status_code": "200"}, cumulative([v * 60 for v in per_minute])
    )

    def bounds(hour: int) -> dict[str, float]:
        return {RECORD_LOWER: at[hour].lower, RECORD_UPPER: at[hour].upper}

    samples = [
        {
            "expr": f'{record}{{application="{APP}"}}',
            "eval_time": f"{hour}h",
            "exp_samples": [
                {"labels": f'{record}{{application="{APP}"}}', "value": getattr(at[hour], field)}
            ],
        }
        for hour in (3, 15)
        for record, field in ((RECORD_EXPECTED, "expected"), (RECORD_UPPER, "upper"), (RECORD_LOWER, "lower"))
    ]
    samples.append(
        {
            "expr": f'{r.RECORD_RATE}{{application="{APP}"}}',
            "eval_time": "3h",
            "exp_samples": [{"labels": f'{r.RECORD_RATE}{{application="{APP}"}}', "value": 10}],
        }
    )
    return [
        Case(
            "a Thursday: usual at night, a night-time 100 req/s, usual by day, a day-time 5 req/s",
            [counter],
            [
                ("3h", r.ALERT_RATE_ANOMALY, []),
                ("7h", r.ALERT_RATE_ANOMALY, [fired(x, r.ALERT_RATE_ANOMALY, 100.0, queried=bounds(7))]),
                ("9h", r.ALERT_RATE_ANOMALY, []),
                ("15h", r.ALERT_RATE_ANOMALY, [fired(x, r.ALERT_RATE_ANOMALY, 5.0, queried=bounds(15))]),
            ],
            samples,
        )
    ]


def accuracy(x: dict[str, Any]) -> list[Case]:
    labels = {**REPLICA, "model": MODEL}
    return [
        Case(
            "fidelity 0.97, then 0.995",
            [series(r.ACCURACY_FIDELITY, labels, "0.97x20 0.995x20")],
            [
                ("10m", r.ALERT_ACCURACY, [fired(x, r.ALERT_ACCURACY, 0.97, labels)]),
                ("30m", r.ALERT_ACCURACY, []),
            ],
        ),
        Case(
            "another model's low fidelity is not this model's",
            [series(r.ACCURACY_FIDELITY, {**labels, "model": "other"}, "0.5x20")],
            [("10m", r.ALERT_ACCURACY, [])],
        ),
    ]


def target_down(x: dict[str, Any]) -> list[Case]:
    return [
        Case(
            "the Ray head's metrics port down, then back",
            [
                series("up", RAY, "0x10 1x10"),
                series("up", {**RAY, "instance": "ray-worker:8080"}, "1x20"),
                series("up", {"instance": "localhost:9090", "job": "prometheus"}, "0x20"),
            ],
            [
                ("5m", r.ALERT_TARGET_DOWN, [fired(x, r.ALERT_TARGET_DOWN, 0.0, RAY)]),
                ("15m", r.ALERT_TARGET_DOWN, []),
            ],
        )
    ]


def unavailable(x: dict[str, Any]) -> list[Case]:
    return [
        Case(
            "only another app reports requests",
            [requests(10, 20, app="other-app")],
            [("10m", r.ALERT_UNAVAILABLE, [fired(x, r.ALERT_UNAVAILABLE, 1.0)])],
        ),
        Case(
            "the app reports requests",
            [requests(10, 20)],
            [("10m", r.ALERT_UNAVAILABLE, [])],
        ),
    ]


def success_rate(x: dict[str, Any]) -> list[Case]:
    return [
        Case(
            "1% 5xx for 90 min, then none",
            [requests(10, 250), errors([6.0] * 90 + [0.0] * 160)],
            [
                ("80m", r.ALERT_SUCCESS_RATE, [fired(x, r.ALERT_SUCCESS_RATE, 0.99)]),
                ("240m", r.ALERT_SUCCESS_RATE, []),
            ],
        ),
        Case(
            "0.1% 5xx",
            [requests(10, 120), errors([0.6] * 120)],
            [("100m", r.ALERT_SUCCESS_RATE, [])],
        ),
    ]


def utilisation(x: dict[str, Any]) -> list[Case]:
    other = {**RSS, "Component": "ray::ServeReplica:other-app:Ingress"}
    return [
        Case(
            "a replica at 95% of a core for 30 min, then 40%",
            [series(r.REPLICA_CPU, RSS, "95x30 40x60"), series(r.REPLICA_CPU, other, "99x90")],
            [
                ("25m", r.ALERT_UTILISATION, [fired(x, r.ALERT_UTILISATION, 0.95)]),
                ("60m", r.ALERT_UTILISATION, []),
            ],
        ),
        Case(
            "bursts of 5 min at 100% between quiet ones",
            [series(r.REPLICA_CPU, RSS, " ".join(["100x4 30x4"] * 10))],
            [(t, r.ALERT_UTILISATION, []) for t in ("20m", "40m", "60m")],
        ),
    ]


SCENARIOS: dict[str, Callable[..., list[Case]]] = {
    "utilisation": utilisation,
    "p99_over_sla": p99_over_sla,
    "p99_off_baseline": p99_off_baseline,
    "error_rate": error_rate,
    "gpu_temperature": gpu_temperature,
    "p99_trend": p99_trend,
    "replica_memory": replica_memory,
    "accuracy": accuracy,
    "target_down": target_down,
    "unavailable": unavailable,
    "success_rate": success_rate,
}


@pytest.fixture(scope="module")
def rendered(policy: Policy) -> dict[str, Any]:
    """The rules without the band: the band's 168-slot lookups cost ~40 ms an evaluation, so the scenarios that do
    not need it (evaluated every minute) run without it, and the band's own test evaluates every 20 minutes."""
    return render_rules(APP, MODEL, SERVED, policy)


@pytest.fixture(scope="module")
def rendered_with_band(policy: Policy, band: Any) -> dict[str, Any]:
    return render_rules(APP, MODEL, SERVED, policy, band=band)


def test_rendered_rules_pass_promtool_check(
    promtool: str, rendered_with_band: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(rules_yaml(rendered_with_band))
    verdict = check_rules(path)
    assert verdict.ok, verdict.sentence()
    alerts = [x["alert"] for g in rendered_with_band["groups"] for x in g["rules"] if "alert" in x]
    assert sorted(alerts) == sorted(r.FOR)  # every alert the module names is in the file, once
    assert f"SUCCESS: {len(alerts) + 7} rules found" in verdict.output  # + 4 recording rules + 3 band rules


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_alert_fires_on_bad_series_and_not_on_healthy(
    promtool: str, rendered: dict[str, Any], scenario: str, tmp_path: Path
) -> None:
    run_promtool(promtool, tmp_path, rendered, SCENARIOS[scenario](rendered))


def test_rate_band_is_evaluated_at_several_hours_of_a_thursday(
    promtool: str, rendered_with_band: dict[str, Any], band: Any, tmp_path: Path
) -> None:
    run_promtool(promtool, tmp_path, rendered_with_band, rate_anomaly(rendered_with_band, band), "20m")


def test_the_old_in_process_baseline_would_roll_back_a_healthy_service(
    promtool: str, policy: Policy, tmp_path: Path
) -> None:
    """The bug the issue names: judged against the 17 ms in-process P99, the healthy served service pages."""
    old = render_rules(APP, MODEL, IN_PROCESS, policy)
    healthy = Case(
        "healthy at the served P99",
        [requests(10), *latency(minutes(MINUTES, HEALTHY))],
        [("30m", r.ALERT_P99_OFF_BASELINE, [fired(old, r.ALERT_P99_OFF_BASELINE, 99.5)])],
    )
    run_promtool(promtool, tmp_path, old, [healthy])


def test_latency_thresholds_are_judged_at_a_histogram_boundary() -> None:
    assert bucket_at_or_above(100.0) == 100.0
    assert bucket_at_or_above(82.5) == 100.0  # 55 ms served baseline + 50%
    assert bucket_at_or_above(25.5) == 50.0  # the 17 ms in-process figure + 50%
    with pytest.raises(ValueError, match="largest boundary"):
        bucket_at_or_above(700_000.0)


def test_constants_match_ray_and_the_measure_stage() -> None:
    from ray.serve._private.constants import DEFAULT_LATENCY_BUCKET_MS

    from serving.metrics import GPU_GAUGES
    from tasks.measure.system_metrics import RAY_REPLICA_MARKER, RAY_RSS_METRIC

    assert tuple(DEFAULT_LATENCY_BUCKET_MS) == r.SERVE_LATENCY_BUCKETS_MS
    assert r.REPLICA_RSS == RAY_RSS_METRIC and RAY_REPLICA_MARKER in r.REPLICA_COMPONENT_PREFIX
    assert r.GPU_TEMPERATURE == "ray_" + next(m for m, _, a in GPU_GAUGES if a == "temperature_c")
    assert selectors(APP, MODEL)["accuracy_fidelity"] == (
        'ray_inferops_accuracy_fidelity{application="inferops",model="minilm"}'
    )


def test_every_rule_is_labelled_and_annotated_from_the_policy(
    rendered_with_band: dict[str, Any], policy: Policy
) -> None:
    rendered = rendered_with_band
    types = policy.monitoring.alert_types
    for group in rendered["groups"]:
        for item in group["rules"]:
            if "alert" not in item:
                continue
            labels, notes = item["labels"], item["annotations"]
            assert {"severity", "type", "layer", "application", "model"} <= set(labels), item["alert"]
            assert labels["severity"] in types[labels["type"]].levels, item["alert"]
            assert labels["layer"] in policy.monitoring.layers, item["alert"]
            assert notes["channels"] == ", ".join(types[labels["type"]].channels)
            assert notes["handle_within"] == r.duration(types[labels["type"]].handle_within_min)
            if item["alert"] not in (
                r.ALERT_UNAVAILABLE,
                r.ALERT_TARGET_DOWN,
            ):  # their value is 1 / 0 by construction
                assert "{{ $value" in notes["description"], item["alert"]
    assert rule(rendered, r.ALERT_P99_OFF_BASELINE)["labels"]["action"] == "rollback"
    assert rule(rendered, r.ALERT_ERROR_RATE)["labels"]["action"] == "freeze"


def test_without_history_the_anomaly_alert_is_left_out(policy: Policy) -> None:
    bare = render_rules(APP, MODEL, SERVED, policy)
    names = [x.get("alert") or x.get("record") for g in bare["groups"] for x in g["rules"]]
    assert r.ALERT_RATE_ANOMALY not in names and RECORD_UPPER not in names


# ---- the band ---------------------------------------------------------------------------------------------------


def test_band_granularity_follows_how_much_history_there_is() -> None:
    assert learn_band(weekly_history(4)).granularity == "hour_of_week"
    two_weeks = learn_band(weekly_history(2))  # two Saturdays: weekday/weekend x hour
    assert two_weeks.granularity == "weekpart_hour"
    assert two_weeks.at(pd.Timestamp("2024-03-06 15:00", tz="UTC")).expected == 80.0  # a Wednesday
    assert two_weeks.at(pd.Timestamp("2024-03-09 15:00", tz="UTC")).expected == 5.0  # a Saturday
    four_days = learn_band(weekly_history(4)["2024-01-01":"2024-01-04"])
    assert four_days.granularity == "hour_of_day" and len(four_days.slots) == 24
    with pytest.raises(ThresholdError, match="at least 3 distinct day"):
        learn_band(weekly_history(4)["2024-01-01":"2024-01-02"])


def test_band_is_robust_to_outliers_and_never_negative() -> None:
    history = weekly_history(4)
    spiky = history.copy()
    spiky["2024-01-04 15:00":"2024-01-04 15:59"] = 10_000.0  # one Thursday's burst
    thursday = pd.Timestamp("2024-02-01 15:00", tz="UTC")
    assert learn_band(spiky).at(thursday) == learn_band(history).at(thursday)
    assert all(slot.lower >= 0 for slot in learn_band(history, sigmas=50).slots)


def test_band_expression_names_every_slot_once(band: Any) -> None:
    expr = band_expr(band, "expected")
    assert expr.count(" or ") == 167
    assert "(vector(100) and on() (hour() == 15 and day_of_week() == 4))" in expr


def test_bad_history_and_settings_are_refused_by_name() -> None:
    with pytest.raises(ThresholdError, match="pandas Series"):
        learn_band([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(ThresholdError, match="negative request rate"):
        learn_band(weekly_history(4) - 50)
    with pytest.raises(ThresholdError, match="sigmas must be positive"):
        learn_band(weekly_history(4), sigmas=0)


# ---- bad input and writing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: ServedBaseline(0.0, 18.0, "x"), "p99_ms"),
        (lambda: ServedBaseline(55.0, -1.0, "x"), "rate_rps"),
        (lambda: ServedBaseline(55.0, 18.0, ""), "source"),
    ],
)
def test_bad_baseline_is_refused_by_name(make: Callable[[], Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        make()


def test_bad_names_and_policy_are_refused_by_name(policy: Policy) -> None:
    with pytest.raises(ValueError, match="application 'minilm\"' is not a Serve app name"):
        render_rules('minilm"', MODEL, SERVED, policy)
    with pytest.raises(ValueError, match="model '' is empty"):
        render_rules(APP, "", SERVED, policy)
    types = dict(policy.monitoring.alert_types)
    types["trend"] = types["trend"].model_copy(update={"levels": ["info"]})
    odd = policy.model_copy(
        update={"monitoring": policy.monitoring.model_copy(update={"alert_types": types})}
    )
    with pytest.raises(ValueError, match=r"alert_types\.trend\.levels has unknown severity 'info'"):
        render_rules(APP, MODEL, SERVED, odd)
    hot = policy.model_copy(
        update={"monitoring": policy.monitoring.model_copy(update={"gpu_temperature_warning_c": 95.0})}
    )
    with pytest.raises(ValueError, match="gpu_temperature_warning_c 95.0"):
        render_rules(APP, MODEL, SERVED, hot)
    zero = policy.model_copy(
        update={"rollout_risk": policy.rollout_risk.model_copy(update={"error_rate_alert": 0})}
    )
    with pytest.raises(ValueError, match="error_rate_alert must be positive"):
        render_rules(APP, MODEL, SERVED, zero)


def test_write_rules_publishes_a_checked_file_and_refuses_a_broken_one(
    promtool: str, rendered: dict[str, Any]
) -> None:
    path = write_rules(APP, MODEL, rendered)
    assert path.name == "inferops-minilm.rules.yml"
    assert yaml.safe_load(path.read_text()) == rendered
    manifest = yaml.safe_load(path.with_name(path.name + ".manifest.json").read_text())
    assert manifest["checked"].startswith("promtool: passed")
    broken = {"groups": [{"name": "x", "rules": [{"alert": "Broken", "expr": "sum(("}]}]}
    with pytest.raises(r.RefusedFile, match="promtool: refused"):
        write_rules(APP, "broken", broken)
    assert not path.with_name("inferops-broken.rules.yml").exists()


def test_utilisation_is_the_gpus_on_gpu_replicas_and_the_reserved_cpus_elsewhere(policy: Policy) -> None:
    on_gpu = rule(render_rules(APP, MODEL, SERVED, policy, gpu=True), r.ALERT_UTILISATION)["expr"]
    assert r.GPU_UTILISATION in on_gpu and r.REPLICA_CPU not in on_gpu  # a spinning host thread is not load
    on_cpu = rule(render_rules(APP, MODEL, SERVED, policy, replica_cpus=4), r.ALERT_UTILISATION)["expr"]
    assert r.REPLICA_CPU in on_cpu and " / 400 > " in on_cpu and r.GPU_UTILISATION not in on_cpu
    with pytest.raises(ValueError, match="replica_cpus 0"):
        render_rules(APP, MODEL, SERVED, policy, replica_cpus=0)
