"""Risk assessment (seed 7.6): the risk register, its probability x impact matrix and composite score.

Import rule: `tasks.policy` (and below it `serving`); no other stage.
"""
