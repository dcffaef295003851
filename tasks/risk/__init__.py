"""Risk assessment (seed 7.6): the risk register, its probability x impact matrix and composite score.

Import rule: `tasks.policy`, `tasks.records` (and below them `serving`); no other stage (the flow reads Prometheus).
"""
