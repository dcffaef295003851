"""The optimization cycle's logic (seed 7.3): the baseline, candidates, in-process trials, variant evaluation,
validation against the baseline, the decision matrix, the budgeted search, the checklist, ROI and the report.

Import rule: `serving`, `tasks.policy`, `tasks.decision`, `tasks.measure`, `tasks.records`, `tasks.risk`.
"""
