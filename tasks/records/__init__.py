"""What inferops keeps: the MLflow store, runs written from plain `RunRecord`s, suite runs and named baselines, the
model registry with its aliases (`challenger`, `champion`, `previous-champion`: the rollout state), and every
experiment, tag and artifact key name.

Import rule: `serving`, `tasks.policy`, `tasks.decision`, `tasks.measure`. The stages build their own records
(pure functions) and write them here, so this package never imports them.
"""
