"""Releasing a model (seed 7.1-7.2): the phase gate's checks and arithmetic, hostile inputs, the approval point,
change freezes, rolling the live endpoint to a version, rollout risk control after promotion, and the alert rules
that watch a new champion.

Import rule: `serving`, `tasks.policy`, `tasks.decision`, `tasks.measure`, `tasks.records`.
"""
