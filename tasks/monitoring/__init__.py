"""Watching production (seed 7.4, SPEC §4): what is collected, the alert rules and thresholds, and anomaly detection.

Import rule: `serving`, `tasks.policy` and `tasks.decision`; no other stage.
"""
