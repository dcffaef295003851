"""The Prometheus alert rules that watch a new champion after promotion (latency vs SLA and baseline, GPU
temperature, accuracy), written beside the data for Prometheus to load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from serving.artifacts import write_artifact
from serving.settings import get_settings
from tasks.policy import Policy


def monitoring_rules(
    model: str, champion_sha256: str, baseline_p99_ms: float, policy: Policy
) -> dict[str, Any]:
    """Prometheus rules that watch the new champion: latency vs SLA and baseline, GPU temperature, accuracy."""
    risk = policy.rollout_risk
    sla = policy.rollout_gate.sla_p99_ms
    latency = f'histogram_quantile(0.99, sum by (le) (rate(ray_serve_http_request_latency_ms_bucket{{application="{model}"}}[5m])))'
    return {
        "groups": [
            {
                "name": f"inferops-{model}",
                "rules": [
                    {
                        "alert": "InferenceP99OverSLA",
                        "expr": f"{latency} > {sla}",
                        "for": "5m",
                        "labels": {"severity": "warning", "type": "threshold", "model": model},
                    },
                    {
                        "alert": "InferenceP99OffBaseline",
                        "expr": f"{latency} > {baseline_p99_ms * (1 + risk.perf_deviation_rollback):.3f}",
                        "for": "5m",
                        "labels": {
                            "severity": "critical",
                            "type": "threshold",
                            "model": model,
                            "action": "rollback",
                        },
                    },
                    {
                        "alert": "GpuTemperatureHigh",
                        "expr": f"DCGM_FI_DEV_GPU_TEMP > {policy.monitoring.gpu_temperature_critical_c}",
                        "for": "2m",
                        "labels": {"severity": "critical", "type": "threshold"},
                    },
                    {
                        "alert": "ModelAccuracyRetentionLow",
                        "expr": f'inferops_accuracy_retention{{model="{model}"}} < {policy.optimization.accuracy_retention_threshold}',
                        "labels": {
                            "severity": "critical",
                            "type": "anomaly",
                            "model": model,
                            "champion_sha256": champion_sha256,
                        },
                    },
                ],
            }
        ]
    }


def write_monitoring(model: str, rules: dict[str, Any]) -> Path:
    """Write the rules beside the data (atomically) for Prometheus to load; returns the file."""
    path = get_settings().data_dir / "monitoring" / f"{model}.rules.yml"
    write_artifact(path, lambda p: p.write_text(yaml.safe_dump(rules, sort_keys=False)), {"model": model})
    return path
