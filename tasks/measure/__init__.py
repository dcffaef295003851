"""Measuring an endpoint (seed 7.3.6): open-loop load without coordinated omission, the four suites (benchmark,
load, stress knee, stability), system and GPU metrics, where a request's time goes, and request workloads.

Import rule: `serving`, `tasks.policy`, `tasks.decision`; no other stage.
"""
