"""Domain logic as plain Python, grouped by stage; Prefect tasks in `flows/` call into it.

- policy.py + policy.yaml: every threshold and weight, typed (loaded once at the edge, passed down).
- decision.py: the one decision record (name, threshold, observed, passed, reason) and its renderers.
- measure/: load generation, the four test suites, system and GPU metrics, bottlenecks, workloads.
- records/: the MLflow store, run records, the model registry (the rollout state) and every name written there.
- optimize/: candidates, in-process trials, evaluation, validation, the decision matrix, the search, ROI, report.
- release/: the phase gate and its checks, hostile inputs, approval, freeze, rollout, rollout risk.
- monitoring/: the four monitoring layers read from Prometheus, alert rules and Alertmanager routing, dynamic
  thresholds, anomaly detection.
- capacity/: history, data quality, forecasting, the capacity model and plan.
- risk/: the risk register and its scores.

Import rule: `tasks` imports `serving` and itself, never `flows` or `cli`. Within it, `policy` and `decision` sit
on top of the stages; `measure` imports no other stage; `records` imports only `measure`; the other stages may
import `measure`, `records` and each other without cycles (tests/test_layering.py enforces it).
"""
