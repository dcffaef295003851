"""The Prometheus set-up that keeps each monitoring layer as long as the policy says (SPEC §4: business 365 days at
1 min, application 90 days at 1 s, system 30 days at 1 s, infrastructure 90 days at 1 min).

Prometheus keeps every series of one server for one retention (`--storage.tsdb.retention.time`), so the layers are
kept by tiers: the first tier scrapes every series at the finest resolution any layer asks, evaluates the alert rules
and notifies Alertmanager, and keeps them for the shortest retention; each longer retention gets a server of its own
that scrapes only the series of the layers kept that long (a `keep` relabelling on the metric name), at the
coarsest resolution those layers accept. Every layer is then kept at least as long and as finely as asked, and the
long tiers hold only what must be kept long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from serving.artifacts import write_artifact
from serving.settings import get_settings
from tasks.monitoring.collect import probes
from tasks.monitoring.rules import RAY_JOB, RefusedFile, ToolVerdict, run_tool
from tasks.policy import Policy

SERIES = re.compile(r"\b(ray_[A-Za-z0-9_]+)\b")
DURATION = re.compile(r"^(\d+)(s|m|h)$")
SECONDS = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Tier:
    """One Prometheus server: the layers it keeps, for how long, how often it scrapes, which series it keeps."""

    name: str
    retention_days: int
    scrape_interval: str
    layers: tuple[str, ...]
    keep: tuple[str, ...] | None  # metric names kept; None: every series (the alerting tier)

    @property
    def alerting(self) -> bool:
        return self.keep is None

    def flags(self, storage: str | Path) -> list[str]:
        """The server's command-line flags besides its config (retention is a flag, not config)."""
        return [f"--storage.tsdb.path={storage}", f"--storage.tsdb.retention.time={self.retention_days}d"]


def _seconds(resolution: str, where: str) -> int:
    match = DURATION.match(resolution)
    if not match:
        raise ValueError(
            f"policy {where} is {resolution!r}, not a duration like 1s, 1m or 1h: fix the policy file"
        )
    return int(match.group(1)) * SECONDS[match.group(2)]


def layer_series(policy: Policy, app: str, model: str) -> dict[str, set[str]]:
    """Per layer, the metric names its required metrics read (what a long tier must keep)."""
    table = probes(app, model)
    out: dict[str, set[str]] = {}
    for layer, spec in policy.monitoring.layers.items():
        names: set[str] = set()
        for metric in spec.metrics:
            if metric not in table:
                raise ValueError(
                    f"policy monitoring.layers.{layer}.metrics names {metric!r}, which inferops cannot read: use "
                    f"one of {', '.join(sorted(table))}"
                )
            names |= set(SERIES.findall(table[metric].query))
        out[layer] = names
    return out


def tiers(policy: Policy, app: str = "inferops", model: str = "minilm") -> list[Tier]:
    """The servers that keep every layer for its retention, shortest retention (the alerting one) first."""
    layers = policy.monitoring.layers
    if not layers:
        raise ValueError("policy monitoring.layers is empty: name the layers and their retention (SPEC §4)")
    for name, spec in layers.items():
        if spec.retention_days <= 0:
            raise ValueError(
                f"policy monitoring.layers.{name}.retention_days must be positive, got {spec.retention_days}"
            )
    series = layer_series(policy, app, model)
    resolution = {n: _seconds(s.resolution, f"monitoring.layers.{n}.resolution") for n, s in layers.items()}
    by_days: dict[int, list[str]] = {}
    for name, spec in layers.items():
        by_days.setdefault(int(spec.retention_days), []).append(name)
    shortest = min(by_days)
    out = [
        Tier(
            "alerting",
            shortest,
            f"{min(resolution.values())}s",
            tuple(sorted(layers)),
            None,
        )
    ]
    for days in sorted(d for d in by_days if d != shortest):
        # every layer kept at least `days` long, scraped as often as the finest of them asks
        kept = sorted(n for n, s in layers.items() if s.retention_days >= days)
        names = sorted(set().union(*(series[n] for n in kept)))
        out.append(Tier(f"{days}d", days, f"{min(resolution[n] for n in kept)}s", tuple(kept), tuple(names)))
    return out


def render_prometheus(
    tier: Tier,
    targets: list[str],
    *,
    rules_glob: str | None = None,
    alertmanagers: list[str] | None = None,
) -> dict[str, Any]:
    """One tier's prometheus.yml (as a dict): `targets` are the Ray nodes' metrics ports (host:port)."""
    bad = [t for t in targets if not re.match(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$", t)]
    if not targets or bad:
        raise ValueError(
            f"targets {bad or targets!r}: pass each Ray node's metrics address as host:port (the port `inferops "
            "serve --metrics-port` prints)"
        )
    scrape: dict[str, Any] = {"job_name": RAY_JOB, "static_configs": [{"targets": list(targets)}]}
    if tier.keep is not None:
        scrape["metric_relabel_configs"] = [
            {
                "source_labels": ["__name__"],
                "regex": "|".join(re.escape(n) for n in tier.keep),
                "action": "keep",
            }
        ]
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": tier.scrape_interval,
            "evaluation_interval": tier.scrape_interval,
            "external_labels": {"inferops_tier": tier.name},
        },
        "scrape_configs": [scrape],
    }
    if tier.alerting:
        if rules_glob:
            config["rule_files"] = [rules_glob]
        if alertmanagers:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    return config


def check_config(path: str | Path) -> ToolVerdict:
    """`promtool check config` on a Prometheus config (rule files it names must exist)."""
    return run_tool("promtool", "prometheus", ["check", "config", "--syntax-only", str(path)])


def write_setup(
    policy: Policy,
    targets: list[str],
    *,
    rules_glob: str | None = None,
    alertmanagers: list[str] | None = None,
    app: str = "inferops",
    model: str = "minilm",
) -> list[tuple[Tier, Path]]:
    """Every tier's config in the data dir (monitoring/prometheus-<tier>.yml), each written only if promtool
    passes it, and nothing written if any is refused."""
    rendered = [
        (tier, render_prometheus(tier, targets, rules_glob=rules_glob, alertmanagers=alertmanagers))
        for tier in tiers(policy, app, model)
    ]
    folder = get_settings().data_dir / "monitoring"
    staged = folder / ".staged-prometheus.yml"
    folder.mkdir(parents=True, exist_ok=True)
    for tier, config in rendered:  # all checked before any is written
        staged.write_text(yaml.safe_dump(config, sort_keys=False, width=1 << 20), encoding="utf-8")
        verdict = check_config(staged)
        staged.unlink()
        if verdict.ok is False:
            raise RefusedFile(f"prometheus-{tier.name}.yml not written: {verdict.sentence()}")
    out = []
    for tier, config in rendered:
        text = yaml.safe_dump(config, sort_keys=False, width=1 << 20)
        path = folder / f"prometheus-{tier.name}.yml"

        def writer(tmp: Path, text: str = text) -> None:
            tmp.write_text(text, encoding="utf-8")

        write_artifact(
            path, writer, {"kind": "prometheus", "tier": tier.name, "retention_days": tier.retention_days}
        )
        out.append((tier, path))
    return out
