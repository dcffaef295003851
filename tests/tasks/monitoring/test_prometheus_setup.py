"""Retention per layer: the Prometheus tiers keep every layer at least as long and as finely as the policy asks,
the long tiers only the series of their layers; each config passes promtool; bad input changes nothing."""

from __future__ import annotations

import pytest

from serving.settings import get_settings
from tasks.monitoring.prometheus_setup import layer_series, render_prometheus, tiers, write_setup
from tasks.policy import Policy, default_policy
from tests.prometheus_server import find_binary

SECONDS = {"s": 1, "m": 60, "h": 3600}


def seconds(text: str) -> int:
    return int(text[:-1]) * SECONDS[text[-1]]


def test_every_layer_is_kept_as_long_and_as_finely_as_the_policy_asks() -> None:
    policy = default_policy()
    found = tiers(policy)
    assert [t.name for t in found] == [
        "alerting",
        "90d",
        "365d",
    ]  # 30, 90 and 365 days in the packaged policy
    assert found[0].alerting and found[0].retention_days == 30 and found[0].scrape_interval == "1s"
    series = layer_series(policy, "inferops", "minilm")
    for name, layer in policy.monitoring.layers.items():
        holding = [t for t in found if name in t.layers and (t.keep is None or series[name] <= set(t.keep))]
        assert max(t.retention_days for t in holding) >= layer.retention_days, name
        longest = max(holding, key=lambda t: t.retention_days)
        assert seconds(longest.scrape_interval) <= seconds(layer.resolution), name
    business = found[-1]
    assert business.layers == ("business",) and business.scrape_interval == "60s"
    assert "ray_inferops_accuracy_fidelity" in business.keep
    assert "ray_component_rss_bytes" not in business.keep  # system series are not kept for a year


def test_long_tiers_keep_only_their_series_and_only_the_first_alerts() -> None:
    found = tiers(default_policy())
    first = render_prometheus(
        found[0], ["10.0.0.5:8080"], rules_glob="/rules/*.rules.yml", alertmanagers=["am:9093"]
    )
    assert (
        first["rule_files"] == ["/rules/*.rules.yml"]
        and "metric_relabel_configs" not in first["scrape_configs"][0]
    )
    long = render_prometheus(
        found[-1], ["10.0.0.5:8080"], rules_glob="/rules/*.rules.yml", alertmanagers=["am:9093"]
    )
    assert "rule_files" not in long and "alerting" not in long  # one tier pages, not three
    keep = long["scrape_configs"][0]["metric_relabel_configs"][0]
    assert keep["action"] == "keep" and "ray_serve_num_http_requests_total" in keep["regex"]
    assert found[-1].flags("/data") == ["--storage.tsdb.path=/data", "--storage.tsdb.retention.time=365d"]


def test_written_configs_pass_promtool(models_cache: object) -> None:
    if find_binary("promtool") is None:
        pytest.skip("promtool not installed (Debian package `prometheus`)")
    written = write_setup(default_policy(), ["127.0.0.1:8080"], alertmanagers=["127.0.0.1:9093"])
    assert [p.name for _, p in written] == [
        "prometheus-alerting.yml",
        "prometheus-90d.yml",
        "prometheus-365d.yml",
    ]
    assert all(p.exists() for _, p in written)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"layers": {"system": {"metrics": ["replica_temperature"]}}}, "'replica_temperature'"),
        ({"layers": {"business": {"resolution": "a minute"}}}, "monitoring.layers.business.resolution"),
    ],
)
def test_bad_policy_is_refused_by_name_and_nothing_is_written(
    change: dict, named: str, models_cache: object
) -> None:
    base = default_policy().model_dump()
    for layer, fields in change["layers"].items():
        base["monitoring"]["layers"][layer].update(fields)
    policy = Policy.model_validate(base)
    folder = get_settings().data_dir / "monitoring"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("prometheus-*.yml")}
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        write_setup(policy, ["127.0.0.1:8080"])
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("prometheus-*.yml")}
    assert after == before


def test_bad_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="host:port"):
        render_prometheus(tiers(default_policy())[0], ["http://10.0.0.5:8080/metrics"])
    with pytest.raises(ValueError, match="host:port"):
        render_prometheus(tiers(default_policy())[0], [])
